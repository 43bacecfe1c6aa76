"""Files setup and uninstall change on the laptop: what each will hold, the diff `--dry-run`
prints, and writing them (atomically, owner-only, only when they differ: a re-run leaves
every file byte-identical)."""

from __future__ import annotations

import contextlib
import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Change:
    path: Path
    new: str | None  # None: remove the file
    mode: int = 0o600

    def old(self) -> str | None:
        try:
            return self.path.read_bytes().decode()
        except FileNotFoundError:
            return None

    @property
    def needed(self) -> bool:
        return self.old() != self.new


def diff_text(name: str, old: str | None, new: str | None) -> str:
    """A unified diff of one file's text (None: the file does not exist)."""
    if old == new:
        return ""
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True),
        (new or "").splitlines(keepends=True),
        "/dev/null" if old is None else name,
        "/dev/null" if new is None else name,
    )
    return "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines)


def diff(changes: list[Change]) -> str:
    """A unified diff of the changes that are needed (empty: nothing to do)."""
    return "".join(diff_text(str(c.path), c.old(), c.new) for c in changes)


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write bytes exactly (no newline translation) through a temp file renamed over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def apply(changes: list[Change]) -> list[Path]:
    """Make the needed changes; the paths changed."""
    done = []
    for c in changes:
        if not c.needed:
            continue
        if c.new is None:
            c.path.unlink(missing_ok=True)
        else:  # a user's file keeps its mode; ours are owner-only
            mode = c.path.stat().st_mode & 0o7777 if c.path.exists() else c.mode
            write_private(c.path, c.new, mode)
        done.append(c.path)
    return done
