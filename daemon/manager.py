"""Sessions: leases on jobs, and the acquire flow (reuse or submit, single-flight per profile,
wait until ready, hold until the job ends). What is done to jobs in Slurm: jobcontrol.py."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

from islurm.config.images import image_key
from islurm.config.settings import Profile, Settings
from islurm.daemon import fallback, progress
from islurm.daemon.availability import Availability
from islurm.daemon.direct import SshClient
from islurm.daemon.errors import Code, RpcFault
from islurm.daemon.giveup import give_up
from islurm.daemon.jobcontrol import JobControl, Notify
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.progress import note, progress_params
from islurm.daemon.readiness import probe_until_ready, record_stands, still_listening
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.states import JobState
from islurm.daemon.spares import Spares
from islurm.daemon.watcher import Watcher

if TYPE_CHECKING:
    from trio.socket import SocketType

    #: Sends a notification with a socket attached (server.Connection.notify_with_socket).
    GiveSocket = Callable[[str, dict[str, object], SocketType], None]

log = structlog.get_logger("islurm.sessions")

HEARTBEAT = 30.0  # re-say "still waiting" this often while nothing changes
FINAL_STATE_WAIT = 2.5  # seconds to learn why a job ended before telling its sessions
CONFIRM_FRESH = 2.0  # seconds a TCP check vouches for a listening sshd (its record is re-read)
# A connect that waited this long asks what would start now (a sinfo): most jobs on a cluster
# with room start within Slurm's first scheduling pass, and their connects need no such call.
LOOK_AROUND_AFTER = 1.5
SHUTTING_DOWN_TEXT = "islurmd is shutting down (its clients retry against the next one)"


@dataclass(eq=False)
class Lease:
    """One open shim connection's claim on its profile's job."""

    id: str
    profile: str
    image: str | None = None  # the image asked for ("" = none); None: the profile's own
    job_id: str | None = None
    submitted: bool = False
    direct: bool = False  # ssh takes the socket (ProxyUseFdpass)
    client: SshClient | None = None  # that ssh, pinned: it holds the lease once handed over
    requested: str = ""  # the profile the client asked for (`profile` is what serves it)
    tried: set[str] = field(default_factory=set)  # profiles given up on (fallbacks)


class SessionManager:
    def __init__(
        self,
        settings: Callable[[], Settings],
        table: JobTable,
        records: RecordStore,
        watcher: Watcher,
        jobs: JobControl,
        avail: Availability | None = None,
    ) -> None:
        self.settings, self.table, self.records = settings, table, records
        self.watcher, self.jobs, self.avail = watcher, jobs, avail
        self.leases: dict[str, Lease] = {}
        self._locks: defaultdict[tuple[str, str], trio.Lock] = defaultdict(trio.Lock)
        self._ids = itertools.count(1)
        self._probes: trio.Nursery | None = None  # set while `run` runs
        self.draining = False  # TERM: no new sessions; waiting connects get their grace
        self.spares = Spares()  # a ready connection per job for the next fdpass connect
        self._waiting: set[trio.CancelScope] = set()
        self._none_waiting = trio.Event()
        self._none_waiting.set()

    # -- leases -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the readiness probes (one per job someone waits for) while the daemon serves."""
        async with trio.open_nursery() as probes:
            self._probes = probes
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._probes = None

    def _start_probe(self, job: Job) -> None:
        if self._probes is None:
            raise RuntimeError("SessionManager.run is not running: nothing can probe jobs")
        self._probes.start_soon(probe_until_ready, job, self.records, self.jobs.hook.ca_dir)

    def profile(self, name: str) -> Profile:
        profiles = self.settings().profiles
        if name not in profiles:
            known = ", ".join(sorted(profiles))
            raise RpcFault(Code.UNKNOWN_PROFILE, f"unknown profile {name!r}; known: {known}")
        return profiles[name]

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise RpcFault(Code.SHUTTING_DOWN, SHUTTING_DOWN_TEXT)

    @contextlib.contextmanager
    def _waiting_connect(self) -> Iterator[trio.CancelScope]:
        """Count a connect as waiting (fast polls; shutdown waits for it) while inside; the
        scope is what shutdown cancels."""
        stop = trio.CancelScope()
        self.watcher.waiting += 1
        self._waiting.add(stop)
        self._none_waiting = trio.Event() if self._none_waiting.is_set() else self._none_waiting
        try:
            yield stop
        finally:
            self.watcher.waiting -= 1
            self._waiting.discard(stop)
            if not self._waiting:
                self._none_waiting.set()

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

    def new_lease(self, profile: str, image: str | None = None) -> Lease:
        lease = Lease(
            id=f"L{os.getpid()}-{next(self._ids)}", profile=profile, image=image, requested=profile
        )
        self.leases[lease.id] = lease
        return lease

    def bind(self, lease: Lease, job: Job) -> None:
        if lease.job_id == job.job_id:
            return
        self._unbind(lease)
        lease.job_id = job.job_id
        job.bind(lease.id)

    def release_job(self, lease: Lease) -> None:
        """The lease stops holding its job (a fallback serves it instead)."""
        self._unbind(lease)

    def _unbind(self, lease: Lease) -> None:
        old = self.table.get(lease.job_id) if lease.job_id else None
        if old is not None and old.unbind(lease.id, trio.current_time()):
            self.watcher.wake()  # the reaper's next deadline moved; no Slurm call
        lease.job_id = None

    def release(self, lease_id: str) -> None:
        lease = self.leases.pop(lease_id, None)
        if lease is not None:
            self._unbind(lease)
            if lease.client is not None:
                lease.client.close()
                lease.client = None

    def spawn(self, work: Callable[..., Awaitable[None]], *args: object) -> bool:
        """Run `work` beside the probes while the daemon serves (False if it does not)."""
        if self._probes is None:
            return False
        self._probes.start_soon(work, *args)
        return True

    # -- acquire ----------------------------------------------------------------------------
    async def acquire(
        self,
        lease: Lease,
        notify: Notify,
        limit: float | None = None,
        extra: tuple[str, ...] = (),
        on_ready: Callable[[Job], Awaitable[None]] | None = None,
        give: GiveSocket | None = None,
    ) -> None:
        """Stream progress until the profile's job is ready, then hold the lease until it ends.
        `give`: the client takes a connected socket with `session.ready` (spares.py)."""
        profile = self.profile(lease.profile)
        limit = limit or profile.connect_timeout
        with self._waiting_connect() as stop:
            try:
                with stop, trio.move_on_after(limit) as scope:
                    job, ep = await self._wait_ready(lease, profile, notify, extra)
            except RpcFault as fault:
                log.info(
                    "acquire.failed",
                    profile=lease.profile,
                    job_id=lease.job_id,
                    error=fault.message,
                )
                notify("session.failed", fault.as_params(job_id=lease.job_id))
                return
            if stop.cancelled_caught:
                bye = RpcFault(Code.SHUTTING_DOWN, SHUTTING_DOWN_TEXT)
                notify("session.failed", bye.as_params(job_id=lease.job_id))
                return
            if scope.cancelled_caught:
                await give_up(self, lease, limit, notify)
                return
        if on_ready is not None:
            # Before "ready": a client may hang up as soon as it hears that.
            with trio.CancelScope(shield=True):
                await on_ready(job)
        if lease.direct and lease.client is None:
            job.direct_possible = True  # no ssh to hold by: idle reaping asks the job
        ready = progress.ready(job, ep, lease.id)
        if give is None:
            notify("session.ready", ready)
        else:
            spare = self.spares.take(ep)
            self.spawn(self.spares.fill, ep)  # the next connect's
            if spare is None:
                notify("session.ready", ready)
            else:
                log.info("session.spare_handed", lease=lease.id, job_id=job.job_id)
                give("session.ready", {**ready, "socket": True}, spare)
        await self._hold(lease, job, notify)

    async def attach(self, lease: Lease, job_id: str, notify: Notify) -> None:
        """A shim whose daemon restarted re-takes its lease on a running job."""
        await self.watcher.synced.wait()
        job = self.table.get(job_id)
        if job is not None and fallback.serves(self.settings(), lease.profile, job.profile):
            lease.profile = job.profile  # the session had been served by a fallback
        if job is None or not job.live or job.profile != lease.profile:
            state = job.state.value if job else "GONE"
            notify(
                "session.ended", progress.ended(job_id, state, f"job {job_id} is no longer running")
            )
            return
        self.bind(lease, job)
        await self._hold(lease, job, notify)

    async def _hold(self, lease: Lease, job: Job, notify: Notify) -> None:
        while job.live:
            await job.wait_changed()
        why = await self.end_text(job)
        notify("session.ended", progress.ended(job.job_id, job.state.value, why))

    async def end_text(self, job: Job) -> str:
        """Why an ended job's sessions are over."""
        # COMPLETING says only that the job is ending; the user wants to know why (cancelled,
        # timed out, node failure): look again briefly for the final state.
        with trio.move_on_after(FINAL_STATE_WAIT):
            while job.state is JobState.COMPLETING:
                self.watcher.kick()
                with trio.move_on_after(0.5):
                    await job.wait_changed()
        return f"job {job.job_id} ({job.profile}) {job.state.describe_end()}; the session is over"

    def report_unreachable(self, job_id: str, host: str, port: int) -> None:
        """A shim could not connect to the endpoint it was given: never hand it out again."""
        job = self.table.get(job_id)
        if job is None or job.endpoint is None:
            return
        if (job.endpoint.host, job.endpoint.port) == (host, port):
            log.info("job.endpoint_unreachable", job_id=job_id, host=host, port=port)
            job.mark_stale()

    async def _wait_ready(
        self, lease: Lease, profile: Profile, notify: Notify, extra: tuple[str, ...] = ()
    ) -> tuple[Job, Endpoint]:
        t0 = trio.current_time()
        said: tuple[tuple[object, ...], float] = ((), -HEARTBEAT)  # (what was said, when)
        kicked = False  # a ready job needs no Slurm call; one that makes us wait does
        looked = False  # asked what would start now (once this connect has waited a while)
        while True:
            job = await self._job_for(lease, profile, notify, extra)
            self.bind(lease, job)
            endpoint = job.endpoint
            if endpoint is not None:
                # The record is read every time (a stat and a small read): the hook removes it
                # as soon as the job is told to end. The TCP re-check is shared by a burst;
                # a spare connection that still stands vouches as well (spares.py).
                if record_stands(job, endpoint, self.records) and (
                    trio.current_time() - job.confirmed_at < CONFIRM_FRESH
                    or self.spares.vouches(endpoint)
                    or await still_listening(endpoint)
                ):
                    job.mark_confirmed(trio.current_time())
                    return job, endpoint
                if job.endpoint is endpoint:
                    log.info("job.endpoint_stale", job_id=job.job_id)
                    job.mark_stale()
                continue
            if job.take_suspicion():
                # Its sshd went away: the job is probably ending. Learn that from Slurm before
                # saying anything about it (never describe a job that already ended).
                await self.watcher.fresh_poll()
                continue
            if job.hook_error and job.served:
                # Its sshd served and then died: the job is ending and cannot serve again.
                log.info("job.sshd_gone", job_id=job.job_id, error=job.hook_error)
                await self.jobs.cancel_jobs([job], why="its sshd exited")
                continue
            if job.hook_error:
                raise RpcFault(Code.HOOK_FAILED, f"job {job.job_id}: {job.hook_error}")
            if not job.probing:
                self._start_probe(job)
            now = trio.current_time()
            view = self.avail.view if self.avail else None
            target = fallback.choose(profile, job, now - t0, view, lease.tried)
            if target:
                profile = await fallback.switch(self, lease, job, profile, target, now - t0, notify)
                continue
            params = progress_params(job, self.watcher.error, now - t0, view, profile.fallbacks)
            key = (
                *(params[k] for k in ("job_id", "state", "reason", "estimated_start")),
                tuple(params["starts_now"]),
                self.watcher.error,
            )
            if key != said[0] or now - said[1] >= HEARTBEAT:
                said = (key, now)
                notify("session.progress", params)
            if not kicked:
                kicked = True
                self.watcher.kick()
            limit = fallback.wait_limit(profile, now - t0, HEARTBEAT)
            if not looked and self.avail is not None:
                if now - t0 >= LOOK_AROUND_AFTER:
                    looked = True
                    self.avail.wake()
                else:
                    limit = min(limit, t0 + LOOK_AROUND_AFTER - now)
            with trio.move_on_after(limit):
                await job.wait_changed()

    async def _job_for(
        self, lease: Lease, profile: Profile, notify: Notify, extra: tuple[str, ...] = ()
    ) -> Job:
        image = profile.container if lease.image is None else lease.image
        key = image_key(image)  # one job per (profile, image)
        bound = self.table.get(lease.job_id) if lease.job_id else None
        current = self.table.current(profile.name, key)
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
        async with self._locks[profile.name, key]:  # single-flight per profile and image
            current = self.table.current(profile.name, key)
            if current is not None:
                return current
            job = await self.jobs.submit(f"submit:{lease.id}", profile, notify, extra, image)
            lease.submitted = True
            return job

    async def _until_synced(self, notify: Notify) -> None:
        said = None
        while not self.watcher.synced.is_set():
            message = self.watcher.error or "asking Slurm for your jobs"
            if message != said:
                said = message
                notify("session.progress", note(message))
            with trio.move_on_after(1):
                await self.watcher.synced.wait()
