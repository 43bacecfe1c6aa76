"""Writing files so that readers never see half of one (stdlib only: the hook uses it too,
at every job start: no `tempfile` import, which costs it 5 ms)."""

from __future__ import annotations

import os

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create_temp(path: str) -> tuple[int, str]:
    """A new file beside `path` (0600, a random name, never an existing file or a symlink)."""
    head, base = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(head or ".", f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_text_atomic(path: str, text: str, mode: int, durable: bool = True) -> None:
    """Write `text` to a temporary file beside `path` with `mode`, fsync it (unless not
    `durable`: what a crash of the machine may lose anyway), rename it over."""
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:  # noqa: SIM105 - contextlib is one import more at every job start
            os.unlink(tmp)
        except OSError:
            pass
        raise
