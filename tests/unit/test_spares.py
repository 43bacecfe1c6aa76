"""Spare connections (daemon/spares.py): islurmd keeps one connection per job whose banner has
arrived and passes it with `session.ready` (SCM_RIGHTS) to a shim that takes sockets; the shim
checks it (proxyshim/node.py adopt) and hands it to ssh without a connect of its own."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import trio

from islurm.daemon.records import Endpoint
from islurm.daemon.rpc.server import Connection, Outgoing, RpcServer
from islurm.daemon.spares import Spares
from islurm.proxyshim import node, rpc
from tests.unit.shimfakes import MakeDaemon, Peer, Start

BANNER = b"SSH-2.0-OpenSSH_9.2 islurm-job-42\r\n"


class Sshd:
    """A loopback stand-in for the job's sshd: each connection gets `banner`, then is held
    open (or closed at once with `hang_up`) until the test ends. Counts its connections."""

    def __init__(self, banner: bytes = BANNER, hang_up: bool = False) -> None:
        self.banner, self.hang_up = banner, hang_up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.sendall(self.banner)
            if self.hang_up:
                conn.close()
            else:
                self.accepted.append(conn)

    def endpoint(self, job_id: str = "42", port: int | None = None) -> Endpoint:
        return Endpoint(job_id, "n1", "127.0.0.1", port or self.port, 4242, "ssh-ed25519 AAAA")

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.listener.close()
        self._thread.join(5)
        assert not self._thread.is_alive()
        for conn in self.accepted:
            conn.close()


def closed_by_peer(conn: socket.socket) -> bool:
    """Whether the other end closed (a reset: it closed with our banner unread)."""
    conn.settimeout(5)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    server = Sshd()
    yield server
    server.close()


async def _filled(spares: Spares, endpoint: Endpoint, nursery: trio.Nursery) -> None:
    nursery.start_soon(spares.fill, endpoint)
    with trio.fail_after(5):
        while not len(spares):
            await trio.sleep(0.005)


# -- islurmd's side --------------------------------------------------------------------------


async def test_a_spare_is_handed_once_with_its_banner_still_queued(sshd: Sshd) -> None:
    spares = Spares()
    async with trio.open_nursery() as nursery:
        await _filled(spares, sshd.endpoint(), nursery)
        nursery.start_soon(spares.fill, sshd.endpoint())  # one per job: this one does nothing
        await trio.sleep(0.05)
        assert spares.vouches(sshd.endpoint())  # its sshd answered and the connection stands
        assert not spares.vouches(sshd.endpoint(port=sshd.port + 1))
        spare = spares.take(sshd.endpoint())
        assert spare is not None
        assert not spares.vouches(sshd.endpoint())  # taken: nothing left to vouch
        with spare:
            assert await spare.recv(64) == BANNER  # for ssh to read
        assert spares.take(sshd.endpoint()) is None
        nursery.cancel_scope.cancel()
    assert len(sshd.accepted) == 1 and (spares.made, spares.handed) == (1, 1)


async def test_a_spare_for_another_endpoint_is_closed_not_handed(sshd: Sshd) -> None:
    spares = Spares()
    async with trio.open_nursery() as nursery:
        await _filled(spares, sshd.endpoint(), nursery)
        moved = sshd.endpoint(port=sshd.port + 1)  # the job's record now names another port
        assert spares.take(moved) is None
        assert len(spares) == 0
        nursery.cancel_scope.cancel()
    assert closed_by_peer(sshd.accepted[0])


async def test_a_spare_is_not_handed_after_its_time_and_is_closed() -> None:
    server = Sshd()
    try:
        spares = Spares(ttl=0.2)
        async with trio.open_nursery() as nursery:
            await _filled(spares, server.endpoint(), nursery)
            assert spares.vouches(server.endpoint())
            await trio.sleep(0.3)  # past the TTL: closed by fill itself, nobody asked
            assert len(spares) == 0
            assert not spares.vouches(server.endpoint())
            assert spares.take(server.endpoint()) is None
        assert closed_by_peer(server.accepted[0])  # closed, not left to sshd's grace
    finally:
        server.close()


async def test_a_spare_whose_sshd_hung_up_is_not_handed() -> None:
    server = Sshd(hang_up=True)  # banner, then closed (the job ended)
    try:
        spares = Spares()
        async with trio.open_nursery() as nursery:
            await _filled(spares, server.endpoint(), nursery)
            await trio.sleep(0.1)  # the FIN arrives behind the banner
            assert not spares.vouches(server.endpoint())
            assert spares.take(server.endpoint()) is None
            nursery.cancel_scope.cancel()
    finally:
        server.close()


@pytest.mark.parametrize(
    "banner", [BANNER.replace(b"42", b"43"), b"SSH-2.0-OpenSSH_9.2\r\n", b"HTTP/1.1 400\r\n"]
)
async def test_no_spare_from_a_server_that_is_not_the_jobs_sshd(banner: bytes) -> None:
    server = Sshd(banner=banner)
    try:
        spares = Spares()
        await spares.fill(server.endpoint())  # returns at once: nothing kept
        assert len(spares) == 0 and spares.made == 0
    finally:
        server.close()


async def test_no_spare_where_nothing_listens() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = int(s.getsockname()[1])
    spares = Spares()
    await spares.fill(Endpoint("42", "n1", "127.0.0.1", port, 1, "k"))
    assert len(spares) == 0


# -- the RPC: the socket travels with session.ready -----------------------------------------


async def test_the_socket_travels_with_its_line_and_the_shim_takes_it(sshd: Sshd) -> None:
    spares = Spares()
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    shim = rpc.Conn(theirs)
    shim.fds = []
    async with trio.open_nursery() as nursery:
        await _filled(spares, sshd.endpoint(), nursery)
        spare = spares.take(sshd.endpoint())
        assert spare is not None
        send, receive = trio.open_memory_channel[Outgoing](8)
        conn = Connection(send, pid=1)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        conn.notify("session.progress", {"message": "x"})
        conn.notify_with_socket("session.ready", {"job_id": "42", "socket": True}, spare)
        await send.aclose()
        await RpcServer._writer(stream, receive, conn)
        await stream.aclose()
        assert spare.fileno() == -1  # islurmd's copy is closed once sent
        assert conn.sockets == set() and conn.unsent == 0
        nursery.cancel_scope.cancel()
    first = shim.wait(None)
    assert first is not None and first["method"] == "session.progress"
    second = shim.wait(None)
    assert second is not None and second["method"] == "session.ready"
    fd = shim.take_fd()
    assert fd is not None and shim.take_fd() is None  # one descriptor; none taken after
    adopted = node.adopt(fd, "127.0.0.1", sshd.port)
    assert adopted is not None
    try:
        assert adopted.recv(64) == BANNER
        adopted.sendall(b"SSH-2.0-client\r\n")
        assert sshd.accepted[0].recv(64) == b"SSH-2.0-client\r\n"
    finally:
        adopted.close()
        shim.close()


async def test_a_socket_queued_for_a_connection_that_is_gone_is_closed(sshd: Sshd) -> None:
    spares = Spares()
    async with trio.open_nursery() as nursery:
        await _filled(spares, sshd.endpoint(), nursery)
        spare = spares.take(sshd.endpoint())
        assert spare is not None
        send, _receive = trio.open_memory_channel[Outgoing](8)
        conn = Connection(send, pid=1)
        conn.closed.set()  # the shim hung up before session.ready
        conn.notify_with_socket("session.ready", {"socket": True}, spare)
        assert spare.fileno() == -1 and conn.sockets == set()
        nursery.cancel_scope.cancel()


# -- the shim's side ---------------------------------------------------------------------------


def test_adopt_refuses_a_socket_to_another_endpoint_or_one_hung_up(sshd: Sshd) -> None:
    sock = socket.create_connection(("127.0.0.1", sshd.port))
    fd = sock.detach()
    assert node.adopt(fd, "127.0.0.1", sshd.port + 1) is None  # not what session.ready says
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    hung = Sshd(hang_up=True)
    try:
        sock = socket.create_connection(("127.0.0.1", hung.port))
        time.sleep(0.1)  # the banner, then the FIN
        assert node.adopt(sock.detach(), "127.0.0.1", hung.port) is None
    finally:
        hung.close()
    left, right = socket.socketpair()
    with right:
        assert node.adopt(left.detach(), "127.0.0.1", sshd.port) is None  # not TCP
    live = socket.create_connection(("127.0.0.1", sshd.port))
    time.sleep(0.05)
    adopted = node.adopt(live.detach(), "127.0.0.1", sshd.port)  # the good case
    assert adopted is not None
    adopted.close()


def test_the_fdpass_shim_hands_ssh_islurmds_connection_without_connecting_itself(
    shim_daemon: MakeDaemon, shim_start: Start, sshd: Sshd
) -> None:
    daemon = shim_daemon()
    spare = socket.create_connection(("127.0.0.1", sshd.port))
    asked: list[dict[str, object]] = []

    @daemon.script
    def ready_with_socket(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        params = msg["params"]
        assert isinstance(params, dict)
        asked.append(params)
        peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
        line = b'{"jsonrpc": "2.0", "method": "session.ready", "params": {"job_id": "42", '
        line += b'"node": "n1", "host": "127.0.0.1", "port": %d, "lease": "L-1", ' % sshd.port
        line += b'"socket": true}}\n'
        socket.send_fds(peer.conn, [line], [spare.fileno()])
        spare.close()
        peer.expect("session.handed", {"lease": "L-1"})
        peer.wait_eof()

    ssh_side, shim_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ssh_side, shim_side:
        proc = shim_start("--fdpass", "cpu", stdout=shim_side.fileno())
        _data, fds, _flags, _addr = socket.recv_fds(ssh_side, 1, 1)
        proc.wait(timeout=10)
    daemon.check()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else b""
    assert asked[0]["fdpass"] is True and asked[0]["take_socket"] is True
    assert len(fds) == 1
    with socket.socket(fileno=fds[0]) as passed:
        assert passed.recv(64) == BANNER  # the banner islurmd's connection had queued
        passed.sendall(b"hello")
        assert sshd.accepted[0].recv(5) == b"hello"
    assert len(sshd.accepted) == 1  # the shim made no connection of its own


def test_an_older_islurmd_that_refuses_take_socket_is_asked_again_without(
    shim_daemon: MakeDaemon, shim_start: Start, sshd: Sshd
) -> None:
    daemon = shim_daemon()

    @daemon.script
    def refuses(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": msg["id"],
                "error": {
                    "code": -32602,
                    "message": "Invalid params",
                    "data": "acquire() got an unexpected keyword argument 'take_socket'",
                },
            }
        )

    asked: list[object] = []

    @daemon.script
    def serves(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        asked.append(msg["params"])
        peer.reply(msg, {"lease": "L-2", "profile": "cpu"})
        peer.notify(
            "session.ready",
            {"job_id": "42", "node": "n1", "host": "127.0.0.1", "port": sshd.port, "lease": "L-2"},
        )
        peer.expect("session.handed", {"lease": "L-2"})
        peer.wait_eof()

    ssh_side, shim_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ssh_side, shim_side:
        proc = shim_start("--fdpass", "cpu", stdout=shim_side.fileno())
        _data, fds, _flags, _addr = socket.recv_fds(ssh_side, 1, 1)
        proc.wait(timeout=10)
    daemon.check()
    assert proc.returncode == 0
    assert isinstance(asked[0], dict) and "take_socket" not in asked[0]
    assert asked[0]["fdpass"] is True
    assert len(fds) == 1
    os.close(fds[0])
    assert len(sshd.accepted) == 1  # the shim connected itself


def test_the_relay_shim_pumps_through_islurmds_connection(
    shim_daemon: MakeDaemon, shim_start: Start, sshd: Sshd
) -> None:
    daemon = shim_daemon()
    spare = socket.create_connection(("127.0.0.1", sshd.port))

    @daemon.script
    def ready_with_socket(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        params = msg["params"]
        assert isinstance(params, dict) and params["take_socket"] is True
        assert "fdpass" not in params
        peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
        line = b'{"jsonrpc": "2.0", "method": "session.ready", "params": {"job_id": "42", '
        line += b'"node": "n1", "host": "127.0.0.1", "port": %d, "lease": "L-1", ' % sshd.port
        line += b'"socket": true}}\n'
        socket.send_fds(peer.conn, [line], [spare.fileno()])
        spare.close()
        peer.wait_eof()  # the connection is the lease: held until the shim exits

    proc = shim_start("cpu")
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.read(len(BANNER)) == BANNER
    proc.stdin.write(b"SSH-2.0-client\r\n")
    proc.stdin.flush()
    sshd.accepted[0].settimeout(5)
    assert sshd.accepted[0].recv(64) == b"SSH-2.0-client\r\n"
    proc.stdin.close()
    sshd.accepted[0].close()
    sshd.accepted.clear()
    assert proc.wait(timeout=10) == 0
    daemon.check()
