"""The daemon's Unix socket: private dir, 0600 socket, one daemon per socket, peer uid checks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket as stdsocket
import struct

import trio

from islurm.config import paths

SD_LISTEN_FDS_START = 3


class AlreadyRunning(Exception):
    """Another islurmd serves this socket."""


def take_lock(sock_path: str) -> int:
    """Hold islurmd.lock for the daemon's life; raise AlreadyRunning if another daemon has it."""
    fd = os.open(paths.lock_path(sock_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(sock_path) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def await_lock(sock_path: str, wait: float) -> int:
    """take_lock, waiting up to `wait` s while the holder does not answer on the socket: a
    daemon that is shutting down still holds the lock for its grace period, and the shim
    that started us must find us listening once it is gone. A daemon that answers wins."""
    import time

    deadline = time.monotonic() + wait
    while True:
        try:
            return take_lock(sock_path)
        except AlreadyRunning:
            if time.monotonic() >= deadline or _answers(sock_path):
                raise
        time.sleep(0.05)


def _answers(path: str) -> bool:
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind(sock_path: str) -> trio.SocketListener:
    """Bind the socket (under the lock). A stale socket file left by a dead daemon is replaced."""
    if len(os.fsencode(sock_path)) > paths.SUN_PATH_MAX:
        raise OSError(
            errno.ENAMETOOLONG, f"socket path longer than {paths.SUN_PATH_MAX} bytes", sock_path
        )
    if os.path.exists(sock_path):
        if _answers(sock_path):
            raise AlreadyRunning(sock_path)
        os.unlink(sock_path)
    raw = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600: no window where others could connect
    try:
        raw.bind(sock_path)
    finally:
        os.umask(old)
    raw.listen(128)
    return _wrap(raw)


def from_systemd() -> trio.SocketListener | None:
    """The listening socket systemd passed (LISTEN_FDS/LISTEN_PID), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    raw_count = os.environ.get("LISTEN_FDS", "0")
    count = int(raw_count) if raw_count.isdigit() else 0
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    if count < 1:
        return None
    for extra in range(SD_LISTEN_FDS_START + 1, SD_LISTEN_FDS_START + count):
        # We serve one socket; more must not leak into sbatch and the jobs.
        with contextlib.suppress(OSError):
            os.close(extra)
    raw = stdsocket.socket(fileno=SD_LISTEN_FDS_START)
    if raw.family != stdsocket.AF_UNIX or raw.type != stdsocket.SOCK_STREAM:
        raise OSError(errno.EINVAL, "systemd passed a socket that is not AF_UNIX/SOCK_STREAM")
    os.set_inheritable(raw.fileno(), False)
    return _wrap(raw)


def _wrap(raw: stdsocket.socket) -> trio.SocketListener:
    raw.setblocking(False)
    return trio.SocketListener(trio.socket.from_stdlib_socket(raw))


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    data = sock.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def identity(sock_path: str) -> tuple[int, int] | None:
    """(device, inode) of the socket file, to recognise our own later."""
    try:
        st = os.lstat(sock_path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_socket(sock_path: str, ours: tuple[int, int] | None) -> None:
    """Remove the socket file only if it is still the one we bound (systemd or another daemon
    may have bound the path since)."""
    if ours is not None and identity(sock_path) == ours:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)


def take_over_lock(sock_path: str, wait: float = 10.0) -> int:
    """Under systemd: take the lock from an on-demand daemon (asked to stop: its shims
    re-attach to us), so two daemons never serve one user on one node."""
    import signal
    import time

    deadline = time.monotonic() + wait
    asked = False
    while True:
        try:
            return take_lock(sock_path)
        except AlreadyRunning:
            if time.monotonic() >= deadline:
                raise
        if not asked:
            asked = True
            try:
                with open(paths.lock_path(sock_path), encoding="ascii") as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid > 0 and pid != os.getpid():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        time.sleep(0.05)
