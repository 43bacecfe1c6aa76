"""The terminals of a job's ssh sessions (sessionhooks/terminals.py): the process tree under
sshd read from /proc (a real one and a made-up one), and one line written to each terminal."""

import os
import signal
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from islurm.sessionhooks import terminals

GUARD = 30.0
NOBODY = 65534


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    """(master fd, /dev/pts/N of its slave), raw so that what is written arrives unchanged."""
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def stat_line(pid: int, comm: str, ppid: int) -> bytes:
    return f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0\n".encode()


def fake_proc(root: Path, tree: dict[int, tuple[str, int]], fds: dict[int, list[str]]) -> str:
    """A /proc with `pid: (comm, ppid)` entries and fd symlinks 0, 1, 2 from `fds`."""
    (root / "self").mkdir(parents=True)  # not a pid: skipped
    (root / "31337").mkdir()  # a process that ended between listdir and open: skipped
    for pid, (comm, ppid) in tree.items():
        (root / str(pid) / "fd").mkdir(parents=True)
        (root / str(pid) / "stat").write_bytes(stat_line(pid, comm, ppid))
        for fd, target in enumerate(fds.get(pid, [])):
            (root / str(pid) / "fd" / str(fd)).symlink_to(target)
    return str(root)


def test_descendants_read_a_comm_with_spaces_and_parentheses(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path / "proc",
        {
            1: ("systemd", 0),
            100: ("sshd: alice [priv]", 1),
            101: ("odd ) S 7 (name", 100),  # ppid is the field after the *last* ")"
            102: ("bash", 101),
            200: ("cron", 1),
        },
        {},
    )
    assert terminals.descendants(100, proc) == {101, 102}
    assert terminals.descendants(1, proc) == {100, 101, 102, 200}
    assert terminals.descendants(102, proc) == set()


def test_session_terminals_are_ours_and_under_sshd_only(
    tmp_path: Path, pty: tuple[int, str]
) -> None:
    _, ours = pty
    spare = [os.openpty() for _ in range(2)]
    try:
        theirs, elsewhere = (os.ttyname(slave) for _, slave in spare)
        os.chown(theirs, NOBODY, -1)  # another user's terminal (tests run as root)
        proc = fake_proc(
            tmp_path / "proc",
            {100: ("sshd", 1), 101: ("bash", 100), 102: ("vim", 101), 200: ("tmux", 1)},
            {
                101: ["/dev/null", "/dev/pts/999999", "pipe:[1234]"],  # a gone pts: skipped
                102: [ours, theirs, ours],
                200: [elsewhere],  # ours, but not under this sshd
            },
        )
        assert terminals.session_terminals(100, proc) == {ours}
        assert terminals.session_terminals(1, proc) == {ours, elsewhere}
    finally:
        for fds in spare:
            for fd in fds:
                os.close(fd)


def test_session_terminals_from_the_real_proc(pty: tuple[int, str]) -> None:
    _, name = pty
    # sh stays (`; :`) with no terminal; its child sleep has the pty on stdin.
    shell = subprocess.Popen(
        ["sh", "-c", 'sleep 60 < "$0"; :', name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + GUARD
        found: set[str] = set()
        while not found and time.monotonic() < deadline:
            found = terminals.session_terminals(shell.pid)
            time.sleep(0.01)
        assert found == {name}
        assert len(terminals.descendants(shell.pid)) == 1
    finally:
        for child in terminals.descendants(shell.pid):
            os.kill(child, signal.SIGKILL)
        shell.kill()
        shell.wait(GUARD)


def test_write_all_writes_one_line_to_each_terminal_that_takes_it(pty: tuple[int, str]) -> None:
    master, name = pty
    written = terminals.write_all({name, "/dev/pts/999999"}, "job 4242 ends in 10 min")
    assert written == 1
    assert os.read(master, 1024) == b"\r\njob 4242 ends in 10 min\r\n"


def test_write_all_to_nothing() -> None:
    assert terminals.write_all(set(), "x") == 0
