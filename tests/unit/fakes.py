"""Shared fakes for the daemon's unit tests: a scripted Slurm, recorded squeue rows, a sink
for a flow's notifications and the daemon's objects wired the way `daemon/app.py` wires them."""

from __future__ import annotations

import inspect
import os
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

# jsonrpcserver 5.0.9 warns on import from inside importlib.resources, so pyproject's
# module filter ("jsonrpcserver.*") does not match it; -W error would fail collection.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import jsonrpcserver  # noqa: F401

from islurm.config.records import ERROR, RECORD, Record, write_json
from islurm.config.settings import load_settings
from islurm.daemon.app import Daemon, Options
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.rpc.methods import build_methods, make_dispatch
from islurm.daemon.slurm.capacity import NodeFree, parse_sinfo_nodes
from islurm.daemon.slurm.client import SlurmClient, SlurmError, SlurmUnreachable
from islurm.daemon.slurm.parse import SEP, SqueueRow, parse_squeue

__all__ = ["build_methods", "make_dispatch"]  # re-exported: importing them here is warning-free

#: a state dir no shell may interpret: spaces, quotes, `;` and `$()`
HOSTILE_DIR = "state dir;$(touch pwned)'\""
FAKE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake"
#: Slurm 22.05's own words when slurmctld is down
UNREACHABLE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def squeue_line(
    job_id: str,
    profile: str = "cpu",
    state: str = "PENDING",
    *,
    name: str | None = None,
    comment: str | None = None,
    reason: str = "Priority",
    nodes: str = "",
    start: str = "N/A",
    left: str = "8:00:00",
) -> str:
    """One line of `squeue -h -o SQUEUE_FORMAT` as Slurm prints it."""
    name = f"islurm-{profile}" if name is None else name
    comment = f"islurm:v1:{profile}" if comment is None else comment
    used = "0:00" if state == "PENDING" else "1:02"
    fields = [job_id, name, state, reason, nodes, start, used, left, "8:00:00", "interactive"]
    return SEP.join([*fields, "N/A", comment])


def rows(*lines: str) -> list[SqueueRow]:
    return parse_squeue("".join(line + "\n" for line in lines))


def running_line(job_id: str, profile: str = "cpu", node: str = "node-1", **kw: Any) -> str:
    return squeue_line(job_id, profile, "RUNNING", reason="None", nodes=node, **kw)


def unreachable(command: str = "squeue", message: str = UNREACHABLE) -> SlurmUnreachable:
    return SlurmUnreachable([command, "--me"], 1, "", message + "\n")


def rejected(message: str) -> SlurmError:
    return SlurmError(["sbatch", "--parsable"], 1, "", message + "\n")


#: `sbatch --test-only` on Slurm 22.05 (stderr) for a job that starts at once (any time in
#: the past is "now")
TEST_ONLY_NOW = (
    "sbatch: Job 153 to start at 2020-01-01T00:00:00 using 1 processors on nodes c1 "
    "in partition interactive"
)


@dataclass(frozen=True)
class Call:
    method: str
    args: tuple[Any, ...]
    at: float


#: `sinfo -h -N -O SINFO_FORMAT` of an idle cluster with room for any built-in profile
IDLE_SINFO = """\
c1|interactive*|0/64/0/64|524288|0|gpu:8|gpu:0|idle
c1|gpu|0/64/0/64|524288|0|gpu:8|gpu:0|idle
"""


