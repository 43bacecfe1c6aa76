"""The notifications a flow sends its client (docs/PROTOCOL.md §2), built here only. Pure."""

from __future__ import annotations

from typing import Any

from islurm.daemon.errors import Code
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint


def note(message: str) -> dict[str, Any]:
    """The params of a `session.progress` that is not about one job's state."""
    return {"message": message, "waited": 0}


def progress_params(job: Job, slurm_error: str | None, waited: float) -> dict[str, Any]:
    """The params of a `session.progress` notification about a job that is not ready yet."""
    return {
        "message": progress_message(job, slurm_error, waited),
        "job_id": job.job_id,
        "state": job.state.value,
        "reason": job.reason,
        "start_time": job.start_time,
        "waited": waited,
    }


def progress_message(job: Job, slurm_error: str | None, waited: float) -> str:
    """One line for the user's terminal about a job that is not ready yet."""
    head = f"job {job.job_id} ({job.profile})"
    if slurm_error:
        return f"{head}: {slurm_error}; still waiting [{waited:.0f}s]"
    if job.state.is_running:
        return f"{head} running on {job.node or '?'}, starting sshd [{waited:.0f}s]"
    parts = [f"{head} {job.state.value.lower()}"]
    if job.reason and job.reason not in ("None", "(null)"):
        parts.append(f"reason: {job.reason}")
    if job.start_time and job.start_time not in ("N/A", "Unknown"):
        parts.append(f"estimated start: {job.start_time}")
    return ", ".join(parts) + f" [{waited:.0f}s]"


def ready(job: Job, endpoint: Endpoint, lease_id: str) -> dict[str, Any]:
    """The params of `session.ready`: where the shim connects."""
    return {
        "job_id": job.job_id,
        "node": endpoint.node,
        "host": endpoint.host,
        "port": endpoint.port,
        "lease": lease_id,
    }


def ended(job_id: str, state: str, message: str) -> dict[str, Any]:
    """The params of `session.ended`."""
    return {"code": int(Code.JOB_ENDED), "job_id": job_id, "state": state, "message": message}
