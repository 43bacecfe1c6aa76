"""The session hook's bounds (sessionhooks/main.py): sshd's lines in the job's log are capped,
and the state, jobs and log dirs are the user's and private, or the hook refuses them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from islurm.config.paths import UnsafeDirError, ensure_state_dirs
from islurm.sessionhooks.joblog import CappedLog


def logged(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The hook's log lines since the last call, without the `islurm-hook[pid] time` head."""
    return [line.split(" ", 2)[2] for line in capsys.readouterr().err.splitlines()]


def test_lines_past_the_budget_are_counted_not_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = CappedLog(budget=20)
    log.line("a" * 9)  # 10 bytes with its newline
    log.line("b" * 9)  # 20: exactly the budget
    assert logged(capsys) == ["sshd: " + "a" * 9, "sshd: " + "b" * 9]
    for _ in range(5):
        log.line("c" * 9)
    assert logged(capsys) == [
        "sshd log past 20 bytes: further lines are counted, not written"  # once
    ]
    assert (log.written, log.dropped) == (20, 5)
    log.close()
    assert logged(capsys) == ["5 sshd log line(s) dropped"]
    log.close()
    assert logged(capsys) == []  # said once


def test_close_without_drops_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    log = CappedLog(budget=1 << 20)
    log.line("Server listening on 0.0.0.0 port 22022.")
    log.close()
    assert logged(capsys) == ["sshd: Server listening on 0.0.0.0 port 22022."]


def test_a_single_line_over_the_budget_is_not_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = CappedLog(budget=100)
    log.line("x" * 1000)
    assert logged(capsys) == ["sshd log past 100 bytes: further lines are counted, not written"]
    assert (log.written, log.dropped) == (0, 1)


# -- private dirs --------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_private_dirs_creates_state_jobs_and_log_0700(tmp_path: Path) -> None:
    state = tmp_path / "home" / "state dir;$(x)"
    assert ensure_state_dirs(str(state)) == str(state)
    for d in (state, state / "jobs", state / "log"):
        assert d.is_dir()
        assert mode(d) == 0o700, d


def test_private_dirs_tightens_an_open_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "jobs").mkdir(parents=True)
    os.chmod(state / "jobs", 0o777)
    ensure_state_dirs(str(state))
    assert mode(state / "jobs") == 0o700


@pytest.mark.parametrize("which", ["", "jobs", "log"])
def test_private_dirs_refuses_a_dir_owned_by_another_uid(tmp_path: Path, which: str) -> None:
    state = tmp_path / "state"
    ensure_state_dirs(str(state))
    os.chown(state / which if which else state, 65534, 65534)  # the tests run as root
    with pytest.raises(UnsafeDirError, match="owned by uid 65534"):
        ensure_state_dirs(str(state))


def test_private_dirs_refuses_a_symlinked_jobs_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, state / "jobs")
    with pytest.raises(UnsafeDirError, match="not a directory"):
        ensure_state_dirs(str(state))
    assert os.listdir(elsewhere) == []


def test_private_dirs_refuses_a_file_where_a_dir_belongs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "log").write_text("")
    with pytest.raises(UnsafeDirError):
        ensure_state_dirs(str(state))
