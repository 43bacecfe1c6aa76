"""What islurmd does to jobs in Slurm: submit (with a port lease and the hook's command),
cancel (idempotent), adopt, reap, describe. The session manager decides when; this does it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from islurm.config import paths
from islurm.config.images import ImageArgError, check_image, image_key
from islurm.config.settings import Profile, Settings
from islurm.daemon import hostkeys
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.ports import PortPool
from islurm.daemon.progress import note
from islurm.daemon.slurm.client import SlurmClient, SlurmError, SlurmUnreachable
from islurm.daemon.slurm.parse import time_limit_of
from islurm.daemon.slurm.submission import HookCommand, job_script, sbatch_options
from islurm.daemon.watcher import Watcher

log = structlog.get_logger("islurm.jobs")

SUBMIT_RETRY = 2.0  # seconds between sbatch attempts while the controller is unreachable


class Notify(Protocol):
    """Sends one notification to the client a flow serves."""

    def __call__(self, method: str, params: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class HookSetup:
    """What every job's session hook is started with."""

    python: str
    state_dir: str
    workdir: str
    ca_dir: str | None = None  # the login-node CA that signs each job's host key
    hook_script: str = ""  # sessionhooks/launch.py of this install: run as a file (HookCommand)


class JobControl:
    def __init__(
        self,
        settings: Callable[[], Settings],
        slurm: SlurmClient,
        table: JobTable,
        ports: PortPool,
        watcher: Watcher,
        hook: HookSetup,
    ) -> None:
        self.settings, self.slurm, self.table = settings, slurm, table
        self.ports, self.watcher, self.hook = ports, watcher, hook
        self.records = watcher.records
        self.submissions = 0

    # -- submit ------------------------------------------------------------------------------
    async def submit(
        self,
        holder: str,
        profile: Profile,
        notify: Notify,
        extra: tuple[str, ...] = (),
        source_image: str = "",
    ) -> Job:
        """sbatch a job for `profile` running `source_image` ("" = none) with a fresh port
        lease; the lease is released on every path that does not end in a job."""
        containers = self.settings().containers
        image = ""
        if source_image:  # imageprep and imagecache load only once an image is asked for
            from islurm.daemon.imageprep import prepare_image

            image = await prepare_image(containers, source_image, notify)
        key = image_key(source_image)
        jobs_dir = paths.records_dir(self.hook.state_dir)
        # The job's host key, made and (once its id is known) signed here: the job only
        # starts sshd. Without it (no CA, keygen failed) the job asks for a signature.
        host_key = await hostkeys.make(jobs_dir) if self.hook.ca_dir else None
        port = self.ports.lease(holder)
        time_limit = time_limit_of([*profile.sbatch, *extra])
        options = sbatch_options(
            profile,
            log_path=os.path.join(paths.log_dir(self.hook.state_dir), "job-%j.log"),
            workdir=self.hook.workdir,
            extra=extra,
            image_key=key,
        )
        script = job_script(
            HookCommand(
                python=self.hook.python,
                script=self.hook.hook_script,
                state_dir=self.hook.state_dir,
                port_lease=port,
                profile=profile.name,
                walltime_warnings=profile.walltime_warnings,
                time_limit=time_limit,
                premade_key=host_key is not None,
                image=image,
                # the profile's runtime is for the profile's image; another one goes by its kind
                runtime=profile.runtime if source_image == profile.container else "",
                binds=(*containers.project_roots, *containers.binds),
                modules=profile.modules,
            )
        )
        notify("session.progress", note(f"submitting a job for profile {profile.name}"))
        try:
            job_id = await self._sbatch(profile, options, script, notify)
        except BaseException:
            self.ports.release(holder)
            hostkeys.discard(host_key)
            raise
        if host_key is not None and self.hook.ca_dir is not None:
            # It may pend up to the connect timeout, then run its time limit.
            lifetime = None if time_limit is None else time_limit + profile.connect_timeout
            await hostkeys.install(host_key, self.hook.ca_dir, jobs_dir, job_id, lifetime)
        self.ports.rename(holder, job_id)
        job = self.table.add(
            Job(
                job_id=job_id,
                profile=profile.name,
                image_key=key,
                image=source_image,
                submitted_here=True,
                port=port,
            )
        )
        log.info(
            "job.submitted",
            job_id=job_id,
            profile=profile.name,
            image=source_image,
            port=port,
            options=options,
        )
        self.watcher.kick()
        return job

    async def _sbatch(
        self, profile: Profile, options: list[str], script: str, notify: Notify
    ) -> str:
        """sbatch, retried while the controller is unreachable; a rejection is final."""
        while True:
            try:
                self.submissions += 1
                return await self.slurm.submit(options, script)
            except SlurmUnreachable as exc:
                notify(
                    "session.progress",
                    note(f"Slurm controller unreachable ({exc.message}); retrying"),
                )
                await trio.sleep(SUBMIT_RETRY)
            except SlurmError as exc:
                raise RpcFault(
                    Code.SUBMIT_REJECTED,
                    f"sbatch rejected profile {profile.name}: {exc.message}",
                    {"argv": exc.argv, "stderr": exc.stderr},
                ) from None

    # -- cancel ------------------------------------------------------------------------------
    async def cancel(self, target: str, known_profile: Callable[[str], object]) -> list[str]:
        """Cancel by job id, by profile (checked with `known_profile`) or `--all`."""
        live = [j for j in self.table if j.live]
        if target == "--all":
            jobs = live
        elif target.isdigit():
            jobs = [j for j in live if j.job_id == target]
            if not jobs:
                raise RpcFault(Code.NOT_FOUND, f"no running islurm job {target}")
        else:
            known_profile(target)
            jobs = [j for j in live if j.profile == target]
            if not jobs:
                raise RpcFault(Code.NOT_FOUND, f"no job for profile {target}")
        await self.cancel_jobs(jobs, why="requested")
        return [j.job_id for j in jobs]

    async def cancel_jobs(self, jobs: list[Job], why: str) -> None:
        if not jobs:
            return
        try:
            await self.slurm.cancel([j.job_id for j in jobs])
        except SlurmUnreachable as exc:
            raise RpcFault(Code.SLURM_UNREACHABLE, exc.message) from None
        except SlurmError as exc:
            raise RpcFault(Code.INTERNAL, f"scancel failed: {exc.message}") from None
        for job in jobs:
            log.info("job.cancelled", job_id=job.job_id, profile=job.profile, why=why)
            self.ports.release(job.job_id)
            job.mark_cancelled()
        self.watcher.kick()

    # -- watcher callbacks -------------------------------------------------------------------
    async def cancel_duplicates(self, jobs: list[Job]) -> None:
        """Spare jobs of a profile that already has one in use."""
        try:
            await self.cancel_jobs(jobs, why="duplicate")
        except RpcFault as fault:
            log.warning("job.duplicate_cancel_failed", error=fault.message)

    def adopt(self, job: Job) -> None:
        """A job found in Slurm keeps the port its record names."""
        if job.port is not None:
            self.ports.adopt(job.port, job.job_id)

    async def reap(self, job: Job) -> None:
        """The job had no lease for its idle grace."""
        try:
            await self.cancel_jobs([job], why="idle")
        except RpcFault as fault:
            log.warning("job.reap_failed", job_id=job.job_id, error=fault.message)

    # -- images ------------------------------------------------------------------------------
    def resolve_image(self, value: str) -> str:
        """A per-connect image: a name from [containers] images becomes its image; a path or
        a reference is checked (islurm.config.images) and taken as it is."""
        try:
            value = check_image(value)
        except ImageArgError as exc:
            raise RpcFault(Code.INVALID_PARAMS, str(exc)) from None
        if value.startswith("/") or "://" in value:
            return value
        named = self.settings().containers.images
        if value not in named:
            known = ", ".join(sorted(named)) or "none configured"
            raise RpcFault(
                Code.INVALID_PARAMS, f"unknown image name {value!r} ([containers] images: {known})"
            )
        return named[value]

    def image_of(self, job: Job) -> str | None:
        """The image a job runs ("" = none), None when only its key is known (a job submitted
        by another daemon with a per-connect image not named in this config)."""
        if job.image or not job.image_key:
            return job.image
        settings = self.settings()
        known = [p.container for p in settings.profiles.values()]
        for image in [*known, *settings.containers.images.values()]:
            if image and image_key(image) == job.image_key:
                return image
        return None

    # -- list --------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "job_id": j.job_id,
                "profile": j.profile,
                "state": j.state.value,
                "reason": j.reason,
                "node": j.node,
                "port": j.endpoint.port if j.endpoint else j.port,
                "ready": j.endpoint is not None,
                "sessions": len(j.leases),
                "direct_sessions": self.records.sessions(j.job_id)[0],
                "time_used": j.time_used,
                "time_left": j.time_left,
                "time_limit": j.time_limit,
                "partition": j.partition,
                "gres": j.gres,
                "submitted_here": j.submitted_here,
                "container": _shown(self.image_of(j), j.image_key),
                "image_key": j.image_key,
            }
            for j in sorted(self.table, key=lambda j: int(j.job_id))
            if j.live
        ]


def _shown(image: str | None, key: str) -> str:
    return f"(image key {key})" if image is None else image
