"""A stale endpoint on the daemon's side (daemon/manager.py, readiness.record_stands,
watcher.fresh_poll): an endpoint whose record went is never handed out again, Slurm is asked
before anything is said about its job, and a shim's report of an unreachable endpoint drops it.
Also: the port lease of a submission that never finished, and the hook's error said once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from islurm.daemon import manager, readiness
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.states import JobState
from tests.unit.fakes import (
    FAKE_HOST_KEY,
    HOSTILE_DIR,
    NODE_ADDRESS,
    FakeSlurm,
    Notes,
    job_of,
    live_daemon,
    rejected,
    resolve,
    rows,
    running_line,
    squeue_line,
    write_hook_error,
    write_record,
)

GUARD = 3600  # virtual seconds


@pytest.fixture
def sshds(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Banner checks and bare connects answer only on the ports in the set."""
    alive: set[int] = set()

    async def answers(endpoint: Endpoint) -> bool:
        await trio.lowlevel.checkpoint()
        return endpoint.port in alive

    monkeypatch.setattr(readiness, "confirm", answers)
    monkeypatch.setattr(readiness, "ipv4_address", resolve)
    monkeypatch.setattr(manager, "still_listening", answers)
    return alive


def about(job_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p.get("job_id") == job_id


# -- a record that went -------------------------------------------------------------------


@pytest.mark.parametrize("sshd_still_answers", [False, True])
async def test_vanished_record_asks_slurm_first_and_submits_anew(
    tmp_path: Path, autojump_clock: object, sshds: set[int], sshd_still_answers: bool
) -> None:
    """The job was cancelled outside islurm: its hook removed the record on TERM. The table
    still says RUNNING (no poll since). The next acquire must not hand out the old endpoint
    nor say "job 4242 running on node-1, starting sshd"; it asks Slurm and submits anew.
    (sshd_still_answers: the port is still open, e.g. sshd is slow to exit, or the port was
    reused: only the record tells.)"""
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4242", port=22022)
    sshds.add(22022)
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        first = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), first)
        with trio.fail_after(GUARD):
            assert (await first.wait_for("session.ready"))["job_id"] == "4242"
            await trio.sleep(60)  # well past CONFIRM_FRESH: the old code re-checked TCP only
            queries_before = len(slurm.of("query"))
            # scancel from elsewhere: the hook removes its record, Slurm forgets the job.
            (state / "jobs" / "4242.json").unlink()
            if not sshd_still_answers:
                sshds.discard(22022)
            slurm.always("query", [])
            slurm.script("submit", "4243")
            assert job_of(daemon.table, "4242").state is JobState.RUNNING  # the table is stale
            second = Notes()
            queries_when_said: list[int] = []

            def notify(method: str, params: dict[str, object]) -> None:
                queries_when_said.append(len(slurm.of("query")))
                second(method, params)

            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notify)
            await second.wait_for("session.progress", about("4243"))
            slurm.always("query", rows(running_line("4243", node="node-2")))
            write_record(state, "4243", port=23023, node="node-2")
            sshds.add(23023)
            ready = await second.wait_for("session.ready")
    assert (ready["job_id"], ready["port"]) == ("4243", 23023)
    # Slurm was asked before anything was said, and nothing was said about the old job.
    assert queries_when_said[0] > queries_before  # not a word before Slurm was asked
    assert [p for p in second.of("session.progress") if p.get("job_id") == "4242"] == []
    assert not any("4242" in p["message"] for p in second.of("session.progress"))
    assert len(slurm.of("submit")) == 1
    assert second.of("session.failed") == []


async def test_replaced_record_is_not_the_endpoint_handed_out(
    tmp_path: Path, autojump_clock: object, sshds: set[int]
) -> None:
    """A record of the same job naming another sshd (pid, port) does not vouch for the old
    endpoint: the new one is probed and handed out."""
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4242", port=22022, pid=100)
    sshds.update({22022, 22023})
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        first, second = Notes(), Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), first)
        with trio.fail_after(GUARD):
            assert (await first.wait_for("session.ready"))["port"] == 22022
            write_record(state, "4242", port=22023, pid=200)
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), second)
            ready = await second.wait_for("session.ready")
    assert (ready["job_id"], ready["port"]) == ("4242", 22023)
    assert daemon.table.get("4242").endpoint.pid == 200  # type: ignore[union-attr]
    assert slurm.of("submit") == []


