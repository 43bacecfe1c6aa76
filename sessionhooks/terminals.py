"""Finding and writing to the terminals of the ssh sessions inside this job. Stdlib only (the
hook runs with the node's Python): the process tree is read from /proc (`proc`, for tests)."""

from __future__ import annotations

import os
import stat

PROC = "/proc"


def _children(proc: str = PROC) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields after the last ")" are fixed.
        fields = data[data.rfind(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def children(pid: int, proc: str = PROC) -> list[int]:
    """The direct children of `pid`."""
    return _children(proc).get(pid, [])


def descendants(root: int, proc: str = PROC) -> set[int]:
    tree = _children(proc)
    seen: set[int] = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        for child in tree.get(pid, []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def session_terminals(sshd_pid: int, proc: str = PROC) -> set[str]:
    """/dev/pts/N of every process under the job's sshd, owned by this user."""
    ttys: set[str] = set()
    uid = os.getuid()
    for pid in descendants(sshd_pid, proc):
        for fd in (0, 1, 2):
            try:
                target = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if not target.startswith("/dev/pts/"):
                continue
            try:
                st = os.stat(target)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_uid == uid:
                ttys.add(target)
    return ttys


def write_all(ttys: set[str], message: str) -> int:
    """Write one line to each terminal; return how many took it."""
    data = f"\r\n{message}\r\n".encode()
    written = 0
    for tty in sorted(ttys):
        try:
            fd = os.open(tty, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            os.write(fd, data)
            written += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return written
