"""gpuswap: from a CPU session to a GPU one, keeping the CPU job's placement constraints."""

from __future__ import annotations

from islurm.config.images import image_key
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobcontrol import Notify
from islurm.daemon.jobs import Job
from islurm.daemon.manager import Lease, SessionManager
from islurm.daemon.progress import note
from islurm.daemon.slurm.client import SlurmError, SlurmUnreachable


def source_job(manager: SessionManager, source: str) -> Job | None:
    """The live job to swap from: by id, else the profile's job (with the profile's own image
    if it has one running, else its job with any image)."""
    if source.isdigit():
        job = manager.table.get(source)
        return job if job is not None and job.live else None
    profile = manager.settings().profiles.get(source)
    own = manager.table.current(source, image_key(profile.container)) if profile else None
    others = [j for j in manager.table if j.live and j.profile == source]
    return own or (others[0] if others else None)


def kept_image(manager: SessionManager, source: Job) -> str | None:
    """The CPU job's image for the GPU session (None: it runs none, the GPU profile's own
    applies); a fault when only the image's key is known."""
    image = manager.jobs.image_of(source)
    if image is None:
        raise RpcFault(
            Code.INVALID_PARAMS,
            f"job {source.job_id} runs an image this islurmd does not know (key "
            f"{source.image_key}): say which with --image, or --no-image",
        )
    return image or None


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