async def test_a_job_slurm_has_not_yet_shown_running_is_handed_out_on_its_record(
    tmp_path: Path, autojump_clock: object, sshds: set[int]
) -> None:
    """The job starts between two polls (0.5 s apart while someone waits): its hook's record
    and an answering sshd are newer news than the last poll's PENDING. The connect is ready
    within the probe's fast cadence (it waited for the next poll to say RUNNING, up to 0.5 s,
    and Slurm here keeps saying PENDING)."""
    slurm = FakeSlurm().always("query", rows(squeue_line("4242")))  # queued: adopted
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            await notes.wait_for("session.progress", about("4242"))
            await trio.sleep(1.0)  # still PENDING: the probe runs at its fast start cadence
            written = trio.current_time()
            write_record(state, "4242", port=22022)
            sshds.add(22022)
            ready = await notes.wait_for("session.ready")
            waited = trio.current_time() - written
    # Its record says it runs, and no poll may come while nobody waits: `list` says RUNNING.
    assert job_of(daemon.table, "4242").state is JobState.RUNNING
    assert ready["port"] == 22022
    assert waited <= 0.05  # the probe stats every 0.01 s in its first FAST_START seconds


def test_record_stands_only_for_the_record_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    store = RecordStore(str(tmp_path / "jobs"))
    write_record(tmp_path, "7", port=22022, node="c1", pid=10)
    endpoint = Endpoint("7", "c1", "10.0.0.1", 22022, 10, FAKE_HOST_KEY)
    job = Job(job_id="7", profile="cpu", state=JobState.RUNNING, node="c1")
    assert readiness.record_stands(job, endpoint, store)
    job.state = JobState.COMPLETING
    assert not readiness.record_stands(job, endpoint, store)
    job.state = JobState.PENDING  # started since the last poll: the record is newer news
    assert readiness.record_stands(job, endpoint, store)
    job.state = JobState.SUSPENDED
    assert not readiness.record_stands(job, endpoint, store)
    job.state = JobState.RUNNING
    write_record(tmp_path, "7", port=22022, node="c1", pid=11)  # sshd restarted
    assert not readiness.record_stands(job, endpoint, store)
    (tmp_path / "jobs" / "7.json").unlink()
    assert not readiness.record_stands(job, endpoint, store)


