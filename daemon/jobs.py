"""The daemon's picture of the user's islurm jobs, rebuilt from Slurm on every poll."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from islurm.config.records import Record
from islurm.daemon.records import Endpoint
from islurm.daemon.slurm.parse import SqueueRow, parse_slurm_duration
from islurm.daemon.slurm.states import JobState

#: seconds before its time limit at which a job is no longer handed out to new sessions
ENDING_SOON = 15.0


def _seconds_left(row: SqueueRow) -> float | None:
    """Slurm's time left; past the limit (while Slurm has yet to end the job) squeue may print
    INVALID there, so the limit minus the time used counts too."""
    left = parse_slurm_duration(row.time_left)
    limit, used = parse_slurm_duration(row.time_limit), parse_slurm_duration(row.time_used)
    by_use = None if limit is None or used is None else limit - used
    known = [s for s in (left, by_use) if s is not None]
    return float(min(known)) if known else None


@dataclass(eq=False)
class Job:
    job_id: str
    profile: str
    image_key: str = ""  # islurm.config.images.image_key of the image it runs; "" = none
    image: str = ""  # that image, when this daemon knows it (it submitted the job)
    state: JobState = JobState.PENDING
    reason: str = ""
    node: str = ""
    start_time: str = ""
    time_used: str = ""
    time_left: str = ""
    time_limit: str = ""
    partition: str = ""
    gres: str = ""
    port: int | None = None
    endpoint: Endpoint | None = None
    confirmed_at: float = -1e9  # trio time of the last good banner check
    hook_error: str | None = None
    submitted_here: bool = False
    leases: set[str] = field(default_factory=set)
    idle_since: float | None = None
    probing: bool = False
    #: its endpoint failed a check: ask Slurm before saying anything more about it
    suspect: bool = False
    ends_at: float | None = None  # trio time its limit is reached, while it runs
    served: bool = False  # its sshd was ready once: a later hook error means it is ending
    direct_sessions: int = 0  # sessions without a lease, as the job last reported them
    direct_possible: bool = False  # a session was handed to ssh without a relay
    has_record: bool = False  # its readiness record was seen: its going means the job ends
    refused_record: Record | None = None  # the last record ignored (said once in the log)
    warned: set[float] = field(default_factory=set)
    #: the table's poll generation when this job was added; polls begun before it cannot see it
    added_gen: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    def touch(self) -> None:
        """Wake everyone waiting on this job."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    @property
    def live(self) -> bool:
        return not self.state.is_ended

    # -- named transitions: the only places that change readiness ------------------------
    def mark_ready(self, endpoint: Endpoint, now: float) -> None:
        """Its sshd answered: hand this endpoint out while its record stands. A job the last
        poll saw PENDING or CONFIGURING runs now (its hook wrote the record from inside it):
        said so here, since no poll may come while nobody waits (`list` would say PENDING)."""
        self.endpoint = endpoint
        self.confirmed_at = now
        self.served = self.has_record = True
        self.node = self.node or endpoint.node
        if self.state in (JobState.PENDING, JobState.CONFIGURING):
            self.state, self.reason = JobState.RUNNING, "None"
        self.touch()

    def mark_confirmed(self, now: float) -> None:
        """Its endpoint answered a check just now."""
        self.confirmed_at = max(self.confirmed_at, now)

    def mark_stale(self) -> None:
        """Its endpoint stopped answering or its record went: never hand it out again, and
        ask Slurm before saying anything more about it (it is probably ending)."""
        self.endpoint = None
        self.confirmed_at = -1e9
        self.suspect = True
        self.touch()

    def take_suspicion(self) -> bool:
        """Whether it was marked stale since the last call (then Slurm is to be asked)."""
        was, self.suspect = self.suspect, False
        return was

    def bind(self, lease_id: str) -> None:
        """A session holds it: not idle."""
        self.leases.add(lease_id)
        self.idle_since = None

    def unbind(self, lease_id: str, now: float) -> bool:
        """A session let go; True when that was the last one (its idle time starts now)."""
        if lease_id not in self.leases:
            return False
        self.leases.discard(lease_id)
        if self.leases:
            return False
        self.idle_since = now
        return True

    def mark_adopted(self, now: float, port: int | None) -> None:
        """Found in Slurm (a daemon restart): idle from now, on the port its record names."""
        self.idle_since = now
        self.port = port if port is not None else self.port

    def mark_ended(self, hook_error: str | None) -> None:
        """Slurm says it ended; keep the hook's last words for whoever asks why."""
        self.hook_error = self.hook_error or hook_error

    def idle_for(self, now: float) -> float | None:
        """Seconds without a session (its idle clock starts at the first look), None if held."""
        if self.leases or not self.live:
            return None
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since

    def saw_direct_sessions(self, count: int, now: float) -> None:
        """The job reports `count` sessions that hold no lease (ProxyUseFdpass): not idle
        while it has some; its idle time starts when they are seen gone."""
        self.direct_sessions = count
        self.idle_since = None if count else now

    def mark_reaped(self) -> None:
        self.idle_since = None

    def mark_hook_failed(self, message: str) -> None:
        """The session hook could not start sshd (its own words)."""
        self.hook_error = message
        self.touch()

    def mark_cancelled(self) -> None:
        """Slurm took our cancel: whatever the next poll says, this job is not handed out."""
        self.state = JobState.CANCELLED
        self.endpoint = None
        self.touch()

    def ending_soon(self, now: float) -> bool:
        """Its time limit is so close that a new session would be cut at once: not handed
        out (a reconnect gets a new job instead)."""
        return self.ends_at is not None and self.ends_at - now < ENDING_SOON

    def update_from(self, row: SqueueRow) -> bool:
        """Take Slurm's view; return whether anything a waiter cares about changed."""
        before = (self.state, self.reason, self.node, self.start_time)
        self.state, self.reason, self.node = row.state, row.reason, row.nodes
        self.start_time, self.time_used, self.time_left = (
            row.start_time,
            row.time_used,
            row.time_left,
        )
        self.time_limit, self.partition, self.gres = row.time_limit, row.partition, row.gres
        self.ends_at = None
        if row.state.is_running:
            left = _seconds_left(row)
            self.ends_at = None if left is None else trio.current_time() + left
        return before != (self.state, self.reason, self.node, self.start_time)


