"""The per-user image cache: images on project storage are copied once, atomically, to a
cache on the shared home, and reused while their source is unchanged.

A copy goes to a temporary name, is verified (size and SHA-256 against what was read from the
source) and renamed; its metadata is written last, so an entry without metadata, or a temp
file, is never used. One copy per image at a time across threads, daemons and login nodes
(flock on a per-image lock file). The cache has a size limit with least-recently-used
eviction (last use = the metadata file's mtime). Synchronous: the daemon runs it in a thread."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from islurm.config import paths

CHUNK = 4 << 20
STALE_TEMP = 86400.0  # a temp file whose writer is unknown is removed after this long
Progress = Callable[[int, int], None]  # bytes copied, bytes in all


class ImageError(Exception):
    """An image that cannot be used; the message names the path and the reason."""


@dataclass(frozen=True)
class Entry:
    key: str
    path: str
    source: str
    size: int
    sha256: str
    last_used: float


def default_dir() -> str:
    return os.path.join(paths.cache_dir(), "images")


def under_roots(image: str, roots: Sequence[str]) -> bool:
    """Whether `image` lies on project storage (one of the configured roots)."""
    if not image.startswith("/"):
        return False
    real = os.path.realpath(image)
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError):
        return "is not readable (permission denied)"
    return exc.strerror or str(exc)


class ImageCache:
    def __init__(self, root: str, limit: int) -> None:
        self.root, self.limit = root, limit

    def _key(self, source: str) -> str:
        digest = hashlib.sha256(os.path.realpath(source).encode()).hexdigest()[:16]
        return f"{digest}-{os.path.basename(source)}"

    def _paths(self, key: str) -> tuple[str, str, str]:
        base = os.path.join(self.root, key)
        return base, base + ".json", os.path.join(self.root, f".lock-{key}")

    def _source_stat(self, source: str) -> os.stat_result:
        try:
            st = os.stat(source)
            with open(source, "rb"):
                pass
        except OSError as exc:
            raise ImageError(f"image {source} {_reason(exc)}") from None
        return st

    def lookup(self, source: str) -> str | None:
        """The cached copy of `source` if it is complete and the source is unchanged."""
        st = self._source_stat(source)
        path, meta, _ = self._paths(self._key(source))
        try:
            with open(meta, encoding="utf-8") as f:
                info = json.load(f)
            cached = os.stat(path)
        except (OSError, ValueError):
            return None
        if info.get("stamp") != _stamp(st) or cached.st_size != st.st_size:
            return None
        with contextlib.suppress(OSError):
            os.utime(meta)  # last use, for LRU eviction
        return path

    def fetch(self, source: str, progress: Progress | None = None) -> str:
        """The cached copy of `source`, copying it first if needed (once, under a lock)."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        key = self._key(source)
        path, meta, lock = self._paths(key)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            found = self.lookup(source)
            if found:
                return found
            self._clean_temps()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(meta)  # the old entry is invalid from here on
            digest, stamp = self._copy(source, path, progress)
            info = {"source": os.path.realpath(source), "stamp": stamp, "sha256": digest}
            tmp = f"{meta}.tmp-{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, meta)
        finally:
            os.close(fd)
        self.prune(keep=(key,))
        return path

    def _copy(self, source: str, dest: str, progress: Progress | None) -> tuple[str, list[int]]:
        st = self._source_stat(source)
        host = socket.gethostname().replace("-", "_")
        tmp = os.path.join(
            self.root, f".tmp-{host}-{os.getpid()}-{secrets.token_hex(4)}-{os.path.basename(dest)}"
        )
        digest = hashlib.sha256()
        done = 0
        try:
            with open(source, "rb") as src, open(tmp, "xb") as out:
                os.fchmod(out.fileno(), 0o600)
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, st.st_size)
                out.flush()
                os.fsync(out.fileno())
            after = os.stat(source)
            if _stamp(after) != _stamp(st) or done != st.st_size:
                raise ImageError(f"image {source} changed while it was copied; try again")
            if os.path.getsize(tmp) != done or _sha256(tmp) != digest.hexdigest():
                raise ImageError(f"image {source}: the copy in {self.root} did not verify")
            os.replace(tmp, dest)
        except OSError as exc:
            raise ImageError(f"image {source} could not be copied to the cache: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest.hexdigest(), _stamp(st)

    def _clean_temps(self) -> None:
        """Temp files of copies that died (this host: the pid is gone; else: old)."""
        host = socket.gethostname().replace("-", "_")
        for name in os.listdir(self.root):
            if not name.startswith(".tmp-"):
                continue
            parts = name.split("-", 3)
            full = os.path.join(self.root, name)
            mine = len(parts) > 2 and parts[1] == host and parts[2].isdigit()
            with contextlib.suppress(OSError):
                dead = mine and not os.path.exists(f"/proc/{parts[2]}")
                if dead or time.time() - os.stat(full).st_mtime > STALE_TEMP:
                    os.unlink(full)

    def entries(self) -> list[Entry]:
        """Complete entries, least recently used first."""
        out: list[Entry] = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            key = name[: -len(".json")]
            path, meta, _ = self._paths(key)
            try:
                with open(meta, encoding="utf-8") as f:
                    info = json.load(f)
                used = os.stat(meta).st_mtime
                size = os.stat(path).st_size
            except (OSError, ValueError):
                continue
            out.append(Entry(key, path, info["source"], size, info["sha256"], used))
        return sorted(out, key=lambda e: e.last_used)

    def prune(self, limit: int | None = None, keep: Sequence[str] = ()) -> list[Entry]:
        """Evict least recently used entries until the cache fits `limit` (default: its own)."""
        limit = self.limit if limit is None else limit
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed: list[Entry] = []
        for entry in entries:
            if total <= limit:
                break
            if entry.key in keep:
                continue
            path, meta, lock = self._paths(entry.key)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # being copied or checked right now
            try:
                for victim in (meta, path):  # metadata first: a half-removed entry is invalid
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(victim)
            finally:
                os.close(fd)
            total -= entry.size
            removed.append(entry)
        return removed


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
