"""The job's own count of its ssh sessions, for islurmd (config/records.py `<id>.sessions`).

A session that reached the job without a relay on the login node (`ProxyUseFdpass`: the shim
hands ssh the socket and exits) holds no lease; so the job says how many authenticated
sessions its sshd has, and idle reaping counts them. Only sessions past authentication count
(sshd retitles their process `sshd: USER [priv]`), so strangers' unauthenticated connections
cannot keep a job alive. Stdlib only."""

from __future__ import annotations

import time

from islurm.config import records
from islurm.sessionhooks import terminals

RECOUNT_EVERY = 5.0  # seconds, while sessions are open (a disconnect is logged before it ends)
HINTS = ("Accepted ", "Disconnected", "Connection closed", "session closed")


def count(sshd_pid: int, user: str, proc: str = terminals.PROC) -> int:
    """Authenticated sessions of the sshd listening as `sshd_pid`."""
    mark = f"sshd: {user} [priv]".encode()
    n = 0
    for child in terminals.children(sshd_pid, proc):
        try:
            with open(f"{proc}/{child}/cmdline", "rb") as f:
                title = f.read(256)
        except OSError:
            continue
        n += title.startswith(mark)
    return n


class SessionCount:
    """Keeps `<id>.sessions` true: recounted when sshd logs a login or logout, and every
    RECOUNT_EVERY seconds while any session is open."""

    def __init__(self, jobs_dir: str, job_id: str, sshd_pid: int, user: str) -> None:
        self.path = records.path(jobs_dir, job_id, records.SESSIONS)
        self.job_id, self.sshd_pid, self.user = job_id, sshd_pid, user
        self.open = -1
        self.due: float | None = None  # time.time() of the next recount, if any

    def saw(self, line: str) -> None:
        if any(hint in line for hint in HINTS):
            self.recount()
            self.due = time.time() + 0.5  # the one that logged a logout may still be there

    def recount(self) -> None:
        n = count(self.sshd_pid, self.user)
        if n != self.open:
            records.write_json(self.path, {"job_id": self.job_id, "sessions": n, "at": time.time()})
            self.open = n
        self.due = time.time() + RECOUNT_EVERY if n else None
