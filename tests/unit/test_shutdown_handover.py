"""The hand-over from a daemon that is shutting down to the next one: the shim retries an
acquire told SHUTTING_DOWN (proxyshim/rpc.py), and an on-demand daemon started meanwhile
waits for the old one's lock (daemon/rpc/lock.py `await_lock`)."""

import os
import socket
import threading
import time

import pytest

from islurm.daemon.rpc import lock
from tests.unit.shimfakes import MakeDaemon, MakeTcp, Peer, Start
from tests.unit.test_proxyshim_rpc import BANNER, banner_then_wait_for_bye, finish, ready_at


def test_shim_asks_the_next_daemon_when_told_shutting_down(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(banner_then_wait_for_bye)

    @daemon.script
    def stopping(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.progress", {"message": "queued: job 42 (Priority)", "waited": 0})
        peer.notify("session.failed", {"code": 1008, "message": "islurmd is shutting down"})
        peer.wait_eof()

    daemon.script(ready_at(sshd.port))  # the next daemon

    code, out, err = finish(shim_start("cpu"), b"bye\n")
    daemon.check()
    sshd.check()
    assert (code, out) == (0, BANNER)
    assert err.decode().splitlines() == [
        "islurm: queued: job 42 (Priority)",
        "islurm: islurmd is shutting down; asking the next one",
    ]


def test_shim_asks_the_next_daemon_when_its_acquire_is_refused_shutting_down(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(banner_then_wait_for_bye)

    @daemon.script
    def stopping(peer: Peer) -> None:
        peer.error(peer.expect("session.acquire"), 1008, "islurmd is shutting down")
        peer.wait_eof()

    daemon.script(ready_at(sshd.port))  # the next daemon

    code, out, _ = finish(shim_start("cpu"), b"bye\n")
    daemon.check()
    assert (code, out) == (0, BANNER)


def test_next_daemon_waits_for_the_lock_of_one_that_no_longer_answers(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    old = lock.take_lock(path)  # draining: holds the lock, listens no more
    threading.Timer(0.3, os.close, (old,)).start()
    t0 = time.monotonic()
    fd = lock.await_lock(path, wait=5.0)
    os.close(fd)
    assert 0.25 <= time.monotonic() - t0 < 4


def test_next_daemon_gives_way_to_one_that_answers(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    held = lock.take_lock(path)
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(path)
        listening.listen(1)
        t0 = time.monotonic()
        with pytest.raises(lock.AlreadyRunning):
            lock.await_lock(path, wait=5.0)
        assert time.monotonic() - t0 < 2
    finally:
        listening.close()
        os.close(held)
