"""islurmctl's RPC client (daemon/ctl/client.py) over the shim's Conn, against a scripted
one-connection daemon on a real Unix socket."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from islurm.daemon.ctl.client import Client, DaemonUnreachable, RpcError

Scripted = tuple[str, list[bytes], list[dict[str, object]]]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Scripted]:
    """(socket path, lines to send after the first request, requests received)."""
    path = str(tmp_path / "run" / "d.sock")
    (tmp_path / "run").mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    replies: list[bytes] = []
    got: list[dict[str, object]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as f:
            got.append(json.loads(f.readline()))
            conn.sendall(b"".join(replies))
            f.readline()  # until the client closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path, replies, got
    server.close()
    t.join(5)


def test_call_skips_notifications_and_returns_the_result(daemon: Scripted) -> None:
    path, replies, got = daemon
    replies += [
        b'{"jsonrpc":"2.0","method":"session.progress","params":{"message":"x"}}\n',
        b'{"jsonrpc":"2.0","id":1,"result":{"jobs":[]}}\n',
        b'{"jsonrpc":"2.0","method":"session.cancel.done","params":{"job_ids":["7"]}}\n',
    ]
    with Client(path, start=False) as rpc:
        assert rpc.call("session.list", all=True) == {"jobs": []}
        assert rpc.wait_notification("session.cancel.done") == {"job_ids": ["7"]}
        with pytest.raises(TimeoutError):
            rpc.read_message(timeout=0.05)
    assert got == [{"jsonrpc": "2.0", "id": 1, "method": "session.list", "params": {"all": True}}]


def test_an_error_answer_raises_rpc_error_with_its_code(daemon: Scripted) -> None:
    path, replies, _ = daemon
    replies.append(b'{"jsonrpc":"2.0","id":1,"error":{"code":1001,"message":"no such profile"}}\n')
    with Client(path, start=False) as rpc, pytest.raises(RpcError) as caught:
        rpc.call("session.acquire", profile="nope")
    assert (caught.value.code, caught.value.message) == (1001, "no such profile")


def test_a_garbled_line_is_an_internal_rpc_error(daemon: Scripted) -> None:
    path, replies, _ = daemon
    replies.append(b"not json\n")
    with Client(path, start=False) as rpc, pytest.raises(RpcError) as caught:
        rpc.call("daemon.status")
    assert caught.value.code == -32603


def test_nobody_listening_without_start_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(DaemonUnreachable, match="no islurmd at"):
        Client(str(tmp_path / "none.sock"), start=False)
