"""gpuswap: from a CPU session to a GPU one, keeping the CPU job's placement constraints."""

from __future__ import annotations

from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobs import Job
from islurm.daemon.manager import Lease, Notify, SessionManager
from islurm.daemon.slurm.client import SlurmError, SlurmUnreachable


async def gpuswap(
    manager: SessionManager,
    lease: Lease,
    source: Job,
    release: bool,
    keep_constraints: bool,
    notify: Notify,
) -> None:
    """Bring up the GPU profile's session with the CPU job's placement constraints, and
    release the CPU job once the GPU session is ready if asked to."""
    extra: tuple[str, ...] = ()
    if keep_constraints:
        try:
            extra = tuple(await manager.slurm.constraints(source.job_id))
        except SlurmError as exc:
            notify(
                "session.failed",
                {
                    "code": int(
                        Code.SLURM_UNREACHABLE
                        if isinstance(exc, SlurmUnreachable)
                        else Code.INTERNAL
                    ),
                    "message": f"cannot read job {source.job_id}'s constraints: {exc.message}",
                },
            )
            return
        if extra:
            notify(
                "session.progress",
                {
                    "message": f"keeping job {source.job_id}'s constraints: {' '.join(extra)}",
                    "waited": 0,
                },
            )

    async def released(job: Job) -> None:
        if release and source.live and source is not job:
            try:
                await manager.cancel_jobs([source], why=f"gpuswap to job {job.job_id}")
            except RpcFault as fault:
                notify(
                    "session.progress",
                    {
                        "message": f"could not release CPU job {source.job_id}: {fault.message}",
                        "waited": 0,
                    },
                )
                return
            notify(
                "session.progress",
                {"message": f"released CPU job {source.job_id}", "waited": 0},
            )

    await manager.acquire(lease, notify, extra=extra, on_ready=released)
