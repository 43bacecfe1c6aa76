"""The daemon's RPC over a real Unix socket (daemon/rpc/server.py, methods.py, unix_listener.py):
the socket's permissions and lock, then requests good and bad through the real dispatch."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from islurm.daemon import version
from islurm.daemon.jobs import Job
from islurm.daemon.rpc import lock, unix_listener
from islurm.daemon.rpc import server as server_module
from islurm.daemon.rpc.framing import read_lines
from islurm.daemon.slurm.states import JobState
from tests.unit.fakes import FakeSlurm, make_daemon

if TYPE_CHECKING:  # the app module imports jsonrpcserver: tests.unit.fakes does that quietly
    from islurm.daemon.app import Daemon

GUARD = 10  # real seconds; every test finishes in milliseconds


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.lines = read_lines(stream)

    async def send(self, raw: bytes) -> None:
        await self.stream.send_all(raw)

    async def call(self, method: str, params: Any = None, req_id: Any = 1) -> dict[str, Any]:
        request = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.send(json.dumps(request).encode() + b"\n")
        return await self.recv()

    async def recv(self) -> dict[str, Any]:
        line = await self.lines.__anext__()
        assert isinstance(line, bytes)
        return json.loads(line)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.lines.aclose()
        await self.stream.aclose()


@pytest.fixture
async def served(
    sock_dir: str, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon serving its socket; Slurm is a fake that expects no call at all."""
    daemon, _ = make_daemon(tmp_path, FakeSlurm())
    path = os.path.join(sock_dir, "islurmd.sock")
    await nursery.start(daemon.server.serve, unix_listener.bind(path))
    yield daemon, path
    daemon.server.stop_accepting()


async def connect(path: str) -> Client:
    return Client(await trio.open_unix_socket(path))


# -- the socket ------------------------------------------------------------------------------


async def test_bind_creates_a_0600_socket(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    listener = unix_listener.bind(path)
    try:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
    finally:
        await listener.aclose()


async def test_stale_socket_is_replaced_but_a_live_one_is_not(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # left behind by a daemon that died: the file stays, nobody answers
    dead.close()
    listener = unix_listener.bind(path)
    try:
        client = await trio.open_unix_socket(path)  # the new socket answers
        await client.aclose()
        with pytest.raises(lock.AlreadyRunning):
            unix_listener.bind(path)
        assert os.path.exists(path)
    finally:
        await listener.aclose()


def test_socket_path_too_long_is_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "x" * 120)
    with pytest.raises(OSError) as caught:
        unix_listener.bind(path)
    assert caught.value.errno == errno.ENAMETOOLONG


def test_second_lock_on_one_socket_is_refused(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    fd = lock.take_lock(path)
    try:
        with pytest.raises(lock.AlreadyRunning):
            lock.take_lock(path)
        with open(os.path.join(sock_dir, "islurmd.lock")) as f:
            assert f.read() == f"{os.getpid()}\n"
    finally:
        os.close(fd)
    os.close(lock.take_lock(path))  # free again once the holder is gone


async def test_peer_credentials_are_ours(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "islurmd.sock")
    listener = unix_listener.bind(path)
    client = await trio.open_unix_socket(path)
    accepted = await listener.accept()
    try:
        assert unix_listener.peer_credentials(accepted.socket) == (
            os.getpid(), os.getuid(), os.getgid()
        )  # fmt: skip
    finally:
        for s in (client, accepted, listener):
            await s.aclose()


# -- requests --------------------------------------------------------------------------------


async def test_status_and_list(served: tuple[Daemon, str]) -> None:
    daemon, path = served
    daemon.table.add(Job(job_id="4242", profile="cpu", state=JobState.RUNNING, node="node-1"))
    daemon.table.add(Job(job_id="4241", profile="gpu", state=JobState.COMPLETED))
    client = await connect(path)
    with trio.fail_after(GUARD):
        status = await client.call("daemon.status", req_id="s;$(x)")
        listing = await client.call("session.list", {})
    await client.close()
    assert status["id"] == "s;$(x)"
    result = status["result"]
    assert (result["pid"], result["version"], result["socket"]) == (
        os.getpid(), version.VERSION, daemon.opts.socket
    )  # fmt: skip
    assert result["watcher"]["polls"] == 0
    assert result["connections"] == 1
    [job] = listing["result"]["jobs"]  # ended jobs are not listed
    assert (job["job_id"], job["state"], job["node"], job["sessions"]) == (
        "4242", "RUNNING", "node-1", 0
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":{"profile":"nope"}}', 1001),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":{"profile":5}}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":{"prof":"cpu"}}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":["cpu","x"]}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":{"profile":"cpu",'
         b'"take_socket":"yes"}}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.acquire","params":{"profile":"cpu",'
         b'"fdpass":1}}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.cancel","params":{"target":""}}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.attach","params":["1;2","cpu"]}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"session.nope"}', -32601),
        (b'{"jsonrpc":"2.0","id":7,"method":"__init__"}', -32601),
        (b'{"jsonrpc":"2.0","id":7,"method"', -32700),
        (b"\xff\xfe{}", -32700),
        (b"[" * 10_000, -32700),
        (b"[" * 10_000 + b"]" * 10_000, -32700),
        (b'{"jsonrpc":"2.0","id":7,"method":"daemon.status","params":' + b"[" * 40 + b"]" * 40
         + b"}", -32700),
        (b'{"id":7,"method":"daemon.status"}', -32600),
        (b"[]", -32600),
        (b"x" * 70_000, -32600),  # longer than a line may be
    ],
)  # fmt: skip
async def test_bad_request_gets_its_error_and_the_connection_keeps_serving(
    served: tuple[Daemon, str], raw: bytes, code: int
) -> None:
    daemon, path = served
    client = await connect(path)
    with trio.fail_after(GUARD):
        await client.send(raw + b"\n")
        error = await client.recv()
        after = await client.call("session.list", req_id=8)
    await client.close()
    assert error["error"]["code"] == code
    assert error["id"] in (7, None)
    assert after == {"jsonrpc": "2.0", "result": {"jobs": []}, "id": 8}
    assert daemon.manager.leases == {}  # nothing was started by a refused request


