"""islurm's version, read once from the installed distribution's metadata.

islurmd reads it on its start path, so an installed wheel's METADATA (beside the `islurm`
folder in site-packages) is read directly: importlib.metadata's own imports (email, zipfile,
csv) cost ~10 ms of the daemon's 0.35 s start budget. Where that file is not there or not
alone (an editable install, a source tree), importlib.metadata is asked.
"""

from __future__ import annotations

import glob
import os

UNKNOWN = "0+unknown"  # running from a source tree without an install


def from_wheel(site: str) -> str | None:
    """The Version header of site/islurm-*.dist-info/METADATA; None unless exactly one such
    file is there and it names a version."""
    found = glob.glob(os.path.join(glob.escape(site), "islurm-*.dist-info", "METADATA"))
    if len(found) != 1:
        return None
    try:
        with open(found[0], encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the headers end at the first blank line
                if line.startswith("Version:"):
                    return line.removeprefix("Version:").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _read() -> str:
    # .../site-packages/islurm/daemon/version.py -> .../site-packages
    site = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    found = from_wheel(site)
    if found is not None:
        return found
    from importlib import metadata

    try:
        return metadata.version("islurm")
    except metadata.PackageNotFoundError:
        return UNKNOWN


VERSION = _read()