class FakeSlurm(SlurmClient):
    """Replays scripted answers per method and fails on any call nobody scripted.

    An answer is a value, an exception (raised) or a callable given the call's arguments
    (sync or async) returning either. `script` queues one-shot answers; `always` sets the
    answer used once the queue is empty."""

    METHODS = ("submit", "query", "cancel", "test_submit", "constraints", "nodes")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.unexpected: list[str] = []
        self._queued: dict[str, deque[Any]] = {m: deque() for m in self.METHODS}
        self._standing: dict[str, Any] = {}

    def script(self, method: str, *answers: Any) -> FakeSlurm:
        self._queued[method].extend(answers)
        return self

    def always(self, method: str, answer: Any) -> FakeSlurm:
        self._standing[method] = answer
        return self

    def quiet_queue(self) -> FakeSlurm:
        """Standing answers for the availability view (what starts now): an empty cluster
        where every job would start at once."""
        self.always("test_submit", TEST_ONLY_NOW)
        return self.always("nodes", parse_sinfo_nodes(IDLE_SINFO))

    def stop(self, method: str) -> None:
        """From now on any call of `method` is unexpected."""
        self._queued[method].clear()
        self._standing.pop(method, None)

    def check(self) -> None:
        """Nothing unscripted was asked, and every one-shot answer was used."""
        assert self.unexpected == [], f"unexpected Slurm calls: {self.unexpected}"
        left = {m: list(q) for m, q in self._queued.items() if q}
        assert not left, f"scripted Slurm answers never asked for: {left}"

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def _answer(self, method: str, *args: Any) -> Any:
        self.calls.append(Call(method, args, trio.current_time()))
        await trio.lowlevel.checkpoint()
        if self._queued[method]:
            answer = self._queued[method].popleft()
        elif method in self._standing:
            answer = self._standing[method]
        else:
            self.unexpected.append(f"{method}{args!r}")
            raise AssertionError(f"unexpected Slurm call: {method}{args!r}")
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(*args)
            if inspect.isawaitable(answer):
                answer = await answer
        if isinstance(answer, BaseException):
            raise answer.with_traceback(None)
        return answer

    async def submit(self, options: Any, script: str) -> str:
        return str(await self._answer("submit", list(options), script))

    async def query(self) -> list[SqueueRow]:
        return list(await self._answer("query"))

    async def cancel(self, job_ids: Any) -> None:
        await self._answer("cancel", list(job_ids))

    async def test_submit(self, options: Any) -> str:
        return str(await self._answer("test_submit", list(options)))

    async def nodes(self) -> list[NodeFree]:
        return list(await self._answer("nodes"))

    async def constraints(self, job_id: str) -> list[str]:
        return list(await self._answer("constraints", job_id))


class Notes:
    """A flow's notifications, in order; tests wait for the one they expect."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._changed = trio.Event()

    def __call__(self, method: str, params: dict[str, Any]) -> None:
        self.items.append((method, params))
        self._changed.set()
        self._changed = trio.Event()

    def of(self, method: str) -> list[dict[str, Any]]:
        return [p for m, p in self.items if m == method]

    def methods(self) -> list[str]:
        return [m for m, _ in self.items]

    async def wait_for(
        self, method: str, where: Callable[[dict[str, Any]], bool] = lambda p: True
    ) -> dict[str, Any]:
        while True:
            for m, p in self.items:
                if m == method and where(p):
                    return p
            await self._changed.wait()


#: what the fake resolver answers for every node (tests never connect to it: banners are faked)
NODE_ADDRESS = "127.0.0.42"


async def resolve(node: str) -> str:
    """Stands in for readiness.ipv4_address."""
    await trio.lowlevel.checkpoint()
    return NODE_ADDRESS


def job_of(table: JobTable, job_id: str) -> Job:
    """The table's job `job_id`, which the test expects to be there."""
    job = table.get(job_id)
    assert job is not None, f"no job {job_id} in the table"
    return job


def write_record(
    state_dir: Path, job_id: str, port: int = 22022, node: str = "node-1", pid: int = 4711
) -> None:
    """A readiness record as the session hook writes it (the one definition: config/records)."""
    rec = Record(job_id=job_id, node=node, port=port, pid=pid, host_key=FAKE_HOST_KEY)
    write_json(str(state_dir / "jobs" / f"{job_id}{RECORD}"), rec.to_json("alice", "cpu", 1e9))


def write_hook_error(state_dir: Path, job_id: str, message: str) -> None:
    write_json(str(state_dir / "jobs" / f"{job_id}{ERROR}"), {"message": message})


def make_daemon(tmp_path: Path, slurm: FakeSlurm, config: str = "") -> tuple[Daemon, Path]:
    """The daemon's objects as `islurmd` builds them, on a hostile state dir under tmp_path."""
    state = tmp_path / HOSTILE_DIR
    cfg = tmp_path / "config.toml"
    cfg.write_text(config, encoding="utf-8")
    opts = Options(socket=str(tmp_path / "d.sock"), config=str(cfg), state_dir=str(state), mode="t")
    daemon = Daemon(opts, load_settings(str(cfg)), slurm=slurm)
    os.makedirs(daemon.records.directory, mode=0o700, exist_ok=True)
    return daemon, state


@asynccontextmanager
async def live_daemon(
    tmp_path: Path, slurm: FakeSlurm, config: str = ""
) -> AsyncIterator[tuple[Daemon, Path, trio.Nursery]]:
    """A daemon whose watcher runs (first poll done) and whose flows run in a test nursery."""
    daemon, state = make_daemon(tmp_path, slurm, config)
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.manager.run)
        await nursery.start(daemon.watcher.run, daemon._leads)
        yield daemon, state, nursery
        nursery.cancel_scope.cancel()
    slurm.check()
