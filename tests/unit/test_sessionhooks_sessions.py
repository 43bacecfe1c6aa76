"""The job's own session count (sessionhooks/sessions.py) kept by the hook's loop
(sessionhooks/main.py serve): a logout line's follow-up recount runs half a second later even
when sshd says nothing more, so `<id>.sessions` drops to 0 and idle reaping can free the job."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from islurm.config import records
from islurm.sessionhooks import main as hook
from islurm.sessionhooks import sessions
from islurm.sessionhooks.joblog import LineReader, fixed

GUARD = 10.0


class FakeSshd:
    """What serve() reads: sshd's stderr (a pipe we write its log lines into) and its pid."""

    def __init__(self) -> None:
        self.stderr_fd, self.log = os.pipe()
        self.pid = os.getpid()

    def say(self, line: str) -> None:
        os.write(self.log, line.encode() + b"\n")


def _count_file(path: str) -> int | None:
    try:
        return int(json.loads(Path(path).read_text())["sessions"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_logout_is_recounted_without_another_line_from_sshd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sshd logs the logout while the session's [priv] process is still there: the first
    # recount still sees it, only the follow-up half a second later sees it gone.
    alive = threading.Event()
    monkeypatch.setattr(sessions, "count", lambda pid, user: 1 if alive.is_set() else 0)
    proc = FakeSshd()
    count = sessions.SessionCount(str(tmp_path), "42", proc.pid, "alice")
    loop = threading.Thread(target=hook.serve, args=(proc, "42", "cpu", [], None, count))
    loop.start()
    path = records.path(str(tmp_path), "42", records.SESSIONS)
    try:
        alive.set()
        proc.say("Accepted publickey for alice from 127.0.0.1 port 40000 ssh2")
        _wait(lambda: _count_file(path) == 1, "the login counted")
        proc.say("Received disconnect from 127.0.0.1 port 40000:11: disconnected by user")
        proc.say("Disconnected from user alice 127.0.0.1 port 40000")
        time.sleep(0.1)  # the hook has read those lines and recounted: still 1
        assert _count_file(path) == 1
        alive.clear()  # the [priv] process exits; sshd says nothing more
        t0 = time.monotonic()
        _wait(lambda: _count_file(path) == 0, "the logout recounted")
        assert time.monotonic() - t0 < 2.0
    finally:
        os.close(proc.log)  # EOF: serve() returns
        loop.join(GUARD)
        os.close(proc.stderr_fd)
    assert not loop.is_alive()


def _wait(ok: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class ExitingSshd:
    """An sshd stand-in that writes a line and exits while someone else (its session's child,
    islurmd's spare) still holds its stderr pipe open."""

    def __init__(self) -> None:
        self.stderr_fd, self.held = os.pipe()
        self.proc = subprocess.Popen(
            ["sh", "-c", "echo 'last words' >&2; exec sleep 0.3"], stderr=self.held
        )
        self.pid = self.proc.pid

    def close(self) -> None:
        self.proc.wait()
        os.close(self.stderr_fd)
        os.close(self.held)


@pytest.mark.parametrize("watch_exit", [True, False])
def test_sshds_exit_ends_its_lines_though_a_child_holds_the_pipe(watch_exit: bool) -> None:
    sshd = ExitingSshd()
    reader = LineReader(sshd, watch_exit=watch_exit)  # type: ignore[arg-type]
    try:
        t0 = time.monotonic()
        got = list(reader.lines(fixed(t0 + 3.0)))
        took = time.monotonic() - t0
    finally:
        reader.close()
        sshd.close()
    assert got == ["last words"]
    if watch_exit:
        assert reader.eof and took < 2.0  # at its exit, not at the deadline
    else:
        assert not reader.eof and took >= 2.9  # without the pidfd: only the deadline ends it
