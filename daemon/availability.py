"""Would a job of each profile start now, and what is free. One `sinfo -N` per refresh says
what is free on every node, for all profiles together; a profile whose options fit a node
now starts now (daemon/slurm/fit.py). Only for one that does not fit (or whose options the
fit check cannot read) is Slurm asked `sbatch --test-only`, for its estimate: at most
ASKS distinct option sets per refresh, each answer reused for ESTIMATE_AGE. Every caller
(`islurmctl profiles --available`, every waiting connect) shares one refresh at a time, so a
loop of callers never loads slurmctld."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
import trio

from islurm.config.settings import Settings
from islurm.daemon.jobs import JobTable
from islurm.daemon.slurm import fit
from islurm.daemon.slurm.capacity import NodeFree, PartitionFree, TestOnly, parse_test_only
from islurm.daemon.slurm.capacity import partitions as free_per_partition
from islurm.daemon.slurm.client import SlurmClient, SlurmError
from islurm.daemon.slurm.parse import SlurmParseError

log = structlog.get_logger("islurm.availability")

CACHE_AGE = 30.0  # seconds an answer is reused for `profiles.available`
BUSY_AGE = 4.0  # while a connect waits for a pending job, refreshed this often at most
ESTIMATE_AGE = 30.0  # seconds one `sbatch --test-only` answer is reused
ASKS = 12  # at most this many `sbatch --test-only` calls per refresh (waited-for first)
PARALLEL = 2  # of them at once (each is one RPC to slurmctld)


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
    by: str = ""  # what decided starts_now: "running job", "sinfo" or "test-only"

    def as_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "starts_now": self.starts_now,
            "start_time": self.start_time or None,
            "partition": self.partition or None,
            "nodes": self.nodes or None,
            "running_job": self.job_id or None,
            "error": self.error or None,
            "decided_by": self.by or None,
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


def verdict(
    profile: str, answer: TestOnly | SlurmError | None, now: datetime, fits: bool | None
) -> Verdict:
    """A profile's verdict from the fit check (`fits`: None when it cannot judge) and its
    `sbatch --test-only` answer (None: not asked in this refresh)."""
    if isinstance(answer, SlurmError):
        return Verdict(profile, None, error=answer.message, by="test-only")
    if answer is None:
        if fits is None:
            return Verdict(profile, None, error="not asked yet (too many profiles to ask)")
        return Verdict(profile, False, by="sinfo")
    return Verdict(
        profile,
        answer.starts_now(now) if fits is None else False,
        start_time=answer.start,
        partition=answer.partition,
        nodes=answer.nodes,
        by="test-only" if fits is None else "sinfo",
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
        self._answers: dict[tuple[str, ...], tuple[float, TestOnly | SlurmError]] = {}

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
        error = None
        try:
            nodes: list[NodeFree] | None = await self.slurm.nodes()
        except SlurmError as exc:
            nodes, error = None, f"sinfo failed: {exc.message}"
        now = self.clock()
        verdicts = {n: Verdict(n, True, job_id=j, by="running job") for n, j in running.items()}
        unsure: dict[str, bool | None] = {}  # profile -> fit verdict (False or None)
        for p in profiles.values():
            if p.name in running:
                continue
            req = fit.request(p.sbatch) if nodes is not None else None
            node = fit.fits(req, nodes) if req is not None and nodes is not None else None
            if node is not None:
                verdicts[p.name] = Verdict(p.name, True, "", node.partition, node.node, by="sinfo")
            else:
                unsure[p.name] = None if req is None else False
        waited = {j.profile for j in self.table if j.live and j.leases and not j.state.is_running}
        first = {profiles[n].sbatch for n in unsure if n in waited}
        answers = await self._estimates({profiles[n].sbatch for n in unsure}, first)
        for name, fits in unsure.items():
            verdicts[name] = verdict(name, answers.get(profiles[name].sbatch), now, fits)
        return View(
            trio.current_time(),
            now.isoformat(timespec="seconds"),
            verdicts,
            free_per_partition(nodes or []),
            error,
        )

    async def _estimates(
        self, wanted: set[tuple[str, ...]], first: set[tuple[str, ...]]
    ) -> dict[tuple[str, ...], TestOnly | SlurmError]:
        """`sbatch --test-only` answers for these option sets: the cached ones, plus at most
        ASKS asked now (those of waiting connects, `first`, then the oldest-asked)."""
        now = trio.current_time()
        fresh = {o: a for o, (t, a) in self._answers.items() if now - t < ESTIMATE_AGE}
        missing = sorted(o for o in wanted if o not in fresh)
        missing.sort(key=lambda o: (o not in first, self._answers.get(o, (-1e18, None))[0]))
        limiter = trio.CapacityLimiter(PARALLEL)

        async def ask(options: tuple[str, ...]) -> None:
            async with limiter:
                answer = await self._test_only(options)
            self._answers[options] = (trio.current_time(), answer)
            fresh[options] = answer

        async with trio.open_nursery() as nursery:
            for options in missing[:ASKS]:
                nursery.start_soon(ask, options)
        for options in missing[ASKS:]:  # an older answer beats none
            if options in self._answers:
                fresh[options] = self._answers[options][1]
        return {o: fresh[o] for o in wanted if o in fresh}

    async def _test_only(self, options: tuple[str, ...]) -> TestOnly | SlurmError:
        try:
            text = await self.slurm.test_submit(options)
        except SlurmError as exc:
            return exc
        try:
            return parse_test_only(text)
        except SlurmParseError as exc:
            return SlurmError(["sbatch", "--test-only", *options], 0, "", str(exc))
