"""Would a job of each profile start now, and what is free: Slurm asked with one
`sbatch --test-only` per distinct set of sbatch options and one `sinfo`, for all profiles
together, and cached. Every caller (`islurmctl profiles --available`, every waiting connect)
shares one refresh at a time, so a loop of callers never loads slurmctld."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import trio

from islurm.config.settings import Profile, Settings
from islurm.daemon.jobs import JobTable
from islurm.daemon.slurm.capacity import PartitionFree, TestOnly, parse_test_only
from islurm.daemon.slurm.client import SlurmClient, SlurmError
from islurm.daemon.slurm.parse import SlurmParseError

log = structlog.get_logger("islurm.availability")

CACHE_AGE = 30.0  # seconds an answer is reused for `profiles.available`
BUSY_AGE = 4.0  # while a connect waits for a pending job, refreshed this often at most
PARALLEL = 4  # sbatch --test-only calls at once (each is one RPC to slurmctld)


@dataclass(frozen=True)
class Verdict:
    """One profile: would its job start now, else Slurm's estimate of when."""

    profile: str
    starts_now: bool | None  # None: Slurm did not say (see error)
    start_time: str = ""  # Slurm's estimate, local ISO time ("" if unknown)
    partition: str = ""
    nodes: str = ""
    job_id: str = ""  # your running job of this profile, which a connect reuses
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "starts_now": self.starts_now,
            "start_time": self.start_time or None,
            "partition": self.partition or None,
            "nodes": self.nodes or None,
            "running_job": self.job_id or None,
            "error": self.error or None,
        }


@dataclass(frozen=True)
class View:
    checked_at: float  # trio time
    checked: str  # wall-clock time of the check, ISO
    profiles: dict[str, Verdict]
    partitions: dict[str, PartitionFree]
    error: str | None = None  # sinfo's failure, if it failed

    def startable(self, besides: str, first: tuple[str, ...] = ()) -> list[str]:
        """Profiles other than `besides` that would start now: `first` (in its order), then
        the rest by name."""
        ok = [n for n, v in self.profiles.items() if v.starts_now and n != besides]
        return [n for n in first if n in ok] + sorted(n for n in ok if n not in first)

    def as_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "profiles": [self.profiles[n].as_json() for n in sorted(self.profiles)],
            "partitions": [self.partitions[n].as_json() for n in sorted(self.partitions)],
            "error": self.error,
        }


def verdict(profile: str, answer: TestOnly | SlurmError, now: datetime) -> Verdict:
    """What one `sbatch --test-only` answer (or its failure) says about a profile."""
    if isinstance(answer, SlurmError):
        return Verdict(profile, None, error=answer.message)
    return Verdict(
        profile,
        answer.starts_now(now),
        start_time=answer.start,
        partition=answer.partition,
        nodes=answer.nodes,
    )


class Availability:
    def __init__(
        self,
        slurm: SlurmClient,
        settings: Callable[[], Settings],
        table: JobTable,
        wanted: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.slurm, self.settings, self.table = slurm, settings, table
        self.wanted, self.clock = wanted, clock
        self.view: View | None = None
        self.refreshes = 0
        self._lock = trio.Lock()
        self._wake = trio.Event()

    def fresh(self, max_age: float) -> View | None:
        view = self.view
        if view is not None and trio.current_time() - view.checked_at < max_age:
            return view
        return None

    async def get(self, max_age: float = CACHE_AGE) -> View:
        """The view, asking Slurm only if the last one is older than `max_age`; callers at
        the same time share one refresh."""
        view = self.fresh(max_age)
        if view is not None:
            return view
        async with self._lock:
            view = self.fresh(max_age)  # refreshed while this caller waited for the lock
            if view is None:
                view = self.view = await self._refresh()
                self._waiters_told()
        return view

    def wake(self) -> None:
        """A connect started waiting: refresh soon (at most every BUSY_AGE)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """While someone waits for a job that has not started, keep the view fresh."""
        task_status.started()
        while True:
            if self.wanted():
                try:
                    await self.get(BUSY_AGE)
                except SlurmError as exc:  # already in the view's verdicts; never fatal
                    log.warning("availability.failed", error=exc.message)
            with trio.move_on_after(BUSY_AGE if self.wanted() else 60.0):
                await self._wake.wait()
            self._wake = trio.Event()

    def _waiters_told(self) -> None:
        for job in self.table:
            if job.live and job.leases and not job.state.is_running:
                job.touch()  # waiting connects re-say why they wait, and what starts now

    async def _refresh(self) -> View:
        self.refreshes += 1
        profiles = self.settings().profiles
        running = {}
        for name in profiles:
            job = self.table.current(name)
            if job is not None and job.state.is_running:
                running[name] = job.job_id
        # One question per distinct set of options: profiles that differ only in name,
        # description or idle settings share it.
        groups: dict[tuple[str, ...], list[Profile]] = {}
        for p in profiles.values():
            if p.name not in running:
                groups.setdefault(p.sbatch, []).append(p)
        answers: dict[tuple[str, ...], TestOnly | SlurmError] = {}
        partitions: dict[str, PartitionFree] = {}
        error: list[str] = []
        limiter = trio.CapacityLimiter(PARALLEL)

        async def ask(options: tuple[str, ...]) -> None:
            async with limiter:
                answers[options] = await self._test_only(options)

        async def free() -> None:
            try:
                partitions.update(await self.slurm.capacity())
            except SlurmError as exc:
                error.append(f"sinfo failed: {exc.message}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(free)
            for options in groups:
                nursery.start_soon(ask, options)
        now = self.clock()
        verdicts = {n: Verdict(n, True, job_id=j) for n, j in running.items()}
        for options, members in groups.items():
            for p in members:
                verdicts[p.name] = verdict(p.name, answers[options], now)
        return View(
            trio.current_time(),
            now.isoformat(timespec="seconds"),
            verdicts,
            partitions,
            error[0] if error else None,
        )

    async def _test_only(self, options: tuple[str, ...]) -> TestOnly | SlurmError:
        try:
            text = await self.slurm.test_submit(options)
        except SlurmError as exc:
            return exc
        try:
            return parse_test_only(text)
        except SlurmParseError as exc:
            return SlurmError(["sbatch", "--test-only", *options], 0, "", str(exc))
