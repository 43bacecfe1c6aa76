"""islurmd's top level: one nursery holding the RPC server, the Slurm watcher and signals."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from islurm.config import paths
from islurm.config.protocol import PROTOCOL
from islurm.config.settings import ConfigError, Settings, load_settings
from islurm.daemon import version
from islurm.daemon.availability import Availability
from islurm.daemon.handed import HandedSessions, Ledger
from islurm.daemon.jobcontrol import HookSetup, JobControl
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.manager import SessionManager
from islurm.daemon.ports import PortPool
from islurm.daemon.records import RecordStore
from islurm.daemon.rpc.methods import build_methods, make_dispatch
from islurm.daemon.rpc.server import Connection, RpcServer
from islurm.daemon.slurm.client import SlurmCli, SlurmClient
from islurm.daemon.update.checker import UpdateChecker
from islurm.daemon.watcher import Watcher

log = structlog.get_logger("islurm.daemon")

FLUSH = 1.0  # after the grace: at most this long to tell waiting clients and write it out
IDLE_CHECK = 5.0  # seconds between looks at whether the daemon is still used
#: the session hook of this very install (the jobs run it with this daemon's Python)
HOOK_SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sessionhooks", "launch.py"
)


@dataclass
class Options:
    socket: str
    config: str
    state_dir: str
    mode: str  # "on-demand" or "systemd"
    ca_dir: str | None = None  # the user's SSH CA that signs each job's host key


class Daemon:
    def __init__(self, opts: Options, settings: Settings, slurm: SlurmClient | None = None):
        self.opts, self.settings = opts, settings
        self.started = time.time()
        self.slurm = slurm or SlurmCli()
        self.table = JobTable()
        self.records = RecordStore(paths.records_dir(opts.state_dir))
        self.ports = PortPool(*settings.daemon.port_range)
        self.watcher = Watcher(
            self.slurm,
            self.table,
            self.records,
            poll_busy=settings.daemon.poll_busy,
            poll_idle=settings.daemon.poll_idle,
            idle_grace=self._idle_grace,
            on_idle=self._reap,
            on_duplicate=self._duplicates,
            on_adopt=self._adopt,
        )
        self.jobs = JobControl(
            lambda: self.settings,
            self.slurm,
            self.table,
            self.ports,
            self.watcher,
            HookSetup(
                python=sys.executable,
                state_dir=opts.state_dir,
                workdir=os.path.expanduser("~"),
                ca_dir=opts.ca_dir,
                hook_script=HOOK_SCRIPT,
            ),
        )
        self.avail = Availability(self.slurm, lambda: self.settings, self.table, self._waited_for)
        self.manager = SessionManager(
            lambda: self.settings, self.table, self.records, self.watcher, self.jobs, self.avail
        )
        self.handed = HandedSessions(self.manager, Ledger(paths.direct_ledger(opts.state_dir)))
        methods = build_methods(self.manager, self.status, self.reload, self.handed)
        self.server = RpcServer(make_dispatch(methods), self._closed)
        #: called once the daemon no longer serves (islurmd frees its lock and socket file
        #: there, so the next daemon can start while this one says goodbye)
        self.on_stopped_serving: Callable[[], None] | None = None
        self._watch_scope = trio.CancelScope()
        self.updates = UpdateChecker(lambda: self.settings, opts.state_dir, self._handover)
        self._nursery: trio.Nursery | None = None

    def _waited_for(self) -> bool:
        """Someone waits for a job that has not started: keep what starts now fresh."""
        return any(j.live and j.leases and not j.state.is_running for j in self.table)

    def _idle_grace(self, profile: str) -> float:
        p = self.settings.profiles.get(profile)
        return p.idle_grace if p else self.settings.defaults.idle_grace

    def _leads(self, profile: str) -> tuple[float, ...]:
        p = self.settings.profiles.get(profile)
        return p.walltime_warnings if p else ()

    async def _reap(self, job: Job) -> None:
        await self.jobs.reap(job)

    async def _duplicates(self, jobs: list[Job]) -> None:
        await self.jobs.cancel_duplicates(jobs)

    def _adopt(self, job: Job) -> None:
        self.jobs.adopt(job)

    def _closed(self, conn: Connection) -> None:
        for lease_id in conn.leases:
            self.manager.release(lease_id)

    def status(self) -> dict[str, Any]:
        return {
            "version": version.VERSION,
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "socket": self.opts.socket,
            "config": self.settings.path,
            "state_dir": self.opts.state_dir,
            "log": os.path.join(paths.log_dir(self.opts.state_dir), "islurmd.log"),
            "mode": self.opts.mode,
            "watcher": self.watcher.status(),
            "connections": self.server.connections,
            "refused": self.server.refused,
            "leases": len(self.manager.leases),
            "submissions": self.jobs.submissions,
            "ports": len(self.ports.held()),
            "update": self.updates.status(),
            "availability_checks": self.avail.refreshes,
        }

    def reload(self) -> str | None:
        """Re-read the config; a bad one is refused and the last good one stays (the error)."""
        try:
            new = load_settings(self.opts.config)
        except (ConfigError, OSError) as exc:
            log.error("config.reload_refused", error=str(exc), kept=self.settings.path)
            return str(exc)
        self.settings = new
        self.watcher.poll_busy, self.watcher.poll_idle = new.daemon.poll_busy, new.daemon.poll_idle
        log.info("config.reloaded", path=new.path, profiles=sorted(new.profiles))
        return None

    async def _signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    self.reload()
                    continue
                log.info("daemon.stopping", signal=signal.Signals(signum).name)
                await self.stop(nursery)
                return

    async def stop(self, nursery: trio.Nursery) -> None:
        """TERM: stop accepting; connects waiting for a job get `shutdown_grace` to become
        ready, then are told SHUTTING_DOWN (their shims ask the next daemon); exit. Sessions
        already connected are not cut: their byte streams never pass through the daemon, and
        their shims re-attach their leases to the next daemon (docs/PROTOCOL.md §2)."""
        grace = self.settings.daemon.shutdown_grace
        self.server.stop_accepting()
        self.manager.draining = True
        with trio.move_on_after(grace):
            await self.manager.until_none_waiting()
        self._watch_scope.cancel()  # a daemon on its way out reaps and cancels nothing
        if self.on_stopped_serving is not None:
            self.on_stopped_serving()
        told = self.manager.stop_waiting()
        with trio.move_on_after(FLUSH):
            await self.manager.until_none_waiting()
            await self.server.flush()
        log.info("daemon.stopped_serving", told_to_retry=told, leases=len(self.manager.leases))
        nursery.cancel_scope.cancel()

    def _idle(self) -> bool:
        """Nothing to look after: no live job and no client connected."""
        return not self.server.open_connections and not any(j.live for j in self.table)

    async def _exit_when_unused(self, nursery: trio.Nursery) -> None:
        """A daemon with no jobs and no connections for `idle_exit` exits; the next connect
        or command starts one (on demand, or by socket activation)."""
        idle_since: float | None = None
        while True:
            limit = self.settings.daemon.idle_exit
            await trio.sleep(min(IDLE_CHECK, limit) if limit > 0 else IDLE_CHECK)
            if limit <= 0 or not self._idle():
                idle_since = None
                continue
            now = trio.current_time()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= limit:
                log.info("daemon.idle_exit", idle_seconds=round(now - idle_since, 1))
                await self.stop(nursery)
                return

    async def _handover(self) -> None:
        """islurm was updated: once no connect waits, leave by the TERM path; the next
        connect starts the new version through `current`. Open sessions stay up."""
        await self.manager.until_none_waiting()
        if self._nursery is not None:
            log.info("daemon.handing_over")
            await self.stop(self._nursery)

    async def _watch(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._watch_scope:
            await self.watcher.run(self._leads, task_status=task_status)

    async def run(
        self,
        listener: trio.SocketListener,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        paths.ensure_state_dirs(self.opts.state_dir)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._signals, nursery)
            await nursery.start(self.manager.run)
            await nursery.start(self.server.serve, listener)
            log.info(
                "daemon.serving",
                socket=self.opts.socket,
                pid=os.getpid(),
                version=version.VERSION,
                mode=self.opts.mode,
            )
            await nursery.start(self._watch)
            nursery.start_soon(self.handed.restore)
            await nursery.start(self.avail.run)
            nursery.start_soon(self._exit_when_unused, nursery)
            await nursery.start(self.updates.run)
            task_status.started()
