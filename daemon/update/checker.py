"""The update checker in islurmd's nursery: at most one check per interval (remembered in the
state dir), in a worker thread, time-boxed, never on a connect's path. In auto mode a newer
release is applied by `islurmctl update --auto` in its own process. When `current` points at
another generation than the one this daemon runs from, it hands over (TERM path) as soon as no
connect waits; SIGUSR1 (sent by islurmctl update) says "look now"."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from islurm.config import installs
from islurm.config.settings import Settings
from islurm.daemon.update import generations as gens
from islurm.daemon.update import state
from islurm.daemon.update.git import Git, GitError
from islurm.daemon.update.installer import current_version, list_releases
from islurm.daemon.update.policy import Policy, current_policy
from islurm.daemon.update.versions import newer_than

log = structlog.get_logger("islurm.update")

CHECK_BOX = 15.0  # seconds a check may take in all (git itself gives up after 10)
APPLY_BOX = 900.0  # an automatic update's build, self-test and switch
LINK_POLL = 60.0  # how often to look whether another process switched `current` (a readlink)


def check(
    policy: Policy, install: gens.Install, state_dir: str | None, now: float | None = None
) -> dict[str, Any]:
    """One check (blocking: run it in a thread); its outcome is remembered and returned."""
    current = current_version(install)
    outcome: dict[str, Any] = {"current": current, "mode": policy.mode, "remote": policy.remote}
    try:
        tags = list_releases(policy, Git())
    except GitError as exc:
        outcome.update(ok=False, error=str(exc))
    else:
        newer = newer_than(current, tags)
        outcome.update(
            ok=True,
            latest=str(tags[-1].version) if tags else None,
            newer=[t.name for t in newer],
        )
    state.save_check(outcome, state_dir, now)
    state.log("check", state_dir, **outcome)
    return outcome


class UpdateChecker:
    def __init__(
        self,
        settings: Callable[[], Settings],
        state_dir: str,
        handover: Callable[[], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.time,
        install: gens.Install | None = None,
    ) -> None:
        self.settings, self.state_dir, self.handover = settings, state_dir, handover
        self.clock = clock  # wall time: the last check's time outlives this process
        self.install = install or gens.detect()
        self._started_current = self._current() == self.install.generation
        self._look = trio.Event()
        self.checks = 0
        self._ctl = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "islurmctl")
        #: the check and the automatic update; tests replace them
        self.run_check: Callable[[Policy], Awaitable[dict[str, Any] | None]] = self._in_thread
        self.run_apply: Callable[[], Awaitable[None]] = self._apply

    def policy(self) -> Policy:
        return current_policy(self.settings().update)

    def status(self) -> dict[str, Any]:
        p = self.policy()
        return {
            "mode": p.mode,
            "reason": p.reason,
            "channel": f"{p.remote}#{p.tags}" if p.configured else None,
            "pin": p.pin,
            "install": self.install.kind,
            "owned": self.install.owned,
            "generation": self.install.generation,
            "last_check": state.load(self.state_dir).get("check"),
        }

    def _current(self) -> str | None:
        root = self.install.root
        return None if root is None else gens.link(root, installs.CURRENT)

    def switched(self) -> bool:
        """`current` moved away from the generation this daemon runs from. A daemon that did
        not start as `current` never hands over: the updater's self-test runs the new
        generation's islurmd before switching, and it must stay up for its round trip."""
        mine = self.install.generation
        if mine is None or not self._started_current:
            return False
        now = self._current()
        return now is not None and now != mine

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            task_status.started()
            while True:
                if self.switched():
                    log.info(
                        "update.handover", generation=gens.link(self.install.root or "", "current")
                    )
                    await self.handover()
                    return
                policy = self.policy()
                wait = LINK_POLL
                if policy.network:
                    due = state.due(policy.interval, self.state_dir, self.clock())
                    if due == 0:
                        await self._check(policy)
                        continue
                    wait = min(wait, due)
                with trio.move_on_after(wait):
                    await self._look.wait()
                self._look = trio.Event()

    def look(self) -> None:
        """Look now whether `current` moved or a check is due (never a check before it is)."""
        self._look.set()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGUSR1) as sigs:
            async for _ in sigs:
                self.look()

    async def _in_thread(self, policy: Policy) -> dict[str, Any] | None:
        with trio.move_on_after(CHECK_BOX):
            return await trio.to_thread.run_sync(
                check, policy, self.install, self.state_dir, self.clock(), abandon_on_cancel=True
            )
        return None

    async def _check(self, policy: Policy) -> None:
        self.checks += 1
        outcome = await self.run_check(policy)
        if outcome is None:  # a failed check counts too: the next one waits a whole interval
            outcome = {"ok": False, "error": f"no answer within {CHECK_BOX:g} s"}
            state.save_check(outcome, self.state_dir, self.clock())
        log.info("update.checked", **outcome)
        if policy.mode == "auto" and outcome.get("newer") and self.install.owned:
            await self.run_apply()

    async def _apply(self) -> None:
        """`islurmctl update --auto` of this generation, in its own process: a crash or kill
        of the build leaves this daemon (and `current`) as they were."""
        with trio.move_on_after(APPLY_BOX):
            done = await trio.run_process(
                [self._ctl, "update", "--auto"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            log.info(
                "update.applied" if done.returncode == 0 else "update.failed",
                exit=done.returncode,
                output=(done.stdout + done.stderr).decode(errors="replace")[-2000:],
            )
