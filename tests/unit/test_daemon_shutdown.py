"""TERM (daemon/app.py `Daemon.stop`) over a real Unix socket: stop accepting, give waiting
connects their `shutdown_grace`, tell the rest SHUTTING_DOWN (1008), leave connected sessions
alone (their shims re-attach to the next daemon), exit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from islurm.daemon.rpc import unix_listener
from islurm.daemon.rpc.framing import read_lines
from tests.unit.fakes import (
    FakeSlurm,
    make_daemon,
    rows,
    running_line,
    squeue_line,
    write_record,
)

GUARD = 10  # real seconds


pytestmark = pytest.mark.usefixtures("banners")


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.lines = stream, read_lines(stream)

    async def acquire(self, profile: str) -> None:
        req = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "session.acquire",
            "params": {"profile": profile},
        }
        await self.stream.send_all(json.dumps(req).encode() + b"\n")

    async def aclose(self) -> None:
        await self.lines.aclose()
        await self.stream.aclose()

    async def next(self, method: str | None = None) -> dict[str, Any] | None:
        """The next message (of `method`, skipping progress), None at EOF."""
        async for line in self.lines:
            assert isinstance(line, bytes)
            msg: dict[str, Any] = json.loads(line)
            if method is None or msg.get("method") == method or "error" in msg:
                return msg
        return None

    async def expect(self, method: str) -> dict[str, Any]:
        """The next message of `method` (skipping progress); EOF fails the test."""
        msg = await self.next(method)
        assert msg is not None, f"EOF while waiting for {method}"
        return msg


async def open_client(path: str) -> Client:
    return Client(await trio.open_unix_socket(path))


def term() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


async def test_term_tells_waiting_connects_to_retry_and_leaves_sessions_alone(
    sock_dir: str, tmp_path: Path
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242"), squeue_line("4243", "gpu")))
    slurm.quiet_queue()
    daemon, state = make_daemon(tmp_path, slurm, "[daemon]\nshutdown_grace = 0.5\n")
    write_record(state, "4242")
    path = os.path.join(sock_dir, "islurmd.sock")
    events: list[tuple[str, float]] = []
    daemon.on_stopped_serving = lambda: events.append(("released", trio.current_time()))
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run, unix_listener.bind(path))
            session, waiting = await open_client(path), await open_client(path)
            await session.acquire("cpu")
            assert (await session.expect("session.ready"))["params"]["job_id"] == "4242"
            await waiting.acquire("gpu")
            assert (await waiting.expect("session.progress"))["params"]["job_id"] == "4243"
            t0 = trio.current_time()
            term()
            failed = await waiting.next("session.failed")
            events.append(("failed", trio.current_time()))
            assert await session.next() is None  # the daemon exits: EOF, no session.failed
            await session.aclose()
            await waiting.aclose()
    assert failed is not None
    assert failed["params"] == {
        "code": 1008,
        "message": "islurmd is shutting down (its clients retry against the next one)",
        "job_id": "4243",
    }
    assert [name for name, _ in events] == ["released", "failed"]
    assert events[0][1] - t0 >= 0.5  # the waiting connect had its grace
    assert slurm.of("cancel") == []  # nothing cancelled: the next daemon adopts both jobs


async def test_a_connect_that_gets_ready_within_the_grace_is_served(
    sock_dir: str, tmp_path: Path
) -> None:
    answer = [rows(squeue_line("4243", "gpu"))]
    slurm = FakeSlurm().always("query", lambda: answer[0]).quiet_queue()
    daemon, state = make_daemon(tmp_path, slurm, "[daemon]\nshutdown_grace = 30\n")
    path = os.path.join(sock_dir, "islurmd.sock")
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run, unix_listener.bind(path))
            waiting = await open_client(path)
            await waiting.acquire("gpu")
            await waiting.next("session.progress")
            t0 = trio.current_time()
            term()
            await trio.sleep(0.3)
            with pytest.raises(OSError):  # not accepting: a new client starts the next daemon
                await open_client(path)
            write_record(state, "4243")
            answer[0] = rows(running_line("4243", "gpu"))
            daemon.watcher.kick()
            ready = await waiting.next("session.ready")
            assert ready is not None and ready["params"]["job_id"] == "4243"
            assert await waiting.next() is None
            await waiting.aclose()
    assert trio.current_time() - t0 < 5  # exits once nobody waits, not after the full grace


async def test_new_sessions_are_refused_while_draining(sock_dir: str, tmp_path: Path) -> None:
    daemon, _ = make_daemon(tmp_path, FakeSlurm())
    path = os.path.join(sock_dir, "islurmd.sock")
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.server.serve, unix_listener.bind(path))
            client = await open_client(path)
            daemon.manager.draining = True
            await client.acquire("cpu")
            reply = await client.next()
            await client.aclose()
            daemon.server.stop_accepting()
            nursery.cancel_scope.cancel()
    assert reply is not None and reply["error"]["code"] == 1008
    assert daemon.manager.leases == {}


async def test_an_unused_daemon_exits_after_idle_exit_and_a_used_one_does_not(
    sock_dir: str, tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    daemon, _state = make_daemon(tmp_path, slurm, '[daemon]\nidle_exit = "60s"\n')
    path = os.path.join(sock_dir, "islurmd.sock")
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run, unix_listener.bind(path))
            t0 = trio.current_time()
            await trio.sleep(300)  # a live job: it stays
            assert nursery.child_tasks  # still serving
            slurm.always("query", [])  # the job is gone; the next (safety) poll says so
            daemon.watcher.kick()
    stopped = trio.current_time() - t0
    # exits about idle_exit after the job went (IDLE_CHECK granularity), not before 300 s
    assert 300 + 60 <= stopped <= 300 + 60 + 15
