"""The Slurm poll loop (daemon/watcher.py): intervals, failed polls, idle reaping, races with
submission. Virtual time throughout (autojump_clock)."""

import itertools
import time
from pathlib import Path

import pytest
import trio

from islurm.config import records
from islurm.daemon.jobs import JobTable
from islurm.daemon.records import RecordStore
from islurm.daemon.slurm.client import SlurmError
from islurm.daemon.slurm.parse import SqueueRow
from islurm.daemon.slurm.states import JobState
from islurm.daemon.watcher import Watcher
from tests.unit.fakes import (
    FakeSlurm,
    Notes,
    job_of,
    live_daemon,
    rejected,
    rows,
    running_line,
    squeue_line,
    unreachable,
    write_record,
)

GUARD = 3600


pytestmark = pytest.mark.usefixtures("banners")


async def no_reap(job: object) -> None:
    raise AssertionError(f"nothing should be reaped here: {job!r}")


async def test_failed_poll_keeps_the_last_state_and_says_why(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().script(
        "query",
        rows(running_line("4242")),
        unreachable(),
        rejected("squeue: error: Invalid user: nobody"),
        rows(running_line("4242", node="node-7")),
    )
    table = JobTable()
    watcher = Watcher(slurm, table, RecordStore(str(tmp_path)), 0.5, 30, lambda p: 0, no_reap)
    await watcher.poll_once()
    job = job_of(table, "4242")
    assert (job.state, job.node, watcher.error) == (JobState.RUNNING, "node-1", None)

    await watcher.poll_once()
    assert table.get("4242") is job
    assert (job.state, job.node) == (JobState.RUNNING, "node-1")
    assert watcher.status()["error"] == (
        "Slurm controller unreachable: slurm_load_jobs error: "
        "Unable to contact slurm controller (connect failure)"
    )

    await watcher.poll_once()
    assert job.state is JobState.RUNNING
    assert watcher.error == "squeue failed: squeue: error: Invalid user: nobody"

    await watcher.poll_once()
    # annotated: mypy would keep the narrowing of `error` from before the poll
    polled: tuple[str, str | None, object] = (job.node, watcher.error, watcher.status()["polls"])
    assert polled == ("node-7", None, 4)


async def test_idle_daemon_polls_at_poll_idle(tmp_path: Path, autojump_clock: object) -> None:
    slurm = FakeSlurm().always("query", [])
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        await trio.sleep(1799)  # the safety poll only: at 0, 600 and 1200 s
        assert len(slurm.of("query")) == 3
        assert daemon.watcher.status()["interval"] == 600


async def test_a_waiting_connect_polls_at_poll_busy(tmp_path: Path, autojump_clock: object) -> None:
    slurm = FakeSlurm().always("query", rows(squeue_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), Notes())
        await trio.sleep(10.2)
        times = [c.at for c in slurm.of("query")]
    assert 19 <= len(times) <= 22
    assert min(b - a for a, b in itertools.pairwise(times[1:])) >= 0.5


async def test_held_sessions_do_not_speed_up_polling(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        write_record(state, "4242")
        flows = [Notes() for _ in range(20)]
        for notes in flows:
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            for notes in flows:
                await notes.wait_for("session.ready")
        await trio.sleep(5)  # the polls the 20 waiting flows asked for are over
        before = len(slurm.of("query"))
        await trio.sleep(599)
        during = len(slurm.of("query")) - before
        assert len(job_of(daemon.table, "4242").leases) == 20
    # Idle with 20 sessions open: no poll but the safety poll (every 10 min). Never one per
    # session: the records are stat()ed instead.
    assert during <= 1, [c.at for c in slurm.of("query")]


async def test_idle_job_is_cancelled_after_grace_and_not_while_leased(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    cancelled_at: list[float] = []

    def scancel(job_ids: list[str]) -> None:
        cancelled_at.append(trio.current_time())
        slurm.always("query", rows(squeue_line("4242", state="CANCELLED", reason="None")))

    slurm.script("cancel", scancel)
    config = '[defaults]\nidle_grace = "5s"\n'
    async with live_daemon(tmp_path, slurm, config) as (daemon, state, nursery):
        write_record(state, "4242")
        lease, notes = daemon.manager.new_lease("cpu"), Notes()
        with trio.CancelScope() as flow:
            nursery.start_soon(daemon.manager.acquire, lease, notes)
            with trio.fail_after(GUARD):
                await notes.wait_for("session.ready")
            await trio.sleep(100)
            assert cancelled_at == []
            flow.cancel()
        daemon.manager.release(lease.id)  # the connection closed
        released = trio.current_time()
        await trio.sleep(60)
    assert len(cancelled_at) == 1
    assert cancelled_at[0] - released == pytest.approx(5, abs=0.01)
    assert [c.args for c in slurm.of("cancel")] == [(["4242"],)]
    assert not job_of(daemon.table, "4242").live


async def test_poll_begun_before_a_submission_does_not_lose_the_new_job(
    tmp_path: Path, autojump_clock: object
) -> None:
    async def slow_sbatch(options: list[str], script: str) -> str:
        await trio.sleep(1.0)  # a busy controller: the watcher's next poll starts meanwhile
        slurm.always("query", rows(squeue_line("4242")))
        return "4242"

    async def squeue_snapshot_before_the_job() -> list[object]:
        await trio.sleep(0.6)  # answers after sbatch returned, with what it saw at 0.5 s
        return []

    slurm = FakeSlurm().script("query", [], squeue_snapshot_before_the_job)
    slurm.script("submit", slow_sbatch)
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        await trio.sleep(0.4)
        daemon.watcher.kick()  # another waiter: a poll begins at 0.5, while sbatch runs
        with trio.fail_after(GUARD):
            await notes.wait_for("session.progress", lambda p: p.get("state") == "PENDING")
            await trio.sleep(2)  # the stale answer has been applied by now
            assert notes.of("session.failed") == []
            assert job_of(daemon.table, "4242").live
            slurm.always("query", rows(running_line("4242")))
            write_record(state, "4242")
            await notes.wait_for("session.ready")
    assert [c.at for c in slurm.of("query")][:3] == [0, 0.5, 1.6]  # the scenario happened
    assert len(slurm.of("submit")) == 1


async def test_job_vanishing_from_squeue_ends_its_session(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        write_record(state, "4242")
        notes = Notes()
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as flow:
                flow.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
                await notes.wait_for("session.ready")
                slurm.always("query", [])  # purged after MinJobAge
    [ended] = notes.of("session.ended")
    assert (ended["state"], ended["code"]) == ("GONE", 1003)
    assert ended["message"] == "job 4242 (cpu) is gone from Slurm; the session is over"


async def test_connect_while_slurm_is_down_at_start_says_so_then_proceeds(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", unreachable())
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        assert not daemon.watcher.synced.is_set()
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            said = await notes.wait_for("session.progress")
            assert said["message"].startswith("Slurm controller unreachable: slurm_load_jobs")
            await trio.sleep(30)
            assert slurm.of("submit") == []  # never submit blind: a job may already exist
            slurm.always("query", rows(running_line("4242")))
            write_record(state, "4242")
            ready = await notes.wait_for("session.ready")
    assert ready["job_id"] == "4242"


async def test_fake_slurm_replays_its_script_then_fails_loudly() -> None:
    slurm = FakeSlurm().script("submit", "1", rejected("sbatch: error: nope"))
    slurm.always("query", [])
    assert await slurm.submit(["--x"], "script") == "1"
    with pytest.raises(SlurmError, match="sbatch: error: nope"):
        await slurm.submit([], "")
    with pytest.raises(AssertionError, match="unexpected Slurm call: submit"):
        await slurm.submit(["--again"], "")
    assert await slurm.query() == await slurm.query() == []
    slurm.stop("query")
    with pytest.raises(AssertionError, match="unexpected Slurm call: query"):
        await slurm.query()
    assert [c.method for c in slurm.calls] == ["submit"] * 3 + ["query"] * 3
    assert slurm.unexpected == ["submit(['--again'], '')", "query()"]


async def test_a_squeue_that_hangs_is_reported_to_the_waiting_user(
    tmp_path: Path, autojump_clock: object
) -> None:
    async def hung() -> list[SqueueRow]:
        await trio.sleep(20)  # a Slurm client retrying against a stopped controller
        return rows(squeue_line("4242"))

    slurm = FakeSlurm().script("query", [], hung).always("query", rows(squeue_line("4242")))
    slurm.script("submit", "4242")
    async with live_daemon(tmp_path, slurm) as (daemon, _state, nursery):
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            said = await notes.wait_for(
                "session.progress", lambda p: "controller unreachable" in str(p.get("message"))
            )
            assert trio.current_time() < 10  # said while the poll still hangs, not after
            assert "has not answered" in str(said["message"])
            await trio.sleep(20)  # the hung squeue answers at last
        assert daemon.watcher.error is None  # and the warning is gone


async def test_a_session_learns_why_its_job_ended_not_just_completing(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        write_record(state, "4242")
        notes = Notes()
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as flow:
                flow.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
                await notes.wait_for("session.ready")
                answers = itertools.chain(
                    [rows(squeue_line("4242", state="COMPLETING", reason="None"))] * 2,
                    itertools.repeat(rows(squeue_line("4242", state="CANCELLED", reason="None"))),
                )
                slurm.always("query", lambda: next(answers))
                daemon.watcher.kick()  # as the shim's session.check does
    [ended] = notes.of("session.ended")
    assert (ended["state"], ended["code"]) == ("CANCELLED", 1003)
    assert ended["message"] == "job 4242 (cpu) was cancelled; the session is over"


async def test_a_vanished_record_is_learned_without_a_poll_then_one_poll_says_why(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        write_record(state, "4242")
        held = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), held)
        with trio.fail_after(GUARD):
            await held.wait_for("session.ready")
        await trio.sleep(60)
        before = len(slurm.of("query"))
        # scancel from outside: the hook removes its record at once; Slurm says CANCELLED.
        slurm.always("query", rows(squeue_line("4242", state="CANCELLED", reason="None")))
        (state / "jobs" / "4242.json").unlink()
        t0 = trio.current_time()
        with trio.fail_after(GUARD):
            ended = await held.wait_for("session.ended")
        took = trio.current_time() - t0
    assert ended["state"] == "CANCELLED"
    assert took <= 3.0  # a stat every 2 s, then one poll (not the 10-minute safety poll)
    assert len(slurm.of("query")) - before == 1


async def test_sessions_without_a_lease_keep_their_job_and_grace_counts_from_their_end(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    cancelled_at: list[float] = []

    def scancel(job_ids: list[str]) -> None:
        cancelled_at.append(trio.current_time())
        slurm.always("query", rows(squeue_line("4242", state="CANCELLED", reason="None")))

    slurm.script("cancel", scancel)
    config = '[defaults]\nidle_grace = "5s"\n'
    async with live_daemon(tmp_path, slurm, config) as (_daemon, state, _nursery):
        sessions = records.path(str(state / "jobs"), "4242", records.SESSIONS)
        write_record(state, "4242")
        job_of(_daemon.table, "4242").direct_possible = True  # a shim ran with --fdpass
        # ssh took the socket from the shim (ProxyUseFdpass): no lease, one session
        records.write_json(sessions, {"job_id": "4242", "sessions": 1, "at": time.time()})
        await trio.sleep(60)
        assert cancelled_at == []  # a minute past the grace: the job said it is in use
        t_end = trio.current_time()
        records.write_json(sessions, {"job_id": "4242", "sessions": 0, "at": time.time()})
        with trio.fail_after(GUARD):
            while not cancelled_at:
                await trio.sleep(0.5)
    # seen gone within a watcher pass (2 s), then the grace (5 s)
    assert 5.0 <= cancelled_at[0] - t_end <= 8.0


async def test_a_job_no_fdpass_session_used_is_reaped_whatever_its_session_file_says(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    reaped: list[float] = []
    slurm.script("cancel", lambda job_ids: reaped.append(trio.current_time()))
    config = '[defaults]\nidle_grace = "5s"\n'
    async with live_daemon(tmp_path, slurm, config) as (_daemon, state, _nursery):
        write_record(state, "4242")
        sessions = records.path(str(state / "jobs"), "4242", records.SESSIONS)
        records.write_json(sessions, {"job_id": "4242", "sessions": 3, "at": time.time()})
        with trio.fail_after(GUARD):
            while not reaped:
                await trio.sleep(0.5)
    assert reaped[0] <= 12.0  # relayed sessions hold leases; the file is not asked
