"""The wheel of the running islurm, for installing the same version on a login node.

pipx and uv keep no copy of the wheel they installed, and login nodes often have no internet,
so setup packs one again from the installed files (importlib.metadata's RECORD): the package
files and the metadata, byte for byte, in a zip with fixed timestamps so the same install
always gives the same wheel (and the same sha256: re-running setup installs nothing).
An editable install has no files to pack: then pass `--wheel` (`pip wheel --no-deps .`)."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

DIST = "islurm"
_EPOCH = (1980, 1, 1, 0, 0, 0)
# Files an installer writes into .dist-info that are not part of the wheel.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


class WheelError(Exception):
    pass


@dataclass(frozen=True)
class Wheel:
    path: Path
    version: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def running_version() -> str:
    return metadata.version(DIST)


def _is_editable(dist: metadata.Distribution) -> bool:
    raw = dist.read_text("direct_url.json")
    if not raw:
        return False
    return bool(json.loads(raw).get("dir_info", {}).get("editable"))


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def pack_installed(out_dir: Path, dist_name: str = DIST) -> Wheel:
    """Write `<name>-<version>-py3-none-any.whl` of the installed distribution into out_dir."""
    dist = metadata.distribution(dist_name)
    if _is_editable(dist):
        raise WheelError(
            f"this {dist_name} is an editable install (a checkout): build a wheel with "
            "`pip wheel --no-deps -w DIR .` and pass it with --wheel"
        )
    version = dist.version
    files = sorted(
        (str(f) for f in dist.files or []),
        key=str,
    )
    wanted = []
    for name in files:
        parts = PurePosixPath(name).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or name.endswith(".pyc"):
            continue  # console scripts (outside site-packages) and compiled files
        if parts[0].endswith(".dist-info") and parts[-1] in _INSTALLER_FILES:
            continue
        wanted.append(name)
    if not any(n.endswith(".dist-info/METADATA") for n in wanted):
        raise WheelError(f"the installed {dist_name} lists no METADATA: cannot pack it")
    info_dir = next(n for n in wanted if n.endswith(".dist-info/METADATA")).split("/")[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{dist_name}-{version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in wanted:
            data = Path(str(dist.locate_file(name))).read_bytes()
            _add(zf, name, data)
            record.append(_record_line(name, data))
        record.append(f"{info_dir}/RECORD,,")
        _add(zf, f"{info_dir}/RECORD", ("\n".join(record) + "\n").encode())
    return Wheel(path, version)


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def given(path: str) -> Wheel:
    """A wheel the user passed: its version from its file name (name-version-...)."""
    p = Path(path).expanduser()
    parts = p.name.split("-")
    if p.suffix != ".whl" or len(parts) < 5 or parts[0] != DIST:
        raise WheelError(f"{path}: not an {DIST} wheel (expected {DIST}-VERSION-...-any.whl)")
    if not p.is_file():
        raise WheelError(f"{path}: no such file")
    return Wheel(p, parts[1])