async def test_fresh_poll_waits_for_a_poll_begun_after_the_call(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A poll already under way when fresh_poll is called is not fresh enough."""
    finished: list[tuple[float, float]] = []  # (begun, ended) of each query

    async def slow_query() -> list[object]:
        begun = trio.current_time()
        await trio.sleep(1.0)
        finished.append((begun, trio.current_time()))
        return []

    slurm = FakeSlurm().script("query", [])
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        slurm.always("query", slow_query)
        with trio.fail_after(GUARD):
            daemon.watcher.kick()
            while len(slurm.of("query")) < 2:  # a poll is under way
                await trio.sleep(0.01)
            called = trio.current_time()
            await daemon.watcher.fresh_poll()
            returned = trio.current_time()
    assert any(begun >= called and ended <= returned for begun, ended in finished), finished


# -- a shim's report ----------------------------------------------------------------------


def ready_job(port: int = 22022) -> Job:
    job = Job(job_id="4242", profile="cpu", state=JobState.RUNNING, node="node-1")
    job.endpoint = Endpoint("4242", "node-1", NODE_ADDRESS, port, 4711, FAKE_HOST_KEY)
    job.confirmed_at = 0.0
    return job


async def test_report_unreachable_drops_only_a_matching_endpoint(tmp_path: Path) -> None:
    async with live_daemon(tmp_path, FakeSlurm().always("query", [])) as (daemon, _, _n):
        job = daemon.table.add(ready_job())
        endpoint = job.endpoint
        daemon.manager.report_unreachable("4242", NODE_ADDRESS, 22023)  # another port
        daemon.manager.report_unreachable("4242", "127.0.0.43", 22022)  # another host
        daemon.manager.report_unreachable("4241", NODE_ADDRESS, 22022)  # another job
        daemon.manager.report_unreachable("9999", NODE_ADDRESS, 22022)  # unknown job
        assert job.endpoint is endpoint
        assert not job.suspect
        daemon.manager.report_unreachable("4242", NODE_ADDRESS, 22022)
        assert job.endpoint is None
        assert job.suspect


async def test_reported_endpoint_is_not_handed_out_and_slurm_is_asked(
    tmp_path: Path, autojump_clock: object, sshds: set[int]
) -> None:
    """A shim could not reach the endpoint (a firewall, a dead node): even though its record
    stands and a connect from here works, the next acquire asks Slurm first."""
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4242", port=22022)
    sshds.add(22022)
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        first, second = Notes(), Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), first)
        with trio.fail_after(GUARD):
            await first.wait_for("session.ready")
            queries = len(slurm.of("query"))
            daemon.manager.report_unreachable("4242", NODE_ADDRESS, 22022)
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), second)
            ready = await second.wait_for("session.ready")
    assert ready["job_id"] == "4242"  # Slurm still runs it and its sshd answered a banner
    assert len(slurm.of("query")) > queries


# -- the RPC parameter ---------------------------------------------------------------------


async def call_acquire(tmp_path: Path, params: dict[str, object]) -> tuple[dict[str, object], Job]:
    """session.acquire through the real dispatch on a real socket; returns (reply, job)."""
    import json
    import shutil
    import tempfile

    from islurm.daemon.rpc import unix_listener
    from islurm.daemon.rpc.framing import read_lines
    from tests.unit.fakes import make_daemon

    daemon, _ = make_daemon(tmp_path, FakeSlurm())
    job = daemon.table.add(ready_job())
    sock_dir = tempfile.mkdtemp(prefix="isl", dir="/tmp")
    try:
        path = f"{sock_dir}/islurmd.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.server.serve, unix_listener.bind(path))
            stream = await trio.open_unix_socket(path)
            request = {"jsonrpc": "2.0", "id": 1, "method": "session.acquire", "params": params}
            with trio.fail_after(10):
                await stream.send_all(json.dumps(request).encode() + b"\n")
                lines = read_lines(stream)
                line = await lines.__anext__()
                assert isinstance(line, bytes)
                reply = json.loads(line)
                await lines.aclose()
            await stream.aclose()
            daemon.server.stop_accepting()
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    return reply, job


async def test_acquire_with_a_matching_unreachable_drops_the_endpoint(tmp_path: Path) -> None:
    unreachable = {"job_id": "4242", "host": NODE_ADDRESS, "port": 22022}
    reply, job = await call_acquire(tmp_path, {"profile": "cpu", "unreachable": unreachable})
    assert "result" in reply, reply
    assert job.endpoint is None
    assert job.suspect


async def test_acquire_with_another_unreachable_keeps_the_endpoint(tmp_path: Path) -> None:
    unreachable = {"job_id": "4242", "host": NODE_ADDRESS, "port": 22999}
    reply, job = await call_acquire(tmp_path, {"profile": "cpu", "unreachable": unreachable})
    assert "result" in reply, reply
    assert job.endpoint is not None
    assert not job.suspect


@pytest.mark.parametrize(
    "unreachable",
    [
        "4242",
        ["4242", NODE_ADDRESS, 22022],
        {"job_id": "42;42", "host": NODE_ADDRESS, "port": 22022},
        {"job_id": 4242, "host": NODE_ADDRESS, "port": 22022},
        {"job_id": "4242", "port": 22022},
        {"job_id": "4242", "host": NODE_ADDRESS, "port": "22022"},
        {"job_id": "4242", "host": NODE_ADDRESS, "port": True},
        {"job_id": "4242", "host": "x" * 300, "port": 22022},
    ],
)
async def test_acquire_with_invalid_unreachable_is_refused(
    tmp_path: Path, unreachable: object
) -> None:
    reply, job = await call_acquire(tmp_path, {"profile": "cpu", "unreachable": unreachable})
    assert reply["error"]["code"] == -32602  # type: ignore[index]
    assert job.endpoint is not None  # nothing dropped
    assert not job.suspect


# -- port leases ---------------------------------------------------------------------------


async def test_port_released_when_the_connect_times_out_while_sbatch_hangs(
    tmp_path: Path, autojump_clock: object
) -> None:
    async def hang(options: object, script: str) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    slurm = FakeSlurm().always("query", []).script("submit", hang)
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        notes = Notes()
        with trio.fail_after(GUARD):
            acquire = daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes, 30)
            await acquire
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1005
    assert len(slurm.of("submit")) == 1
    assert daemon.ports.held() == {}


async def test_port_released_when_the_connects_scope_is_cancelled(
    tmp_path: Path, autojump_clock: object
) -> None:
    submitting = trio.Event()

    async def hang(options: object, script: str) -> str:
        submitting.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    slurm = FakeSlurm().always("query", []).script("submit", hang)
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as flow:
                flow.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), Notes())
                await submitting.wait()
                assert len(daemon.ports.held()) == 1  # leased for the submission
                flow.cancel_scope.cancel()  # the client hung up
        assert daemon.ports.held() == {}


async def test_port_released_on_a_rejection_and_kept_on_success(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", []).script("submit", rejected("sbatch: error: nope"))
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes)
            assert notes.of("session.failed")[0]["code"] == 1002
            assert daemon.ports.held() == {}
            slurm.script("submit", "4242")
            slurm.always("query", rows(squeue_line("4242")))
            again = Notes()
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), again)
            await again.wait_for("session.progress", about("4242"))
    assert list(daemon.ports.held().values()) == ["4242"]


# -- the hook's words, said once -----------------------------------------------------------


async def test_hook_error_reaches_the_client_with_one_prefix(
    tmp_path: Path, autojump_clock: object, sshds: set[int]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4244")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        write_hook_error(state, "4244", "sshd did not start: no hostkeys available")
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1007
    assert failed["message"] == "job 4244: sshd did not start: no hostkeys available"
    assert failed["message"].count("sshd did not start") == 1
