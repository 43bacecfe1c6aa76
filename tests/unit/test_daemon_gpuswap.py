"""gpuswap (daemon/gpuswap.py) against the scripted Slurm: the CPU job's placement constraints go
into the GPU job's sbatch options, the CPU job is released once the GPU session is ready if
asked, and a constraints read that fails ends the flow with Slurm's words."""

from pathlib import Path

import pytest
import trio

from islurm.daemon.errors import Code
from islurm.daemon.gpuswap import gpuswap
from islurm.daemon.slurm.client import SlurmError
from islurm.daemon.slurm.parse import SqueueRow
from tests.unit.fakes import (
    HOSTILE_DIR,
    FakeSlurm,
    Notes,
    job_of,
    live_daemon,
    rejected,
    rows,
    running_line,
    unreachable,
    write_record,
)

pytestmark = pytest.mark.usefixtures("banners")

GUARD = 3600  # virtual seconds
CONSTRAINTS = ["--exclude=node-3,node-4", "--constraint=ib&avx512"]


def gpu_cluster(tmp_path: Path) -> FakeSlurm:
    """CPU job 4242 runs on node-1; the GPU job submitted is 4243, at once running on node-2."""
    submitted: list[str] = []

    def squeue() -> list[SqueueRow]:
        lines = [running_line("4242")]
        lines += [running_line(job_id, "gpu", node="node-2") for job_id in submitted]
        return rows(*lines)

    def submit(options: list[str], script: str) -> str:
        submitted.append("4243")
        write_record(tmp_path / HOSTILE_DIR, "4243", node="node-2", port=22099)
        return "4243"

    return FakeSlurm().always("query", squeue).script("submit", submit)


def progress(notes: Notes) -> list[str]:
    return [str(p["message"]) for p in notes.of("session.progress")]


async def swap(
    tmp_path: Path, slurm: FakeSlurm, *, release: bool, keep: bool = True
) -> tuple[Notes, bool]:
    """gpuswap from job 4242 until the GPU session is ready: its notes; whether 4242 lives."""
    async with live_daemon(tmp_path, slurm) as (daemon, _state, nursery):
        notes = Notes()
        lease = daemon.manager.new_lease("gpu")
        source = job_of(daemon.table, "4242")
        nursery.start_soon(gpuswap, daemon.manager, lease, source, release, keep, notes)
        with trio.fail_after(GUARD):
            ready = await notes.wait_for("session.ready")
        assert (ready["job_id"], ready["port"]) == ("4243", 22099)
    return notes, source.live


async def test_the_cpu_jobs_constraints_are_kept(tmp_path: Path, autojump_clock: object) -> None:
    slurm = gpu_cluster(tmp_path).script("constraints", CONSTRAINTS)
    notes, cpu_lives = await swap(tmp_path, slurm, release=False)
    assert [c.args for c in slurm.of("constraints")] == [("4242",)]
    [submit] = slurm.of("submit")
    options = submit.args[0]
    assert options[-len(CONSTRAINTS) - 4 : -4] == CONSTRAINTS  # before islurm's own four
    assert progress(notes)[0] == (
        "keeping job 4242's constraints: --exclude=node-3,node-4 --constraint=ib&avx512"
    )
    assert cpu_lives and slurm.of("cancel") == []


async def test_no_constraints_asked_when_not_kept(tmp_path: Path, autojump_clock: object) -> None:
    slurm = gpu_cluster(tmp_path)  # a constraints call would be unexpected
    notes, cpu_lives = await swap(tmp_path, slurm, release=False, keep=False)
    assert not any("constraints" in m for m in progress(notes))
    assert not set(CONSTRAINTS) & set(slurm.of("submit")[0].args[0])
    assert cpu_lives


async def test_release_cpu_cancels_the_cpu_job_before_ready(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = gpu_cluster(tmp_path).script("constraints", []).script("cancel", None)
    notes, cpu_lives = await swap(tmp_path, slurm, release=True)
    assert [c.args for c in slurm.of("cancel")] == [(["4242"],)]
    assert progress(notes)[-1] == "released CPU job 4242"
    assert notes.methods()[-1] == "session.ready"
    assert not any("keeping" in m for m in progress(notes))  # no constraints: nothing to say
    assert not cpu_lives


async def test_a_refused_release_is_said_and_the_gpu_session_goes_on(
    tmp_path: Path, autojump_clock: object
) -> None:
    refused = rejected("scancel: error: Kill job error on job id 4242: Access/permission denied")
    slurm = gpu_cluster(tmp_path).script("constraints", []).script("cancel", refused)
    notes, cpu_lives = await swap(tmp_path, slurm, release=True)
    assert [c.args for c in slurm.of("cancel")] == [(["4242"],)]
    assert progress(notes)[-1] == (
        "could not release CPU job 4242: scancel failed: scancel: error: Kill job error on job"
        " id 4242: Access/permission denied"
    )
    assert notes.methods()[-1] == "session.ready"
    assert cpu_lives


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (unreachable("scontrol"), Code.SLURM_UNREACHABLE),
        (SlurmError(["scontrol"], 1, "", "slurm_load_jobs error: Invalid job id\n"), Code.INTERNAL),
    ],
)
async def test_a_failing_constraints_read_ends_the_swap(
    tmp_path: Path, autojump_clock: object, error: SlurmError, code: Code
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242"))).script("constraints", error)
    async with live_daemon(tmp_path, slurm) as (daemon, _state, _nursery):
        notes = Notes()
        source = job_of(daemon.table, "4242")
        with trio.fail_after(GUARD):
            await gpuswap(
                daemon.manager, daemon.manager.new_lease("gpu"), source, True, True, notes
            )
    assert notes.items == [
        (
            "session.failed",
            {"code": int(code), "message": f"cannot read job 4242's constraints: {error.message}"},
        )
    ]
    assert slurm.of("submit") == [] and slurm.of("cancel") == []
    assert source.live
