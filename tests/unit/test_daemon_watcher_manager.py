"""Session flows (daemon/manager.py) against a scripted Slurm, on trio's virtual clock.

The daemon's objects are wired as `islurmd` wires them; the readiness record is written the way
the session hook writes it; only the TCP banner check is replaced."""

import shlex
from pathlib import Path

import pytest
import trio

from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.records import Endpoint
from tests.unit.fakes import (
    HOSTILE_DIR,
    NODE_ADDRESS,
    FakeSlurm,
    Notes,
    job_of,
    live_daemon,
    rejected,
    rows,
    running_line,
    squeue_line,
    unreachable,
    write_hook_error,
    write_record,
)

GUARD = 3600  # virtual seconds: a flow that never ends fails the test instead of hanging it


def pending(p: dict[str, object]) -> bool:
    return p.get("state") == "PENDING"


async def test_32_concurrent_acquires_submit_once_and_all_get_ready(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    slurm = FakeSlurm().script("query", []).script("submit", "4242")
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        slurm.always("query", rows(squeue_line("4242")))
        flows = []
        for _ in range(32):
            lease, notes = daemon.manager.new_lease("cpu"), Notes()
            nursery.start_soon(daemon.manager.acquire, lease, notes)
            flows.append((lease, notes))
        with trio.fail_after(GUARD):
            for _, notes in flows:
                await notes.wait_for("session.progress", pending)
            slurm.always("query", rows(running_line("4242")))
            write_record(state, "4242", port=22022)
            for lease, notes in flows:
                ready = await notes.wait_for("session.ready")
                assert ready == {
                    "job_id": "4242",
                    "node": "node-1",
                    "host": NODE_ADDRESS,
                    "port": 22022,
                    "lease": lease.id,
                }
    [submit] = slurm.of("submit")
    options, script = submit.args
    assert options[-4:] == [
        "--job-name=islurm-cpu",
        "--comment=islurm:v1:cpu",
        "--dependency=singleton",
        "--no-requeue",
    ]
    assert f"--state-dir {shlex.quote(str(state))} " in script
    assert daemon.manager.jobs.submissions == 1
    assert job_of(daemon.table, "4242").leases == {lease.id for lease, _ in flows}
    assert all(notes.of("session.failed") == [] for _, notes in flows)


async def test_acquire_reuses_a_job_found_in_squeue(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4243", "gpu")))
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4243", port=23456)
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        lease, notes = daemon.manager.new_lease("gpu"), Notes()
        nursery.start_soon(daemon.manager.acquire, lease, notes)
        with trio.fail_after(GUARD):
            ready = await notes.wait_for("session.ready")
    assert (ready["job_id"], ready["port"]) == ("4243", 23456)
    assert slurm.of("submit") == []
    assert {e.port for e in banners} == {23456}
    assert job_of(daemon.table, "4243").submitted_here is False


async def test_unknown_profile_is_refused_before_anything_happens(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().script("query", [])
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        notes = Notes()
        lease = daemon.manager.new_lease("cpu;$(reboot)")
        with pytest.raises(RpcFault) as caught:
            await daemon.manager.acquire(lease, notes)
    assert caught.value.code is Code.UNKNOWN_PROFILE
    assert "'cpu;$(reboot)'" in caught.value.message
    assert "known: cpu, development-cpu" in caught.value.message
    assert notes.items == []
    assert [c.method for c in slurm.calls] == ["query"]


async def test_sbatch_rejection_fails_the_flow_with_sbatchs_words(
    tmp_path: Path, autojump_clock: object
) -> None:
    words = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    slurm = FakeSlurm().script("query", []).script("submit", rejected(words))
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("gpu"), notes)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1002
    assert failed["message"] == f"sbatch rejected profile gpu: {words}"
    assert failed["data"]["stderr"] == words + "\n"
    assert daemon.ports.held() == {}


async def test_unreachable_controller_is_reported_then_the_flow_recovers(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    slurm = FakeSlurm().script("query", []).script("submit", "4242")
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        slurm.always("query", rows(squeue_line("4242")))
        lease, notes = daemon.manager.new_lease("cpu"), Notes()
        nursery.start_soon(daemon.manager.acquire, lease, notes)
        with trio.fail_after(GUARD):
            await notes.wait_for("session.progress", pending)
            slurm.always("query", unreachable())
            said = await notes.wait_for("session.progress", lambda p: "unreachable" in p["message"])
            assert "Unable to contact slurm controller" in said["message"]
            assert job_of(daemon.table, "4242").state.value == "PENDING"  # the last known state
            slurm.always("query", rows(running_line("4242")))
            said = await notes.wait_for("session.progress", lambda p: p.get("state") == "RUNNING")
            assert said["message"].startswith("job 4242 (cpu) running on node-1, starting sshd [")
            assert daemon.watcher.error is None
            write_record(state, "4242")
            ready = await notes.wait_for("session.ready")
    assert ready["job_id"] == "4242"
    assert notes.of("session.failed") == []


async def test_job_cancelled_under_a_ready_session_ends_it(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4242")
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        notes = Notes()
        lease = daemon.manager.new_lease("cpu")
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as flow:
                flow.start_soon(daemon.manager.acquire, lease, notes)
                await notes.wait_for("session.ready")
                line = squeue_line("4242", state="CANCELLED by 1000", reason="None")
                slurm.always("query", rows(line))
            # acquire returned: the session is over
    assert notes.methods()[-2:] == ["session.ready", "session.ended"]
    ended = notes.of("session.ended")[0]
    assert (ended["code"], ended["job_id"], ended["state"]) == (1003, "4242", "CANCELLED")
    assert "was cancelled" in ended["message"]
    assert not (state / "jobs" / "4242.json").exists()


async def test_hook_error_record_fails_the_flow(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4244")))
    message = "sshd: cannot bind port 22022; \"$(id)\" 'quoted'\nsecond line"
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        write_hook_error(state, "4244", message)
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1007
    assert failed["message"] == f"job 4244: {message}"  # the hook's words, said once
    assert notes.of("session.ready") == []
    assert banners == []


async def test_connect_timeout_cancels_the_job_this_connect_submitted(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().script("query", []).script("submit", "4242").script("cancel", None)
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        slurm.always("query", rows(squeue_line("4242")))
        notes = Notes()
        t0 = trio.current_time()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes, 60)
        assert trio.current_time() - t0 == pytest.approx(60)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1005
    assert failed["job_id"] == "4242"
    assert "cancelled job 4242, which this connect had submitted" in failed["message"]
    assert [c.args for c in slurm.of("cancel")] == [(["4242"],)]


async def test_connect_timeout_leaves_a_job_others_wait_for(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().script("query", []).script("submit", "4242")
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        slurm.always("query", rows(squeue_line("4242")))
        first, second = Notes(), Notes()
        with trio.fail_after(GUARD):
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), first, 60)
            await first.wait_for("session.progress", pending)
            nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), second)
            await second.wait_for("session.progress", pending)
            failed = await first.wait_for("session.failed")
            await trio.sleep(120)
    assert failed["code"] == 1005
    assert "job 4242 stays queued for its other users" in failed["message"]
    assert slurm.of("cancel") == []
    assert second.of("session.failed") == []
    assert job_of(daemon.table, "4242").live


async def test_connect_timeout_never_cancels_an_adopted_job(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(squeue_line("4240")))
    async with live_daemon(tmp_path, slurm) as (daemon, _, _nursery):
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes, 30)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1005
    assert failed["job_id"] == "4240"
    assert slurm.of("cancel") == []


async def test_duplicate_jobs_of_a_profile_the_running_oldest_is_used(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    listing = rows(
        squeue_line("4241"),
        running_line("4245", node="node-2"),
        running_line("4243", node="node-3"),
        squeue_line("4250"),
    )
    slurm = FakeSlurm().always("query", listing)
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        nodes = {"4243": "node-3", "4245": "node-2"}
        for job_id in ("4241", "4243", "4245", "4250"):
            write_record(state, job_id, port=20000 + int(job_id[-2:]), node=nodes.get(job_id, ""))
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            ready = await notes.wait_for("session.ready")
    assert (ready["job_id"], ready["port"]) == ("4243", 20043)
    assert {e.job_id for e in banners} == {"4243"}


async def test_duplicate_pending_jobs_the_oldest_is_waited_for(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(squeue_line("4251"), squeue_line("4249")))
    async with live_daemon(tmp_path, slurm) as (daemon, _, nursery):
        notes = Notes()
        nursery.start_soon(daemon.manager.acquire, daemon.manager.new_lease("cpu"), notes)
        with trio.fail_after(GUARD):
            said = await notes.wait_for("session.progress", pending)
    assert said["job_id"] == "4249"
    assert (
        said["message"]
        == "job 4249 (cpu) pending; waiting because jobs with higher priority are ahead of it "
        "in the queue (Priority) [0s]"
    )


async def test_a_job_about_to_reach_its_limit_is_not_handed_out_a_new_one_is_submitted(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    # 10 s left: a session opened now would be cut at once (VS Code reconnecting at the limit)
    slurm = (
        FakeSlurm()
        .always("query", rows(running_line("4243", left="0:10")))
        .script("submit", "4244")
    )
    (tmp_path / HOSTILE_DIR / "jobs").mkdir(parents=True)
    write_record(tmp_path / HOSTILE_DIR, "4243", port=23456)
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        lease, notes = daemon.manager.new_lease("cpu"), Notes()
        nursery.start_soon(daemon.manager.acquire, lease, notes)
        with trio.fail_after(GUARD):
            await notes.wait_for("session.progress", lambda p: p.get("job_id") == "4244")
            slurm.always(
                "query",
                rows(running_line("4243", left="0:01"), running_line("4244", node="node-1")),
            )
            write_record(state, "4244", port=23457)
            ready = await notes.wait_for("session.ready")
    assert (ready["job_id"], ready["port"]) == ("4244", 23457)
    assert len(slurm.of("submit")) == 1
    assert slurm.of("cancel") == []  # the ending job is left to end by itself


async def test_what_starts_now_is_asked_only_once_a_connect_has_waited_a_while(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    """A job that starts within Slurm's first pass costs its connect no sinfo; a connect that
    waits longer asks once, and then says what would start now."""
    from islurm.daemon import manager

    slurm = FakeSlurm().script("query", []).script("submit", "4250", "4251")
    async with live_daemon(tmp_path, slurm) as (daemon, state, nursery):
        await nursery.start(daemon.avail.run)
        slurm.always("query", rows(squeue_line("4250")))
        lease, notes = daemon.manager.new_lease("cpu"), Notes()
        with trio.fail_after(GUARD):
            nursery.start_soon(daemon.manager.acquire, lease, notes)
            await notes.wait_for("session.progress", pending)
            await trio.sleep(manager.LOOK_AROUND_AFTER - 0.5)
            slurm.always("query", rows(running_line("4250")))
            write_record(state, "4250", port=22022)
            await notes.wait_for("session.ready")
        assert slurm.of("nodes") == [] and slurm.of("test_submit") == []  # (unscripted: fails)

        slurm.quiet_queue()  # from now on sinfo and --test-only may answer
        slurm.always("query", rows(squeue_line("4251", "gpu")))
        lease, notes = daemon.manager.new_lease("gpu"), Notes()
        with trio.fail_after(GUARD):
            nursery.start_soon(daemon.manager.acquire, lease, notes)
            await notes.wait_for("session.progress", pending)
            assert slurm.of("nodes") == []
            said = await notes.wait_for("session.progress", lambda p: bool(p.get("starts_now")))
            assert said["waited"] >= manager.LOOK_AROUND_AFTER and "cpu" in said["starts_now"]
            await trio.sleep(2)
            assert len(slurm.of("nodes")) == 1
            slurm.always("query", rows(running_line("4251", "gpu")))
            write_record(state, "4251", port=22023)
            await notes.wait_for("session.ready")