class JobTable:
    """Jobs by id. Slurm is the source of truth: `apply` reconciles with one squeue answer."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self.generation = 0

    def begin_poll(self) -> int:
        """Call before asking Slurm; pass the result to `apply` with the answer."""
        self.generation += 1
        return self.generation

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def add(self, job: Job) -> Job:
        job.added_gen = self.generation
        self._jobs[job.job_id] = job
        return job

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def live_for(self, profile: str, image_key: str = "") -> list[Job]:
        """Live jobs of a profile running the image of that key, the one to use first: running
        before waiting, then oldest; a job about to reach its time limit last."""
        now = trio.current_time()
        jobs = [
            j
            for j in self._jobs.values()
            if j.profile == profile and j.image_key == image_key and j.live
        ]
        return sorted(
            jobs, key=lambda j: (j.ending_soon(now), not j.state.is_running, int(j.job_id))
        )

    def current(self, profile: str, image_key: str = "") -> Job | None:
        """The job a connect to `profile` with that image uses; None: submit one."""
        jobs = self.live_for(profile, image_key)
        if not jobs or jobs[0].ending_soon(trio.current_time()):
            return None
        return jobs[0]

    def apply(self, rows: list[SqueueRow], generation: int) -> tuple[list[Job], list[Job]]:
        """Reconcile with the rows of the poll begun as `generation`.
        Returns (adopted jobs, jobs that just ended)."""
        seen: set[str] = set()
        adopted: list[Job] = []
        ended: list[Job] = []
        for row in rows:
            profile = row.profile
            if profile is None:
                continue
            seen.add(row.job_id)
            job = self._jobs.get(row.job_id)
            if job is None:
                if row.state.is_ended:
                    continue  # an old job we never knew: nothing to do
                job = self.add(Job(job_id=row.job_id, profile=profile, image_key=row.image_key))
                adopted.append(job)
            was_live = job.live
            if not was_live and not row.state.is_ended:
                continue  # ended here (we cancelled it): jobs never come back (--no-requeue)
            if job.update_from(row):
                job.touch()
            if was_live and not job.live:
                ended.append(job)
        for job in list(self._jobs.values()):
            # A job submitted while this poll was under way may be missing from its answer.
            if job.job_id not in seen and job.live and job.added_gen < generation:
                job.state = JobState.GONE
                job.touch()
                ended.append(job)
        return adopted, ended
