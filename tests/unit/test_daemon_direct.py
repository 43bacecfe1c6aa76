"""Sessions handed to ssh (daemon/direct.py): the ssh process pinned by a pidfd holds the lease,
and the user is told on ssh's stderr when the job ends under the session. Real child processes
stand in for ssh; /proc is faked only where a test needs a parent it cannot have."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from islurm.config import records
from islurm.daemon import direct
from islurm.daemon.direct import NoClient, SshClient, client_of
from tests.unit.fakes import FakeSlurm, job_of, live_daemon, rows, running_line, write_record

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def ssh() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the user's ssh: a live process of ours whose stderr we read."""
    proc = subprocess.Popen(SLEEPER, stderr=subprocess.PIPE)
    yield proc
    proc.kill()
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def fake_proc(root: Path, pid: int, ppid: int, uid: int, stderr: str | None = None) -> None:
    d = root / str(pid)
    (d / "fd").mkdir(parents=True, exist_ok=True)
    (d / "status").write_text(f"Name:\tislurm-proxy\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\n")
    if stderr is not None:
        (d / "fd" / "2").symlink_to(stderr)


def pinned(proc: subprocess.Popen[bytes], errfd: int | None = None) -> SshClient:
    return SshClient(pid=proc.pid, pidfd=os.pidfd_open(proc.pid), errfd=errfd)


def test_the_shims_parent_is_pinned_and_its_terminal_kept(
    tmp_path: Path, ssh: subprocess.Popen[bytes]
) -> None:
    master, slave = os.openpty()
    try:
        fake_proc(tmp_path, 900001, ssh.pid, os.getuid(), stderr=os.ttyname(slave))
        fake_proc(tmp_path, ssh.pid, os.getpid(), os.getuid())
        client = client_of(900001, proc=str(tmp_path))
        try:
            assert client.pid == ssh.pid and client.running() and client.errfd is not None
            client.tell("job 42 (cpu) was cancelled; the session is over")
            said = os.read(master, 200)  # CR LF (the pty in cooked mode adds a CR of its own)
            assert (
                said.rstrip(b"\r\n") == b"islurm: job 42 (cpu) was cancelled; the session is over"
            )
            assert said.endswith(b"\r\n")
            ssh.kill()
            ssh.wait()
            assert not client.running()
            client.tell("told after ssh left")  # a terminal outlives ssh: still told
            assert os.read(master, 200).rstrip(b"\r\n") == b"islurm: told after ssh left"
        finally:
            client.close()
    finally:
        os.close(master)
        os.close(slave)


def test_a_pipe_is_not_kept_open_and_is_reached_only_while_ssh_runs(
    tmp_path: Path, ssh: subprocess.Popen[bytes]
) -> None:
    read, write = os.pipe()
    try:
        fake_proc(tmp_path, 900001, ssh.pid, os.getuid(), stderr=f"/proc/self/fd/{write}")
        fake_proc(tmp_path, ssh.pid, os.getpid(), os.getuid())
        client = client_of(900001, proc=str(tmp_path))
        assert client.errfd is None  # its reader's EOF must not wait for us
        client.tell("job 42 \x1b[2Jended")  # reaches ssh's own stderr while ssh runs
        assert ssh.stderr is not None
        said = os.read(ssh.stderr.fileno(), 200)
        assert said == b"islurm: job 42 ?[2Jended\n"  # terminal controls made safe
        ssh.kill()
        ssh.wait()
        client.tell("nobody reads this")
        assert ssh.stderr.read() == b""
        client.close()
    finally:
        os.close(read)
        os.close(write)


def test_another_users_parent_or_a_missing_shim_is_refused(
    tmp_path: Path, ssh: subprocess.Popen[bytes]
) -> None:
    fake_proc(tmp_path, 900001, ssh.pid, os.getuid())
    fake_proc(tmp_path, ssh.pid, 1, os.getuid() + 1)
    with pytest.raises(NoClient, match="another user"):
        client_of(900001, proc=str(tmp_path))
    with pytest.raises(NoClient, match="cannot find"):
        client_of(900002, proc=str(tmp_path))
    fake_proc(tmp_path, 900003, 1, os.getuid())
    with pytest.raises(NoClient, match="no parent"):
        client_of(900003, proc=str(tmp_path))


class Job:
    """What `hold` is given about the job: live, changes, its record, Slurm asked."""

    def __init__(self) -> None:
        self.live = True
        self.record = True
        self.kicks = 0
        self.event = trio.Event()

    def end(self) -> None:
        self.live, self.record = False, False
        self.event.set()
        self.event = trio.Event()

    async def changed(self) -> None:
        await self.event.wait()

    async def hold(self, client: SshClient) -> bool:
        return await direct.hold(
            client, lambda: self.live, self.changed, lambda: self.record, self.kick
        )

    def kick(self) -> None:
        self.kicks += 1


async def test_a_job_ending_while_ssh_runs_is_an_end_under_the_session(
    ssh: subprocess.Popen[bytes],
) -> None:
    job = Job()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(5):
            client = pinned(ssh)
            nursery.start_soon(_end_after, job, 0.2)
            assert await job.hold(client) is True
    assert job.kicks == 0
    client.close()


