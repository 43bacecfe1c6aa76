"""A connect that waited its connect_timeout gives up (daemon/manager.py decides when)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobcontrol import Notify

if TYPE_CHECKING:
    from islurm.daemon.manager import Lease, SessionManager


async def give_up(manager: SessionManager, lease: Lease, limit: float, notify: Notify) -> None:
    """connect_timeout: the connect fails; a job only it was waiting for is cancelled."""
    job = manager.table.get(lease.job_id) if lease.job_id else None
    message = f"gave up after {limit:.0f} s (connect_timeout)"
    if job is not None and lease.submitted and job.leases <= {lease.id} and job.live:
        with trio.CancelScope(shield=True):
            await manager.jobs.cancel_jobs([job], why="connect timeout")
        message += f"; cancelled job {job.job_id}, which this connect had submitted"
    elif job is not None:
        message += f"; job {job.job_id} stays queued for its other users"
    notify(
        "session.failed",
        RpcFault(Code.CONNECT_TIMEOUT, message).as_params(job_id=lease.job_id),
    )
