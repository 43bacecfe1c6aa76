"""A stale endpoint on the shim's side (proxyshim/main.py connect_live, node.await_banner):
an endpoint that does not answer like an sshd gets none of ssh's bytes, islurmd is told and
asked again, at most three times in all."""

import socket

import pytest

from tests.unit.shimfakes import Handler, MakeDaemon, MakeTcp, Peer, Start
from tests.unit.test_proxyshim_rpc import BANNER, finish, ready_params

ASKING_AGAIN = "asking islurmd again"


def dead_port() -> int:
    """A loopback port where nothing listens (connects are refused)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def drain(conn: socket.socket) -> bytes:
    """Everything the client sent until it closed (a reset counts as closed)."""
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


class Heard:
    """What a stand-in server received from the shim."""

    def __init__(self) -> None:
        self.data: bytes | None = None


def silent_close(heard: Heard) -> Handler:
    def handler(conn: socket.socket) -> None:
        heard.data = b""  # closes at once, without a banner

    return handler


def not_sshd(heard: Heard) -> Handler:
    def handler(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        heard.data = drain(conn)

    return handler


def sshd(heard: Heard) -> Handler:
    def handler(conn: socket.socket) -> None:
        conn.sendall(BANNER)
        heard.data = drain(conn)

    return handler


def params_of(msg: dict[str, object]) -> dict[str, object]:
    params = msg["params"]
    assert isinstance(params, dict)
    return params


def second_params(port: int) -> dict[str, object]:
    return {"job_id": "42", "host": "127.0.0.1", "port": port}


@pytest.mark.parametrize("bad", ["nothing listens", "closes silently", "not an sshd"])
def test_stale_endpoint_is_reported_and_the_next_one_used(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start, bad: str
) -> None:
    daemon = shim_daemon()
    stale_heard, live_heard = Heard(), Heard()
    if bad == "nothing listens":
        stale_port, stale = dead_port(), None
    else:
        stale = shim_tcp(
            silent_close(stale_heard) if bad == "closes silently" else not_sshd(stale_heard)
        )
        stale_port = stale.port
    live = shim_tcp(sshd(live_heard))
    requests: list[dict[str, object]] = []

    @daemon.script
    def first(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        requests.append(params_of(msg))
        peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.ready", ready_params(stale_port))
        peer.wait_eof()

    @daemon.script
    def second(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        requests.append(params_of(msg))
        peer.reply(msg, {"lease": "L-2", "profile": "cpu"})
        peer.notify("session.ready", ready_params(live.port, job_id="43"))
        peer.wait_eof()

    proc = shim_start("cpu")
    code, out, err = finish(proc, b"SSH-2.0-OpenSSH_9.2 client\r\nbye\n")
    daemon.check()
    live.check()
    if stale is not None:
        stale.check()
    assert (code, out) == (0, BANNER)
    assert live_heard.data == b"SSH-2.0-OpenSSH_9.2 client\r\nbye\n"  # bytes flow both ways
    if stale is not None:
        assert stale_heard.data == b""  # none of ssh's bytes reached it
    assert "unreachable" not in requests[0]
    assert requests[1]["unreachable"] == second_params(stale_port)
    assert requests[1]["profile"] == "cpu"
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("islurm: ")
    assert lines[0].endswith(ASKING_AGAIN)


def test_three_stale_endpoints_exit_5(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    heard = [Heard() for _ in range(3)]
    servers = [shim_tcp(not_sshd(h)) for h in heard]
    requests: list[dict[str, object]] = []
    for server in servers:

        @daemon.script
        def stale(peer: Peer, port: int = server.port) -> None:
            msg = peer.expect("session.acquire")
            requests.append(params_of(msg))
            peer.reply(msg, {"lease": "L", "profile": "cpu"})
            peer.notify("session.ready", ready_params(port))
            peer.wait_eof()

    code, out, err = finish(shim_start("cpu"), b"SSH-2.0-client\r\n")
    daemon.check()
    for server in servers:
        server.check()
    assert (code, out) == (5, b"")
    assert [h.data for h in heard] == [b""] * 3
    assert [r.get("unreachable") for r in requests] == [
        None,
        second_params(servers[0].port),
        second_params(servers[1].port),
    ]
    lines = err.decode().splitlines()
    assert [line.endswith(ASKING_AGAIN) for line in lines] == [True, True, False]
    assert lines[-1] == "islurm-proxy: the endpoint is not an sshd before the session started"
