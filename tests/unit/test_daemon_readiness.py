"""readiness.probe_until_ready (daemon/readiness.py) on trio's virtual clock: it ends with an
endpoint, a hook error or nothing (nobody waits any more); the banner check and name lookup are
replaced (`readiness.confirm`, `readiness.ipv4_address`)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from islurm.daemon import readiness
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.states import JobState
from tests.unit.fakes import FAKE_HOST_KEY, NODE_ADDRESS, resolve, write_hook_error, write_record

GUARD = 3600  # virtual seconds


class Banners:
    """The banner check: records what it was asked and answers `answer`."""

    def __init__(self) -> None:
        self.answer = True
        self.checked: list[Endpoint] = []

    async def confirm(self, endpoint: Endpoint) -> bool:
        self.checked.append(endpoint)
        await trio.lowlevel.checkpoint()
        return self.answer


@pytest.fixture
def sshd_banners(monkeypatch: pytest.MonkeyPatch) -> Banners:
    fake = Banners()
    monkeypatch.setattr(readiness, "confirm", fake.confirm)
    monkeypatch.setattr(readiness, "ipv4_address", resolve)
    return fake


@pytest.fixture
def records(tmp_path: Path) -> RecordStore:
    (tmp_path / "jobs").mkdir()
    return RecordStore(str(tmp_path / "jobs"))


@asynccontextmanager
async def probing(job: Job, records: RecordStore) -> AsyncIterator[None]:
    """probe_until_ready runs in the background of the block; leaving waits for it to end."""
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readiness.probe_until_ready, job, records)
            yield


def outcome(job: Job) -> tuple[bool, Endpoint | None, str | None]:
    """(probing, endpoint, hook error): read afresh, so mypy keeps no narrowing across awaits."""
    return job.probing, job.endpoint, job.hook_error


def running_job(job_id: str = "4242", node: str = "node-1") -> Job:
    job = Job(job_id=job_id, profile="cpu", state=JobState.RUNNING, node=node)
    job.leases.add("L1-1")
    return job


async def test_a_record_that_appears_gives_the_endpoint(
    tmp_path: Path, records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    job = running_job()
    async with probing(job, records):
        await trio.sleep(5)
        assert outcome(job) == (True, None, None) and sshd_banners.checked == []
        write_record(tmp_path, "4242", port=22077)
    want = Endpoint("4242", "node-1", NODE_ADDRESS, 22077, 4711, FAKE_HOST_KEY)
    assert outcome(job) == (False, want, None)
    assert sshd_banners.checked == [want]
    assert job.served


async def test_an_error_record_is_the_hooks_words(
    tmp_path: Path, records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    job = running_job()
    write_hook_error(tmp_path, "4242", "sshd: no hostkeys available")
    with trio.fail_after(GUARD):
        await readiness.probe_until_ready(job, records)
    assert job.hook_error == "sshd: no hostkeys available"
    assert job.endpoint is None and sshd_banners.checked == [] and not job.probing


async def test_a_record_whose_sshd_never_answers_is_given_up(
    tmp_path: Path, records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    sshd_banners.answer = False
    job = running_job()
    write_record(tmp_path, "4242")
    with trio.fail_after(GUARD):
        await readiness.probe_until_ready(job, records)
    assert job.hook_error == "the job's sshd wrote its record but does not answer"
    assert len(sshd_banners.checked) == readiness.MAX_UNANSWERED
    assert job.endpoint is None and not job.probing


async def test_a_late_answer_within_the_limit_is_taken(
    tmp_path: Path, records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    sshd_banners.answer = False
    job = running_job()
    write_record(tmp_path, "4242")
    async with probing(job, records):
        while len(sshd_banners.checked) < readiness.MAX_UNANSWERED - 1:
            await trio.sleep(0.001)
        sshd_banners.answer = True
    assert job.endpoint is not None and job.hook_error is None
    assert len(sshd_banners.checked) == readiness.MAX_UNANSWERED


async def test_probing_stops_when_the_last_lease_goes(
    records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    job = running_job()
    async with probing(job, records):
        await trio.sleep(60)
        assert outcome(job) == (True, None, None)
        job.leases.clear()
        await trio.sleep(1)  # the next probe notices
        assert outcome(job) == (False, None, None)
    assert sshd_banners.checked == []


async def test_probing_stops_when_the_job_ends(
    records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    job = running_job()
    async with probing(job, records):
        await trio.sleep(60)
        job.state = JobState.CANCELLED
    assert not job.probing and job.endpoint is None and job.hook_error is None


async def test_a_record_from_another_node_is_refused_once(
    tmp_path: Path, records: RecordStore, sshd_banners: Banners, autojump_clock: object
) -> None:
    job = running_job(node="node-2")
    write_record(tmp_path, "4242", node="node-1")
    async with probing(job, records):
        await trio.sleep(0.1)  # fewer probes than MAX_UNANSWERED
        assert job.refused_record is not None and job.refused_record.node == "node-1"
        assert job.endpoint is None and job.hook_error is None and sshd_banners.checked == []
        job.leases.clear()
