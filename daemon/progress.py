"""The notifications a flow sends its client (docs/PROTOCOL.md §2), built here only. Pure."""

from __future__ import annotations

from typing import Any

from islurm.daemon.availability import View
from islurm.daemon.errors import Code
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint
from islurm.daemon.slurm import reasons as queue


def note(message: str) -> dict[str, Any]:
    """The params of a `session.progress` that is not about one job's state."""
    return {"message": message, "waited": 0}


def progress_params(
    job: Job,
    slurm_error: str | None,
    waited: float,
    view: View | None = None,
    first: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The params of a `session.progress` notification about a job that is not ready yet;
    `view` (what would start now) adds the estimate and the profiles that start now,
    `first` (the profile's fallbacks) leading."""
    waiting = view is not None and not job.state.is_running
    alternatives = view.startable(job.profile, first) if view is not None and waiting else []
    return {
        "message": progress_message(job, slurm_error, waited, view, alternatives),
        "job_id": job.job_id,
        "state": job.state.value,
        "reason": job.reason,
        "reason_text": queue.explain(job.reason) if not job.state.is_running else "",
        "start_time": job.start_time,
        "estimated_start": estimate(job, view) or None,
        "starts_now": alternatives,
        "waited": waited,
    }


def estimate(job: Job, view: View | None) -> str:
    """Slurm's expected start of a pending job: squeue's, else sbatch --test-only's for its
    profile (squeue says N/A until the backfill scheduler has looked at the job)."""
    if job.state.is_running:
        return ""
    if job.start_time and job.start_time not in ("N/A", "Unknown"):
        return job.start_time
    verdict = view.profiles.get(job.profile) if view is not None else None
    return verdict.start_time if verdict is not None and not verdict.starts_now else ""


def progress_message(
    job: Job,
    slurm_error: str | None,
    waited: float,
    view: View | None = None,
    alternatives: list[str] | None = None,
) -> str:
    """One line for the user's terminal about a job that is not ready yet."""
    head = f"job {job.job_id} ({job.profile})"
    if slurm_error:
        return f"{head}: {slurm_error}; still waiting [{waited:.0f}s]"
    if job.state.is_running:
        return f"{head} running on {job.node or '?'}, starting sshd [{waited:.0f}s]"
    parts = [f"{head} {job.state.value.lower()}"]
    why = queue.explain(job.reason)
    if why:
        parts.append(f"waiting because {why}")
    when = estimate(job, view)
    if when:
        parts.append(f"estimated start {when}")
    if alternatives:
        shown = [f"{n} (ssh slurm-{n})" for n in alternatives[:3]]
        more = f" and {len(alternatives) - 3} more" if len(alternatives) > 3 else ""
        parts.append("would start now: " + ", ".join(shown) + more)
    return "; ".join(parts) + f" [{waited:.0f}s]"


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
