"""Session lifecycles: acquire (reuse or submit, single-flight), leases, cancel, idle reaping."""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from islurm.config import paths
from islurm.config.settings import Profile, Settings
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.ports import PortPool
from islurm.daemon.progress import note, progress_params
from islurm.daemon.readiness import probe_until_ready, record_stands, still_listening
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.client import SlurmClient, SlurmError, SlurmUnreachable
from islurm.daemon.slurm.parse import time_limit_of
from islurm.daemon.slurm.states import JobState
from islurm.daemon.slurm.submission import HookCommand, job_script, sbatch_options
from islurm.daemon.watcher import Watcher

log = structlog.get_logger("islurm.sessions")

HEARTBEAT = 30.0  # re-say "still waiting" this often while nothing changes
FINAL_STATE_WAIT = 2.5  # seconds to learn why a job ended before telling its sessions
CONFIRM_FRESH = 2.0  # seconds a TCP check vouches for a listening sshd (its record is re-read)
SUBMIT_RETRY = 2.0
SHUTTING_DOWN_TEXT = "islurmd is shutting down (its clients retry against the next one)"


class Notify(Protocol):
    def __call__(self, method: str, params: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class Lease:
    """One open shim connection's claim on its profile's job."""

    id: str
    profile: str
    job_id: str | None = None
    submitted: bool = False


@dataclass(frozen=True)
class HookSetup:
    python: str
    state_dir: str
    workdir: str
    ca_dir: str | None = None


class SessionManager:
    def __init__(
        self,
        settings: Callable[[], Settings],
        slurm: SlurmClient,
        table: JobTable,
        records: RecordStore,
        ports: PortPool,
        watcher: Watcher,
        hook: HookSetup,
    ) -> None:
        self.settings, self.slurm, self.table = settings, slurm, table
        self.records, self.ports, self.watcher, self.hook = records, ports, watcher, hook
        self.leases: dict[str, Lease] = {}
        self._locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._ids = itertools.count(1)
        self.nursery: trio.Nursery | None = None
        self.submissions = 0
        self.draining = False  # TERM: no new sessions; waiting connects get their grace
        self._waiting: set[trio.CancelScope] = set()
        self._none_waiting = trio.Event()
        self._none_waiting.set()

    # -- leases -----------------------------------------------------------------------------
    def profile(self, name: str) -> Profile:
        profiles = self.settings().profiles
        if name not in profiles:
            known = ", ".join(sorted(profiles))
            raise RpcFault(Code.UNKNOWN_PROFILE, f"unknown profile {name!r}; known: {known}")
        return profiles[name]

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise RpcFault(Code.SHUTTING_DOWN, SHUTTING_DOWN_TEXT)

    async def until_none_waiting(self) -> None:
        """Return once no connect waits for its job (all ready or failed)."""
        while self._waiting:
            await self._none_waiting.wait()

    def stop_waiting(self) -> int:
        """Shutdown: end every connect still waiting; each tells its client SHUTTING_DOWN.
        Jobs stay: the next daemon adopts them. Sessions already connected are untouched."""
        for scope in self._waiting:
            scope.cancel()
        return len(self._waiting)

    def new_lease(self, profile: str) -> Lease:
        lease = Lease(id=f"L{os.getpid()}-{next(self._ids)}", profile=profile)
        self.leases[lease.id] = lease
        return lease

    def _bind(self, lease: Lease, job: Job) -> None:
        if lease.job_id == job.job_id:
            return
        self._unbind(lease)
        lease.job_id = job.job_id
        job.leases.add(lease.id)
        job.idle_since = None

    def _unbind(self, lease: Lease) -> None:
        old = self.table.get(lease.job_id) if lease.job_id else None
        if old is not None:
            old.leases.discard(lease.id)
            if not old.leases:
                old.idle_since = trio.current_time()
                self.watcher.wake()  # the reaper's next deadline moved; no Slurm call
        lease.job_id = None

    def release(self, lease_id: str) -> None:
        lease = self.leases.pop(lease_id, None)
        if lease is not None:
            self._unbind(lease)

    # -- acquire ----------------------------------------------------------------------------
    async def acquire(
        self,
        lease: Lease,
        notify: Notify,
        limit: float | None = None,
        extra: tuple[str, ...] = (),
        on_ready: Callable[[Job], Awaitable[None]] | None = None,
    ) -> None:
        """Stream progress until the profile's job is ready, then hold the lease until it ends."""
        profile = self.profile(lease.profile)
        limit = limit or profile.connect_timeout
        self.watcher.waiting += 1
        stop = trio.CancelScope()
        self._waiting.add(stop)
        if self._none_waiting.is_set():
            self._none_waiting = trio.Event()
        try:
            with stop, trio.move_on_after(limit) as scope:
                job, ep = await self._wait_ready(lease, profile, notify, extra)
            if stop.cancelled_caught:
                notify(
                    "session.failed",
                    {
                        "code": int(Code.SHUTTING_DOWN),
                        "message": SHUTTING_DOWN_TEXT,
                        "job_id": lease.job_id,
                    },
                )
                return
            if scope.cancelled_caught:
                await self._give_up(lease, limit, notify)
                return
        except RpcFault as fault:
            log.info(
                "acquire.failed", profile=lease.profile, job_id=lease.job_id, error=fault.message
            )
            notify("session.failed", fault.as_params(job_id=lease.job_id))
            return
        finally:
            self.watcher.waiting -= 1
            self._waiting.discard(stop)
            if not self._waiting:
                self._none_waiting.set()
        if on_ready is not None:
            # Before "ready": a client may hang up as soon as it hears that.
            with trio.CancelScope(shield=True):
                await on_ready(job)
        notify(
            "session.ready",
            {
                "job_id": job.job_id,
                "node": ep.node,
                "host": ep.host,
                "port": ep.port,
                "lease": lease.id,
            },
        )
        await self._hold(lease, job, notify)

    async def attach(self, lease: Lease, job_id: str, notify: Notify) -> None:
        """A shim whose daemon restarted re-takes its lease on a running job."""
        await self.watcher.synced.wait()
        job = self.table.get(job_id)
        if job is None or not job.live or job.profile != lease.profile:
            notify(
                "session.ended",
                {
                    "code": int(Code.JOB_ENDED),
                    "job_id": job_id,
                    "state": job.state.value if job else "GONE",
                    "message": f"job {job_id} is no longer running",
                },
            )
            return
        self._bind(lease, job)
        await self._hold(lease, job, notify)

    async def _hold(self, lease: Lease, job: Job, notify: Notify) -> None:
        while job.live:
            await job.wait_changed()
        # COMPLETING says only that the job is ending; the user wants to know why (cancelled,
        # timed out, node failure): look again briefly for the final state.
        with trio.move_on_after(FINAL_STATE_WAIT):
            while job.state is JobState.COMPLETING:
                self.watcher.kick()
                with trio.move_on_after(0.5):
                    await job.wait_changed()
        notify(
            "session.ended",
            {
                "code": int(Code.JOB_ENDED),
                "job_id": job.job_id,
                "state": job.state.value,
                "message": f"job {job.job_id} ({job.profile}) {job.state.describe_end()}; "
                "the session is over",
            },
        )

    def report_unreachable(self, job_id: str, host: str, port: int) -> None:
        """A shim could not connect to the endpoint it was given: never hand it out again."""
        job = self.table.get(job_id)
        if job is None or job.endpoint is None:
            return
        if (job.endpoint.host, job.endpoint.port) == (host, port):
            log.info("job.endpoint_unreachable", job_id=job_id, host=host, port=port)
            job.suspect = True
            job.mark_stale()

    async def _wait_ready(
        self, lease: Lease, profile: Profile, notify: Notify, extra: tuple[str, ...] = ()
    ) -> tuple[Job, Endpoint]:
        t0 = trio.current_time()
        said: tuple[tuple[object, ...], float] = ((), -HEARTBEAT)  # (what was said, when)
        kicked = False  # a ready job needs no Slurm call; one that makes us wait does
        while True:
            job = await self._job_for(lease, profile, notify, extra)
            self._bind(lease, job)
            endpoint = job.endpoint
            if endpoint is not None:
                # The record is read every time (a stat and a small read): the hook removes it
                # as soon as the job is told to end. The TCP re-check is shared by a burst.
                if record_stands(job, endpoint, self.records) and (
                    trio.current_time() - job.confirmed_at < CONFIRM_FRESH
                    or await still_listening(endpoint)
                ):
                    job.confirmed_at = max(job.confirmed_at, trio.current_time())
                    return job, endpoint
                if job.endpoint is endpoint:
                    log.info("job.endpoint_stale", job_id=job.job_id)
                    job.suspect = True
                    job.mark_stale()
                continue
            if job.suspect:
                # Its sshd went away: the job is probably ending. Learn that from Slurm before
                # saying anything about it (never describe a job that already ended).
                job.suspect = False
                await self.watcher.fresh_poll()
                continue
            if job.hook_error and job.served:
                # Its sshd served and then died: the job is ending and cannot serve again.
                log.info("job.sshd_gone", job_id=job.job_id, error=job.hook_error)
                await self.cancel_jobs([job], why="its sshd exited")
                continue
            if job.hook_error:
                raise RpcFault(Code.HOOK_FAILED, f"job {job.job_id}: {job.hook_error}")
            if not job.probing and self.nursery is not None:
                self.nursery.start_soon(probe_until_ready, job, self.records, self.hook.ca_dir)
            now = trio.current_time()
            params = progress_params(job, self.watcher.error, now - t0)
            key = (
                params["job_id"],
                params["state"],
                params["reason"],
                params["start_time"],
                self.watcher.error,
            )
            if key != said[0] or now - said[1] >= HEARTBEAT:
                said = (key, now)
                notify("session.progress", params)
            if not kicked:
                kicked = True
                self.watcher.kick()
            with trio.move_on_after(HEARTBEAT):
                await job.wait_changed()

    async def _job_for(
        self, lease: Lease, profile: Profile, notify: Notify, extra: tuple[str, ...] = ()
    ) -> Job:
        bound = self.table.get(lease.job_id) if lease.job_id else None
        current = self.table.current(profile.name)
        if bound is not None and bound is current:
            return bound
        if bound is not None and bound.hook_error and not bound.served:
            raise RpcFault(Code.HOOK_FAILED, f"job {bound.job_id}: {bound.hook_error}")
        if bound is not None and not bound.live and lease.submitted and current is None:
            raise RpcFault(
                Code.JOB_ENDED,
                f"job {bound.job_id} ({profile.name}) {bound.state.describe_end()}"
                + (f" (reason: {bound.reason})" if bound.reason not in ("", "None") else ""),
                {"job_id": bound.job_id, "state": bound.state.value},
            )
        await self._until_synced(notify)
        async with self._locks[profile.name]:  # single-flight per profile
            current = self.table.current(profile.name)
            if current is not None:
                return current
            return await self._submit(lease, profile, notify, extra)

    async def _until_synced(self, notify: Notify) -> None:
        said = None
        while not self.watcher.synced.is_set():
            message = self.watcher.error or "asking Slurm for your jobs"
            if message != said:
                said = message
                notify("session.progress", note(message))
            with trio.move_on_after(1):
                await self.watcher.synced.wait()

    async def _submit(
        self, lease: Lease, profile: Profile, notify: Notify, extra: tuple[str, ...] = ()
    ) -> Job:
        holder = f"submit:{lease.id}"
        port = self.ports.lease(holder)
        options = sbatch_options(
            profile,
            log_path=os.path.join(paths.log_dir(self.hook.state_dir), "job-%j.log"),
            workdir=self.hook.workdir,
            extra=extra,
        )
        script = job_script(
            HookCommand(
                python=self.hook.python,
                state_dir=self.hook.state_dir,
                port_lease=port,
                profile=profile.name,
                walltime_warnings=profile.walltime_warnings,
                time_limit=time_limit_of([*profile.sbatch, *extra]),
            )
        )
        notify("session.progress", note(f"submitting a job for profile {profile.name}"))
        try:
            job_id = await self._sbatch(profile, options, script, notify)
        except BaseException:
            self.ports.release(holder)  # rejected, cancelled or timed out: the port is free
            raise
        self.ports.rename(holder, job_id)
        job = self.table.add(
            Job(job_id=job_id, profile=profile.name, submitted_here=True, port=port)
        )
        lease.submitted = True
        log.info("job.submitted", job_id=job_id, profile=profile.name, port=port, options=options)
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

    async def _give_up(self, lease: Lease, limit: float, notify: Notify) -> None:
        job = self.table.get(lease.job_id) if lease.job_id else None
        message = f"gave up after {limit:.0f} s (connect_timeout)"
        if job is not None and lease.submitted and job.leases <= {lease.id} and job.live:
            with trio.CancelScope(shield=True):
                await self.cancel_jobs([job], why="connect timeout")
            message += f"; cancelled job {job.job_id}, which this connect had submitted"
        elif job is not None:
            message += f"; job {job.job_id} stays queued for its other users"
        notify(
            "session.failed",
            {"code": int(Code.CONNECT_TIMEOUT), "message": message, "job_id": lease.job_id},
        )

    # -- cancel, list ----------------------------------------------------------------------
    async def cancel(self, target: str) -> list[str]:
        live = [j for j in self.table if j.live]
        if target == "--all":
            jobs = live
        elif target.isdigit():
            jobs = [j for j in live if j.job_id == target]
            if not jobs:
                raise RpcFault(Code.NOT_FOUND, f"no running islurm job {target}")
        else:
            self.profile(target)
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

    async def cancel_duplicates(self, jobs: list[Job]) -> None:
        """Watcher callback: spare jobs of a profile that already has one in use."""
        try:
            await self.cancel_jobs(jobs, why="duplicate")
        except RpcFault as fault:
            log.warning("job.duplicate_cancel_failed", error=fault.message)

    def adopt(self, job: Job) -> None:
        """Watcher callback: a job found in Slurm keeps the port its record names."""
        if job.port is not None:
            self.ports.adopt(job.port, job.job_id)

    async def reap(self, job: Job) -> None:
        """Watcher callback: the job had no lease for its idle grace."""
        try:
            await self.cancel_jobs([job], why="idle")
        except RpcFault as fault:
            log.warning("job.reap_failed", job_id=job.job_id, error=fault.message)

    def describe(self) -> list[dict[str, Any]]:
        profiles = self.settings().profiles
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
                "time_used": j.time_used,
                "time_left": j.time_left,
                "time_limit": j.time_limit,
                "partition": j.partition,
                "gres": j.gres,
                "submitted_here": j.submitted_here,
                "container": profiles[j.profile].container if j.profile in profiles else "",
            }
            for j in sorted(self.table, key=lambda j: int(j.job_id))
            if j.live
        ]
