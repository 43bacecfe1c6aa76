"""The one Slurm poll loop for all of the user's islurm jobs.

Fast (sub-second) while a connect waits, slow when idle; a failed poll keeps the last known
state and says why. Idle reaping and walltime-warning logs run on the same tick."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import structlog
import trio

from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.records import RecordStore
from islurm.daemon.slurm.client import (
    SlurmClient,
    SlurmError,
    SlurmOutputError,
    SlurmUnreachable,
)
from islurm.daemon.slurm.parse import SlurmParseError, SqueueRow, parse_slurm_duration

log = structlog.get_logger("islurm.watcher")

RECORD_WATCH = 2.0  # seconds between stats of running jobs' records while nobody waits
SLOW_POLL = 3.0  # squeue takes milliseconds; this long without an answer is worth saying
SLOW_TEXT = (
    f"Slurm has not answered for over {SLOW_POLL:.0f} s (controller unreachable or overloaded?)"
)


class Watcher:
    def __init__(
        self,
        slurm: SlurmClient,
        table: JobTable,
        records: RecordStore,
        poll_busy: float,
        poll_idle: float,
        idle_grace: Callable[[str], float],
        on_idle: Callable[[Job], Awaitable[None]],
        on_duplicate: Callable[[list[Job]], Awaitable[None]] | None = None,
        on_adopt: Callable[[Job], None] | None = None,
    ) -> None:
        self.slurm, self.table, self.records = slurm, table, records
        self.poll_busy, self.poll_idle = poll_busy, poll_idle
        self.idle_grace, self.on_idle = idle_grace, on_idle
        self.on_duplicate, self.on_adopt = on_duplicate, on_adopt
        self.waiting = 0
        self.error: str | None = None
        self.polls = 0
        self.last_poll: float | None = None
        self.synced = trio.Event()
        self._kick = trio.Event()
        self._poll_wanted = False
        self._poll_started: float | None = None
        self._finished_gen = 0  # the generation of the last poll that ended, answered or not
        self._finished = trio.Event()

    def kick(self) -> None:
        """Poll soon (someone started waiting, or something changed in Slurm)."""
        self._poll_wanted = True
        self._kick.set()

    def wake(self) -> None:
        """Recompute deadlines (a lease was released) without asking Slurm anything."""
        self._kick.set()

    def _poll_ended(self, generation: int) -> None:
        self._finished_gen = max(self._finished_gen, generation)
        self._finished.set()
        self._finished = trio.Event()

    async def fresh_poll(self, limit: float = SLOW_POLL) -> None:
        """Ask Slurm now and wait (at most `limit`) until a poll begun after this call has
        ended: what the table says afterwards is not older than the call."""
        wanted = self.table.generation + 1
        self.kick()
        with trio.move_on_after(limit):
            while self._finished_gen < wanted:
                await self._finished.wait()

    def status(self) -> dict[str, object]:
        return {
            "polls": self.polls,
            "slurm_calls": getattr(self.slurm, "calls", None),
            "waiting": self.waiting,
            "error": self.error,
            "seconds_since_poll": None
            if self.last_poll is None
            else round(trio.current_time() - self.last_poll, 1),
            "interval": self.poll_busy if self.waiting else self.poll_idle,
        }

    async def poll_once(self) -> None:
        self.polls += 1
        generation = self.table.begin_poll()
        self._poll_started = trio.current_time()
        try:
            rows = await self.slurm.query()
        except SlurmUnreachable as exc:
            self._failed(f"Slurm controller unreachable: {exc.message}")
            self._poll_ended(generation)
            return
        except (SlurmOutputError, SlurmParseError) as exc:
            # A garbled line is a failed poll: reading half an answer could end live jobs.
            self._failed(f"squeue answered what islurm cannot read: {exc}", raw=exc.raw)
            self._poll_ended(generation)
            return
        except SlurmError as exc:
            self._failed(f"squeue failed: {exc.message}")
            self._poll_ended(generation)
            return
        finally:
            self._poll_started = None
        try:
            self._apply(rows, generation)
        finally:
            self._poll_ended(generation)

    def _apply(self, rows: list[SqueueRow], generation: int) -> None:
        if self.error:
            log.info("watcher.recovered", was=self.error)
        self.error = None
        self.last_poll = trio.current_time()
        adopted, ended = self.table.apply(rows, generation)
        for job in adopted:
            record = self.records.read(job.job_id)
            job.mark_adopted(trio.current_time(), record.port if record else None)
            job.has_record = record is not None
            if self.on_adopt is not None:
                self.on_adopt(job)
            log.info("job.adopted", job_id=job.job_id, profile=job.profile, state=job.state.value)
        for job in ended:
            log.info("job.ended", job_id=job.job_id, profile=job.profile, state=job.state.value)
            job.mark_ended(self.records.read_error(job.job_id))
            self.records.remove(job.job_id)
        self.synced.set()

    def duplicates(self) -> list[Job]:
        """Live jobs of a profile beside the one in use (two daemons raced, or a restart).

        Their waiters are woken to move to the profile's current job; those that nobody holds
        and that are not running are returned for cancelling. A running duplicate is left to
        idle reaping: someone may be inside it."""
        spare = []
        for profile, key in {(j.profile, j.image_key) for j in self.table if j.live}:
            for dup in self.table.live_for(profile, key)[1:]:
                dup.touch()
                if not dup.leases and not dup.state.is_running:
                    spare.append(dup)
        return spare

    def _failed(self, why: str, raw: str | None = None) -> None:
        if why != self.error:
            extra = {} if raw is None else {"raw": raw}
            log.warning("watcher.poll_failed", error=why, **extra)
        self.error = why
        for job in self.table:
            if job.live and job.leases:
                job.touch()  # waiters tell their users why nothing moves

    def _next_deadline(self, now: float) -> float:
        """When the next idle job's grace runs out (inf if none)."""
        deadline = math.inf
        for job in self.table:
            grace = self.idle_grace(job.profile)
            if job.live and not job.leases and job.idle_since is not None and grace > 0:
                deadline = min(deadline, job.idle_since + grace)
        return deadline

    async def reap_idle(self) -> None:
        now = trio.current_time()
        for job in self.table:
            if job.live and not job.leases and job.direct_sessions:
                # Sessions without a relay (ProxyUseFdpass) hold no lease: the job says how
                # many it has (a small read each pass while it has some).
                job.saw_direct_sessions(self.records.sessions(job.job_id)[0], now)
                continue
            idle = job.idle_for(now)
            grace = self.idle_grace(job.profile)
            if idle is None or grace <= 0 or idle < grace:
                continue
            direct = self.records.sessions(job.job_id)[0] if job.direct_possible else 0
            if direct:
                job.saw_direct_sessions(direct, now)
                continue
            log.info(
                "job.idle_reaped",
                job_id=job.job_id,
                profile=job.profile,
                idle_seconds=round(idle, 1),
                grace=grace,
            )
            job.mark_reaped()
            await self.on_idle(job)

    def log_walltime(self, leads: Callable[[str], tuple[float, ...]]) -> None:
        for job in self.table:
            left = parse_slurm_duration(job.time_left) if job.state.is_running else None
            if left is None:
                continue
            for lead in leads(job.profile):
                if left <= lead and lead not in job.warned:
                    job.warned.add(lead)
                    log.info(
                        "job.walltime_warning", job_id=job.job_id, seconds_left=left, lead=lead
                    )

    async def _watchdog(self) -> None:
        """Say so when Slurm takes long to answer: its clients retry for a long while when the
        controller is down, and a user waiting on a silent terminal deserves to know why."""
        while True:
            await trio.sleep(1.0)
            started = self._poll_started
            if started is None:
                continue
            if trio.current_time() - started >= SLOW_POLL and self.error != SLOW_TEXT:
                self._failed(SLOW_TEXT)

    async def run(
        self,
        leads: Callable[[str], tuple[float, ...]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            await self._loop(leads, task_status)

    def _records_gone(self) -> bool:
        """Whether a running job's readiness record went since the last look (a stat each):
        the hook removes it as soon as the job is told to end, so this is how job ends are
        learned without asking Slurm while nobody waits."""
        gone = False
        for job in self.table:
            if job.live and job.has_record and not self.records.exists(job.job_id):
                log.info("job.record_gone", job_id=job.job_id)
                job.has_record = False
                gone = True
        return gone

    async def _loop(
        self, leads: Callable[[str], tuple[float, ...]], task_status: trio.TaskStatus[None]
    ) -> None:
        await self.poll_once()
        polled_at = trio.current_time()
        task_status.started()
        while True:
            # While someone waits: fast polls. Otherwise only the safety poll (poll_idle) and
            # a stat of each running job's record every RECORD_WATCH seconds.
            interval = self.poll_busy if self.waiting else self.poll_idle
            if self.error:
                interval = min(max(interval, 2.0), 10.0)  # back off, but keep trying
            poll_at = polled_at + interval
            now = trio.current_time()
            wake = min(poll_at, self._next_deadline(now))
            if any(j.live and (j.has_record or j.direct_sessions) for j in self.table):
                wake = min(wake, now + RECORD_WATCH)
            with trio.move_on_after(max(0.0, wake - now)):
                await self._kick.wait()
            if self._kick.is_set():
                self._kick = trio.Event()
            if self._records_gone():
                self._poll_wanted = True
            if self._poll_wanted:
                self._poll_wanted = False
                # A kick polls soon, but never faster than the busy interval.
                poll_at = min(poll_at, polled_at + self.poll_busy)
                await trio.sleep(max(0.0, poll_at - trio.current_time()))
            await self.reap_idle()
            if trio.current_time() >= poll_at:
                await self.poll_once()
                polled_at = trio.current_time()
                self.log_walltime(leads)
                spare = self.duplicates()
                if spare and self.on_duplicate is not None:
                    await self.on_duplicate(spare)
