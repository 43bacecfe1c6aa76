"""Fallbacks: a connect whose job has not started after the profile's `fallback_after` is
served by the first of its `fallbacks` that would start now (daemon/availability.py says).
The job that did not start is cancelled unless the profile keeps it (`keep_pending`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

from islurm.config.settings import Profile, Settings
from islurm.daemon.availability import View
from islurm.daemon.jobcontrol import Notify
from islurm.daemon.jobs import Job
from islurm.daemon.progress import note

if TYPE_CHECKING:
    from islurm.daemon.manager import Lease, SessionManager

log = structlog.get_logger("islurm.fallback")


def choose(profile: Profile, job: Job, waited: float, view: View | None, tried: set[str]) -> str:
    """The fallback to serve this connect with now, or "" (keep waiting). Pure."""
    if not profile.fallbacks or waited < profile.fallback_after or view is None:
        return ""
    if job.state.is_running or not job.live:
        return ""  # it started: its sshd is on the way
    for name in profile.fallbacks:
        verdict = view.profiles.get(name)
        if name not in tried and verdict is not None and verdict.starts_now:
            return name
    return ""


def wait_limit(profile: Profile, waited: float, heartbeat: float) -> float:
    """How long a waiting connect may sleep: it wakes when its fallbacks become due."""
    due = profile.fallback_after - waited
    return min(heartbeat, due) if profile.fallbacks and due > 0 else heartbeat


def serves(settings: Settings, requested: str, profile: str) -> bool:
    """Whether a job of `profile` may serve a connect for `requested` (it is a fallback)."""
    p = settings.profiles.get(requested)
    return p is not None and profile in p.fallbacks


async def switch(
    manager: SessionManager,
    lease: Lease,
    job: Job,
    profile: Profile,
    target: str,
    waited: float,
    notify: Notify,
) -> Profile:
    """Move the lease from `job` to the fallback `target`; cancel `job` if this connect
    submitted it, nobody else waits for it and the profile does not keep it."""
    lease.tried.add(profile.name)
    manager.release_job(lease)
    if profile.keep_pending or not job.live:
        what = f"it stays queued: once it runs, ssh slurm-{profile.name} lands on it"
    elif job.leases or not lease.submitted:
        what = "it stays queued for the other connects waiting for it"
    else:
        with trio.CancelScope(shield=True):
            await manager.jobs.cancel_jobs([job], why=f"fallback to {target}")
        what = "cancelled it"
    lease.profile, lease.submitted = target, False
    log.info("acquire.fallback", lease=lease.id, job_id=job.job_id, to=target, kept=what)
    notify(
        "session.progress",
        note(
            f"job {job.job_id} ({profile.name}) has not started after {waited:.0f} s; {what}; "
            f"this connect gets profile {target} instead, which starts now"
        ),
    )
    return manager.profile(target)
