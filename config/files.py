"""Writing files so that readers never see half of one (stdlib only: the hook uses it too)."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_text_atomic(path: str, text: str, mode: int) -> None:
    """Write `text` to a temporary file beside `path` with `mode`, fsync it, rename it over."""
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
