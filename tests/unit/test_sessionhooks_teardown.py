"""The hook's teardown (sessionhooks/teardown.py): a failing step never skips the next, so the
job's directory goes even when the record store or the container runtime fails; and the
handled signals go off for good before any of it runs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from islurm.config import records
from islurm.sessionhooks import sshd, teardown
from islurm.sessionhooks.container.errors import ContainerError


class FakeSshd(sshd.Sshd):
    """sessionhooks.sshd.Sshd (its `stop` as it is) over a process that is not there: records
    what it was asked."""

    def __init__(self, exits_on_term: bool = True) -> None:
        super().__init__(pid=-1, stderr_fd=-1)
        self.calls: list[str] = []
        self.running = True
        self.exits_on_term = exits_on_term

    def poll(self) -> int | None:
        return None if self.running else 0

    def terminate(self) -> None:
        self.calls.append("terminate")
        self.running = not self.exits_on_term

    def kill(self) -> None:
        self.calls.append("kill")
        self.running = False

    def wait(self, timeout: float | None = None) -> int:
        self.calls.append(f"wait {timeout}")
        if self.running:
            raise TimeoutError("still runs")
        return 0


class FakeContainer:
    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        if self.error:
            raise ContainerError(self.error)


def _job(tmp_path: Path) -> tuple[str, str]:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for suffix in (*teardown.RECORDS, records.ERROR):
        Path(records.path(str(jobs), "42", suffix)).write_text("{}")
    jobdir = tmp_path / "islurm-job42-abc"
    (jobdir / "sub").mkdir(parents=True, mode=0o700)
    (jobdir / "ssh_host_ed25519_key").write_text("secret")
    (jobdir / "sub" / "x").write_text("x")
    return str(jobs), str(jobdir)


def test_every_step_runs_and_the_error_record_stays(tmp_path: Path) -> None:
    jobs, jobdir = _job(tmp_path)
    proc, container = FakeSshd(), FakeContainer()
    assert teardown.run(jobs, "42", proc, container, jobdir) == []  # type: ignore[arg-type]
    assert [p.name for p in Path(jobs).iterdir()] == ["42" + records.ERROR]
    assert proc.calls == ["terminate", "wait 3"] and container.stopped
    assert not Path(jobdir).exists()


def test_the_session_count_goes_with_the_job(tmp_path: Path) -> None:
    jobs, jobdir = _job(tmp_path)
    count = Path(records.path(jobs, "42", records.SESSIONS))
    count.write_text('{"job_id": "42", "sessions": 0}')
    assert teardown.run(jobs, "42", FakeSshd(), None, jobdir) == []
    assert not count.exists()


def test_a_failing_step_is_said_and_the_job_dir_still_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, jobdir = _job(tmp_path)

    def broken(*_args: object) -> None:
        raise PermissionError("state dir unreadable")

    monkeypatch.setattr(records, "remove", broken)
    proc, container = FakeSshd(), FakeContainer("podman rm exited 125")
    failed = teardown.run(jobs, "42", proc, container, jobdir)  # type: ignore[arg-type]
    assert failed == ["remove the job's records", "remove the job's container"]
    assert proc.calls == ["terminate", "wait 3"] and container.stopped
    assert not Path(jobdir).exists()
    err = capsys.readouterr().err
    assert "cleanup: cannot remove the job's records: state dir unreadable" in err
    assert "cleanup: cannot remove the job's container: podman rm exited 125" in err


def test_an_sshd_that_ignores_term_is_killed(tmp_path: Path) -> None:
    jobs, jobdir = _job(tmp_path)
    proc = FakeSshd(exits_on_term=False)
    assert teardown.run(jobs, "42", proc, None, jobdir) == []
    assert proc.calls == ["terminate", "wait 3", "kill", "wait None"]


def test_a_dir_that_cannot_be_removed_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, jobdir = _job(tmp_path)

    def refuse(path: str) -> None:
        raise OSError(f"cannot remove {path}")

    monkeypatch.setattr("shutil.rmtree", refuse)
    assert teardown.run(jobs, "42", None, None, jobdir) == [f"remove {jobdir}"]
    assert Path(jobdir).exists()


def test_a_dir_already_gone_is_fine(tmp_path: Path) -> None:
    jobs, jobdir = _job(tmp_path)
    teardown.run(jobs, "42", None, None, jobdir)
    assert teardown.run(jobs, "42", None, None, jobdir) == []  # twice: nothing left to fail


def test_ignore_turns_every_handled_signal_off() -> None:
    signums = (signal.SIGUSR1, signal.SIGHUP)
    before = {s: signal.getsignal(s) for s in signums}

    def handler(signum: int, _frame: object) -> None:
        raise AssertionError("still handled")

    try:
        for s in signums:
            signal.signal(s, handler)
        teardown.ignore(signums)
        assert [signal.getsignal(s) for s in signums] == [signal.SIG_IGN] * 2
        signal.raise_signal(signal.SIGUSR1)  # ignored: the handler would raise
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _reaped_child() -> int:
    """A real child that has exited and was reaped behind Sshd's back: what a Stop raised as
    waitpid returned leaves (the status lost)."""
    pid = os.posix_spawn("/bin/true", ["true"], {})
    os.waitpid(pid, 0)
    return pid


def test_an_sshd_reaped_behind_its_back_counts_as_exited(tmp_path: Path) -> None:
    proc = sshd.Sshd(_reaped_child(), -1)
    assert proc.poll() == sshd.LOST and proc.wait() == sshd.LOST
    proc.terminate()  # never signals the pid again (it may be someone else's by now)
    fresh = sshd.Sshd(_reaped_child(), -1)
    assert fresh.wait() == sshd.LOST  # the blocking wait too
    jobs, jobdir = _job(tmp_path)
    assert teardown.run(jobs, "42", sshd.Sshd(_reaped_child(), -1), None, jobdir) == []
    assert not Path(jobdir).exists()
