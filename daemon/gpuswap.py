"""gpuswap: from a CPU session to a GPU one, keeping the CPU job's placement constraints."""

from __future__ import annotations

from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobcontrol import Notify
from islurm.daemon.jobs import Job
from islurm.daemon.manager import Lease, SessionManager
from islurm.daemon.progress import note
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
            extra = tuple(await manager.jobs.slurm.constraints(source.job_id))
        except SlurmError as exc:
            code = Code.SLURM_UNREACHABLE if isinstance(exc, SlurmUnreachable) else Code.INTERNAL
            why = f"cannot read job {source.job_id}'s constraints: {exc.message}"
            notify("session.failed", RpcFault(code, why).as_params())
            return
        if extra:
            says = f"keeping job {source.job_id}'s constraints: {' '.join(extra)}"
            notify("session.progress", note(says))

    async def released(job: Job) -> None:
        if release and source.live and source is not job:
            try:
                await manager.jobs.cancel_jobs([source], why=f"gpuswap to job {job.job_id}")
            except RpcFault as fault:
                says = f"could not release CPU job {source.job_id}: {fault.message}"
                notify("session.progress", note(says))
                return
            notify("session.progress", note(f"released CPU job {source.job_id}"))

    await manager.acquire(lease, notify, extra=extra, on_ready=released)