async def _end_after(job: Job, delay: float) -> None:
    await trio.sleep(delay)
    job.end()


async def test_a_plain_logout_with_the_record_standing_ends_quietly(
    ssh: subprocess.Popen[bytes],
) -> None:
    master, slave = os.openpty()
    client = pinned(ssh, errfd=slave)
    job = Job()
    ssh.kill()
    with trio.fail_after(5):
        assert await job.hold(client) is False
    assert job.kicks == 0  # a logout costs no Slurm call
    client.close()
    os.close(master)


async def test_ssh_leaving_as_the_record_vanishes_asks_slurm_once_and_tells(
    ssh: subprocess.Popen[bytes],
) -> None:
    master, slave = os.openpty()
    client = pinned(ssh, errfd=slave)
    job = Job()
    job.record = False  # the hook took it away on TERM

    async def slurm_says_ended() -> None:
        while not job.kicks:
            await trio.sleep(0.01)
        job.end()

    ssh.kill()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slurm_says_ended)
            assert await job.hold(client) is True
    assert job.kicks == 1
    client.close()
    os.close(master)


async def test_without_a_terminal_a_left_ssh_is_not_worth_a_slurm_call(
    ssh: subprocess.Popen[bytes],
) -> None:
    client = pinned(ssh)
    job = Job()
    job.record = False
    ssh.kill()
    with trio.fail_after(5):
        assert await job.hold(client) is False
    assert job.kicks == 0
    client.close()


async def test_a_handed_session_holds_its_job_past_the_grace_until_ssh_exits(
    tmp_path: Path, ssh: subprocess.Popen[bytes]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    reaped: list[float] = []
    slurm.script("cancel", lambda job_ids: reaped.append(trio.current_time()))
    async with live_daemon(tmp_path, slurm, '[defaults]\nidle_grace = "1s"\n') as (d, state, _):
        write_record(state, "4242")
        job = job_of(d.table, "4242")
        lease = d.manager.new_lease("cpu")
        d.manager.bind(lease, job)
        lease.client = pinned(ssh)
        assert d.handed.handed(lease.id)
        await trio.sleep(3)  # three times the grace: ssh still runs
        assert reaped == [] and job.leases == {lease.id}
        ssh.kill()
        with trio.fail_after(20):
            while not reaped:
                await trio.sleep(0.1)
        assert lease.id not in d.manager.leases and lease.client is None


@pytest.mark.parametrize("name", ["sshd", "ssh"])
async def test_a_session_pinned_to_an_sshd_marks_its_job_for_the_count(
    name: str, tmp_path: Path
) -> None:
    # The laptop route pins the login node's sshd: its remembered route then reaches the job
    # without islurmd, so idle reaping must ask the job (direct_possible). A local ssh: no.
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    proc = subprocess.Popen([str(binary), "60"], stderr=subprocess.PIPE)
    try:
        for restarted in (False, True):
            slurm = FakeSlurm().always("query", rows(running_line("4242")))
            config = '[defaults]\nidle_grace = "1s"\n'
            where = tmp_path / f"restarted-{restarted}"
            where.mkdir()
            async with live_daemon(where, slurm, config) as (d, state, _):
                write_record(state, "4242")
                job = job_of(d.table, "4242")
                if restarted:
                    start = direct._start_time(proc.pid)
                    entry = {"job_id": "4242", "profile": "cpu", "pid": proc.pid, "start": start}
                    records.write_json(d.handed.ledger.path, {"sessions": [entry]})
                    assert await d.handed.restore() == 1
                else:
                    lease = d.manager.new_lease("cpu")
                    d.manager.bind(lease, job)
                    lease.client = pinned(proc)
                    assert d.handed.handed(lease.id)
                assert job.direct_possible is (name == "sshd")
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def test_a_restarted_daemon_takes_back_the_sessions_its_ssh_still_runs(
    tmp_path: Path, ssh: subprocess.Popen[bytes]
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm, '[defaults]\nidle_grace = "1s"\n') as (d, state, _):
        write_record(state, "4242")
        start = direct._start_time(ssh.pid)
        assert start
        entries = [
            {"job_id": "4242", "profile": "cpu", "pid": ssh.pid, "start": start},
            {"job_id": "4242", "profile": "cpu", "pid": ssh.pid, "start": "1"},  # pid reused
            {"job_id": "9999", "profile": "cpu", "pid": ssh.pid, "start": start},  # job gone
            {"job_id": "4242", "pid": "not a pid"},
        ]
        records.write_json(d.handed.ledger.path, {"sessions": entries})
        assert Path(d.handed.ledger.path).parent == state
        assert await d.handed.restore() == 1
        job = job_of(d.table, "4242")
        assert len(job.leases) == 1
        kept = records.read_json(d.handed.ledger.path)
        assert kept == {"sessions": [entries[0]]}
        await trio.sleep(3)
        assert len(job.leases) == 1  # held past the grace by the restored ssh
        ssh.kill()
        with trio.fail_after(10):
            while job.leases:
                await trio.sleep(0.1)
        assert records.read_json(d.handed.ledger.path) == {"sessions": []}
