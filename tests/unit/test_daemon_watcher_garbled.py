"""A garbled squeue answer is a failed poll (daemon/watcher.py, daemon/slurm/client.py): the
last known state stands, the raw line is logged and reported, and polling goes on."""

import os
from pathlib import Path

import trio
from structlog.testing import capture_logs

from islurm.daemon.jobs import JobTable
from islurm.daemon.records import RecordStore
from islurm.daemon.slurm.client import SlurmCli, SlurmError, SlurmOutputError
from islurm.daemon.slurm.parse import SlurmParseError, parse_squeue
from islurm.daemon.slurm.states import JobState
from islurm.daemon.watcher import Watcher
from tests.unit.fakes import FakeSlurm, job_of, live_daemon, rows, running_line

GARBLED = "4242\x1fislurm-cpu\x1fRUNN"  # a line cut short: three fields of twelve


async def no_reap(job: object) -> None:
    raise AssertionError(f"nothing should be reaped here: {job!r}")


async def test_garbled_squeue_line_is_a_failed_poll(tmp_path: Path, autojump_clock: object) -> None:
    slurm = FakeSlurm().script(
        "query",
        rows(running_line("4242")),
        lambda: parse_squeue(GARBLED + "\n"),  # what SlurmCli.query did before it wrapped
        SlurmOutputError(["squeue"], GARBLED, _parse_error(GARBLED)),
        rows(running_line("4242", node="node-7")),
    )
    table = JobTable()
    watcher = Watcher(slurm, table, RecordStore(str(tmp_path)), 0.5, 30, lambda p: 0, no_reap)
    await watcher.poll_once()
    job = job_of(table, "4242")

    with capture_logs() as logs:
        await watcher.poll_once()
    assert (job.state, job.node, table.get("4242")) == (JobState.RUNNING, "node-1", job)
    assert watcher.status()["error"] == (
        f"squeue answered what islurm cannot read: cannot parse squeue line: {GARBLED!r}"
    )
    assert [(e["event"], e.get("raw")) for e in logs] == [("watcher.poll_failed", GARBLED)]

    await watcher.poll_once()
    assert job.state is JobState.RUNNING
    assert watcher.error is not None and GARBLED.split("\x1f")[1] in watcher.error

    await watcher.poll_once()
    # annotated: mypy would keep the narrowing of `error` from before the poll
    polled: tuple[str, str | None, int] = (job.node, watcher.error, watcher.polls)
    assert polled == ("node-7", None, 4)


def _parse_error(text: str) -> SlurmParseError:
    try:
        parse_squeue(text)
    except SlurmParseError as exc:
        return exc
    raise AssertionError("expected a parse error")


async def test_the_watcher_loop_survives_a_garbled_poll(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().script("query", rows(running_line("4242")), lambda: parse_squeue(GARBLED))
    slurm.always("query", rows(running_line("4242", node="node-7")))
    config = '[daemon]\npoll_idle = "30s"\n'
    async with live_daemon(tmp_path, slurm, config) as (daemon, _state, _nursery):
        await trio.sleep(31)  # the idle poll at 30 s reads garbage
        assert (
            daemon.watcher.error is not None and "cannot parse squeue line" in daemon.watcher.error
        )
        assert job_of(daemon.table, "4242").node == "node-1"
        await trio.sleep(15)  # a failed poll retries within 10 s
        # annotated: mypy would keep the narrowing of `error` from before the sleep
        polled: tuple[str | None, str] = (daemon.watcher.error, job_of(daemon.table, "4242").node)
        assert polled == (None, "node-7")
    assert len(slurm.of("query")) >= 3


async def test_slurm_cli_reports_unreadable_squeue_output_as_a_slurm_error(
    tmp_path: Path,
) -> None:
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\nprintf '4242\\037islurm-cpu\\037RUNN\\n'\n")
    os.chmod(squeue, 0o755)
    client = SlurmCli(timeout=10, bin_dir=str(tmp_path))
    try:
        await client.query()
    except SlurmError as exc:
        assert isinstance(exc, SlurmOutputError)
        assert (exc.raw, exc.stdout, exc.argv[0]) == (GARBLED, GARBLED + "\n", str(squeue))
        assert exc.message == f"cannot parse squeue line: {GARBLED!r}"
    else:
        raise AssertionError("garbled squeue output must raise")
