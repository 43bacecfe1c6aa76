"""islurmd's lock beside its socket (islurmd.lock, the holder's pid inside): one daemon per
socket, and the hand-over from an on-demand islurmd to one systemd starts.

The one owner of that contract for islurmd and `islurmctl service install` alike: stdlib and
psutil only, no trio."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable

from islurm.config import paths

POLL = 0.05  # seconds between attempts while the holder stops


class AlreadyRunning(Exception):
    """Another islurmd serves this socket."""


class HandoverFailed(AlreadyRunning):
    """The lock's holder was not stopped: it is not islurmd, or it did not exit in time."""


def open_lock(sock_path: str) -> int:
    return os.open(paths.lock_path(sock_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _claim(fd: int) -> int:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def take_lock(sock_path: str) -> int:
    """Hold islurmd.lock for the daemon's life; raise AlreadyRunning if another daemon has it."""
    fd = open_lock(sock_path)
    if not try_lock(fd):
        os.close(fd)
        raise AlreadyRunning(sock_path)
    return _claim(fd)


def await_lock(sock_path: str, wait: float) -> int:
    """take_lock, waiting up to `wait` s while the holder does not answer on the socket: a
    daemon that is shutting down still holds the lock for its grace period, and the shim
    that started us must find us listening once it is gone. A daemon that answers wins."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return take_lock(sock_path)
        except AlreadyRunning:
            if time.monotonic() >= deadline or answers(sock_path):
                raise
        time.sleep(POLL)


def answers(path: str) -> bool:
    """Whether something accepts connections on the Unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def is_islurmd(pid: int) -> bool:
    """Whether process `pid` runs islurm (its command line says so)."""
    import psutil

    try:
        return any("islurm" in part for part in psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def take_over(
    fd: int, sock_path: str, wait: float, announce: Callable[[int], None] | None = None
) -> int | None:
    """Lock `fd` (islurmd.lock, opened by open_lock), first stopping the islurmd holding it:
    told `announce(pid)`, then SIGTERM; its shims re-attach to the next daemon. Returns the
    pid stopped, if any; HandoverFailed if the holder is not islurmd or outlives `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        if try_lock(fd):
            return None
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text or time.monotonic() > deadline:
            break
        time.sleep(POLL)  # a daemon that has just taken the lock writes its pid next
    pid = int(text) if text.isdigit() else 0
    if pid <= 0 or pid == os.getpid() or not is_islurmd(pid):
        raise HandoverFailed(
            f"{paths.lock_path(sock_path)} is locked by a process that is not islurmd "
            f"(pid {text or '?'})"
        )
    if announce is not None:
        announce(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while not try_lock(fd):
        if time.monotonic() > deadline:
            raise HandoverFailed(
                f"islurmd (pid {pid}) on {sock_path} did not stop within {wait:g} s"
            )
        time.sleep(POLL)
    return pid


def take_over_lock(sock_path: str, wait: float = 10.0) -> int:
    """Under systemd: take the lock from an on-demand daemon (asked to stop), so two daemons
    never serve one user on one node. The lock's fd, our pid in it."""
    fd = open_lock(sock_path)
    try:
        take_over(fd, sock_path, wait)
    except BaseException:
        os.close(fd)
        raise
    return _claim(fd)
