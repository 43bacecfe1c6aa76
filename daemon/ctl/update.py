"""`islurmctl check` and `islurmctl update [--to V] [--rollback]`: self-update from the command
line (the work: daemon/update/). Both work without a running daemon; after a switch the
daemon is told (SIGUSR1) and hands over once no connect waits."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from islurm.config import paths
from islurm.daemon.ctl import common
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.update import generations as gens
from islurm.daemon.update import installer, state
from islurm.daemon.update.checker import check
from islurm.daemon.update.policy import Policy, current_policy


def _policy(args: argparse.Namespace) -> Policy:
    settings = common.settings(args)
    return current_policy(settings.update)


def cmd_check(args: argparse.Namespace) -> int:
    policy, install = _policy(args), gens.detect()
    if not policy.network:
        out: dict[str, Any] = {"ok": False, "mode": policy.mode, "reason": policy.reason}
        if args.json:
            print(json.dumps(out))
        else:
            print(f"islurm {installer.current_version(install)}: no check made ({policy.reason})")
        return 0
    outcome = check(policy, install, None)
    if args.json:
        print(json.dumps({**outcome, "reason": policy.reason, "install": install.kind}))
    elif not outcome["ok"]:
        raise Fail(Exit.ERROR, f"check failed: {outcome['error']}")
    else:
        newer = outcome["newer"]
        print(f"current: {outcome['current']}")
        print(f"latest:  {outcome['latest'] or '(no release at ' + policy.remote + ')'}")
        if newer:
            print(f"newer:   {' '.join(newer)}")
            print(
                "run: islurmctl update"
                if install.owned
                else f"to update this {install.kind} install: {install.instead()}"
            )
        else:
            print("up to date")
        print(f"mode:    {policy.reason}")
    return 0


def _tell_daemon() -> None:
    """Have a running islurmd hand over to the new version (it waits for connects)."""
    try:
        with open(paths.lock_path(paths.socket_path())) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"islurm" not in f.read():
                return
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        pass  # no daemon: the next connect starts the new one


def cmd_update(args: argparse.Namespace) -> int:
    if args.adopt:
        built = installer.adopt(args.adopt, args.kind, args.prefix, args.python)
        print(f"islurm {built} is installed (current generation: {os.path.basename(args.adopt)})")
        return 0
    install = gens.detect()
    policy = _policy(args)

    def say(text: str) -> None:
        print(f"update: {text}", flush=True)

    try:
        if args.rollback:
            now = installer.rollback(install, say)
        else:
            if not policy.network:
                raise Fail(Exit.ERROR, f"not updating: {policy.reason}")
            if args.auto and policy.mode != "auto":
                raise Fail(Exit.ERROR, f"not updating by itself: {policy.reason}")
            if policy.pin and args.to and args.to.lstrip("v") != policy.pin.lstrip("v"):
                raise Fail(Exit.ERROR, f"the site pins islurm {policy.pin}")
            got = installer.apply(install, policy, args.to, say)
            if got is None:
                return 0
            now = got
    except installer.UpdateFailed as exc:
        state.log(
            "refused" if exc.step in ("install", "lock") else "gave_up",
            step=exc.step,
            error=str(exc),
        )
        raise Fail(
            Exit.ERROR,
            f"update failed at {exc.step}: {exc.message}; islurm "
            f"{installer.current_version(install)} "
            "stays in use",
        ) from None
    _tell_daemon()
    say(f"islurm {now} is current; islurmd hands over as soon as no connect waits")
    return 0


def status_lines(info: object) -> list[str]:
    """`islurmctl status`'s update lines: the mode, and the last check and its outcome."""
    if not isinstance(info, dict):
        return [f"  {'update:':11}(this islurmd predates self-update)"]
    last = info.get("last_check") or {}
    if not last:
        seen = "never checked"
    elif last.get("ok"):
        newer = last.get("newer") or []
        seen = f"latest {last.get('latest')}" + (f", newer: {' '.join(newer)}" if newer else "")
    else:
        seen = f"check failed: {last.get('error')}"
    when = last.get("time")
    stamp = time.strftime(" at %Y-%m-%d %H:%M", time.localtime(when)) if when else ""
    return [
        f"  {'update:':11}{info.get('reason')}; {info.get('install')} install"
        + ("" if info.get("owned") else " (not updated by islurm)"),
        f"  {'checked:':11}{seen}{stamp}",
    ]


def register(sub: Any) -> None:
    c = sub.add_parser("check", help="show the current and the latest release")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(fn=cmd_check)
    u = sub.add_parser("update", help="install a newer release (a new generation) or roll back")
    u.add_argument("--to", metavar="VERSION", help="this release instead of the newest")
    u.add_argument("--rollback", action="store_true", help="back to the previous generation")
    u.add_argument("--auto", action="store_true", help=argparse.SUPPRESS)  # islurmd's own run
    u.add_argument("--adopt", metavar="DIR", help=argparse.SUPPRESS)  # make install
    u.add_argument("--kind", default="make", help=argparse.SUPPRESS)
    u.add_argument("--prefix", default=os.path.expanduser("~/.local"), help=argparse.SUPPRESS)
    u.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    u.set_defaults(fn=cmd_update)
