"""What `islurmctl list` and `status` show per job: JobControl's description plus who is
connected (and for which profile they asked) and when idle reaping would cancel it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from islurm.daemon.manager import SessionManager


def describe(manager: SessionManager) -> list[dict[str, Any]]:
    profiles = manager.settings().profiles
    rows = manager.jobs.describe()
    for row in rows:
        job = manager.table.get(row["job_id"])
        asked = [
            lease.requested
            for lease in manager.leases.values()
            if lease.job_id == row["job_id"] and lease.requested != row["profile"]
        ]
        grace = profiles[row["profile"]].idle_grace if row["profile"] in profiles else 0.0
        idle = None
        if job is not None and not job.leases and grace > 0 and job.idle_since is not None:
            idle = round(max(0.0, job.idle_since + grace - trio.current_time()), 1)
        row["fallback_for"] = sorted(set(asked))
        row["idle_grace"] = grace
        row["idle_cancel_in"] = idle
    return rows
