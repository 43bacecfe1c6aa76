"""The daemon's Unix socket: private dir, 0600 socket, peer uid checks (one daemon per
socket: lock.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket as stdsocket
import struct

import trio

from islurm.config import paths
from islurm.daemon.rpc.lock import AlreadyRunning, answers

SD_LISTEN_FDS_START = 3


def bind(sock_path: str) -> trio.SocketListener:
    """Bind the socket (under the lock). A stale socket file left by a dead daemon is replaced."""
    if len(os.fsencode(sock_path)) > paths.SUN_PATH_MAX:
        raise OSError(
            errno.ENAMETOOLONG, f"socket path longer than {paths.SUN_PATH_MAX} bytes", sock_path
        )
    if os.path.exists(sock_path):
        if answers(sock_path):
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