async def test_unknown_profile_error_lists_the_known_ones(served: tuple[Daemon, str]) -> None:
    _, path = served
    client = await connect(path)
    with trio.fail_after(GUARD):
        reply = await client.call("session.acquire", {"profile": "a100"}, req_id=3)
    await client.close()
    assert reply["id"] == 3
    assert reply["error"]["code"] == 1001
    assert reply["error"]["message"].startswith("unknown profile 'a100'; known: cpu, ")


async def test_acquire_streams_on_its_connection_and_closing_releases_the_lease(
    served: tuple[Daemon, str],
) -> None:
    daemon, path = served
    client = await connect(path)
    with trio.fail_after(GUARD):
        reply = await client.call("session.acquire", {"profile": "cpu", "client_pid": 1})
        lease = reply["result"]["lease"]
        assert reply["result"] == {"lease": lease, "profile": "cpu"}
        note = await client.recv()  # no poll has happened yet (no watcher runs here)
        assert note == {
            "jsonrpc": "2.0",
            "method": "session.progress",
            "params": {"message": "asking Slurm for your jobs", "waited": 0},
        }
        assert set(daemon.manager.leases) == {lease}
        await client.close()
        while daemon.manager.leases:
            await trio.sleep(0.001)


async def test_client_gone_before_its_replies_does_not_stop_the_server(
    served: tuple[Daemon, str],
) -> None:
    daemon, path = served
    rude = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    rude.connect(path)
    rude.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\n' * 500)
    rude.close()  # hundreds of replies now go to a closed socket
    with trio.fail_after(GUARD):
        while daemon.server.connections < 1:
            await trio.sleep(0.001)
        client = await connect(path)
        reply = await client.call("daemon.status", req_id=2)
    await client.close()
    assert reply["id"] == 2
    assert reply["result"]["connections"] == 2


async def test_other_users_are_refused(
    served: tuple[Daemon, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, path = served
    monkeypatch.setattr(
        server_module, "peer_credentials", lambda sock: (4711, os.getuid() + 1, os.getgid())
    )
    client = await connect(path)
    with trio.fail_after(GUARD):
        await client.send(b'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\n')
        try:
            answer = await client.stream.receive_some(100)
        except trio.BrokenResourceError:  # reset: the daemon closed without reading
            answer = b""
        assert answer == b""  # closed without an answer
    await client.close()
    assert (daemon.server.refused, daemon.server.connections) == (1, 0)


async def test_protocol_versions_older_and_same_served_newer_told_what_to_do(
    served: tuple[Daemon, str],
) -> None:
    _, path = served
    client = await connect(path)
    with trio.fail_after(GUARD):
        status = await client.call("daemon.status", {}, req_id=1)
        assert status["result"]["protocol"] == 1
        same = await client.call("session.acquire", {"profile": "a100", "protocol": 1}, req_id=2)
        newer = await client.call("session.acquire", {"profile": "cpu", "protocol": 2}, req_id=3)
        attach = await client.call(
            "session.attach", {"job_id": "7", "profile": "cpu", "protocol": 9}, req_id=4
        )
    await client.close()
    assert same["error"]["code"] == 1001  # protocol 1 accepted: on to the profile check
    assert newer["error"]["code"] == 1009 and attach["error"]["code"] == 1009
    assert "speaks protocol 1, the client 2" in newer["error"]["message"]
    assert "kill -TERM" in newer["error"]["message"]
    assert newer["error"]["data"] == {"protocol": 1, "client": 2}
