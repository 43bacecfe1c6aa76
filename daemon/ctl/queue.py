"""`islurmctl profiles --available`: would each profile's job start now (islurmd matches the
profiles against one `sinfo -N` and asks `sbatch --test-only` only for the estimates of those
that do not fit; cached ~30 s)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from islurm.config.text import terminal_safe
from islurm.daemon.ctl.common import Fail, connect
from islurm.daemon.ctl.exits import exit_for


def show_available(args: argparse.Namespace) -> int:
    from islurm.daemon.ctl.client import RpcError

    with connect(args) as rpc:
        try:
            rpc.call("profiles.available")
        except RpcError as exc:
            raise Fail(exit_for(exc.code), exc.message) from None
        view = rpc.wait_notification("profiles.available.done")
    if "error" in view and isinstance(view["error"], dict):
        raise Fail(exit_for(view["error"]["code"]), view["error"]["message"])
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(terminal_safe(render(view)), end="")
    return 0


def _yes_no(p: dict[str, Any]) -> str:
    if p["running_job"]:
        return f"yes (your job {p['running_job']} runs)"
    if p["starts_now"] is None and not p.get("decided_by"):
        return "unknown: " + str(p["error"] or "not asked yet")
    if p["starts_now"] is None:
        return "cannot run: " + str(p["error"] or "Slurm did not say")
    return "yes" if p["starts_now"] else "no"


def render(view: dict[str, Any]) -> str:
    """The text table: one line per profile, then what is free per partition."""
    rows: list[tuple[str, ...]] = [
        ("PROFILE", "STARTS NOW", "ESTIMATED START", "PARTITION", "HOST")
    ]
    for p in view["profiles"]:
        start = "" if p["starts_now"] else p["start_time"] or ""
        host = f"ssh slurm-{p['profile']}"
        rows.append((p["profile"], _yes_no(p), start or "-", p["partition"] or "-", host))
    lines = _columns(rows)
    free: list[tuple[str, ...]] = [("PARTITION", "IDLE CPUS", "FREE GPUS")]
    for part in view["partitions"]:
        gpus = ", ".join(f"{k}:{v}" for k, v in part["free_gpus"].items()) or "-"
        free.append((part["partition"], f"{part['idle_cpus']}/{part['total_cpus']}", gpus))
    lines += ["", *_columns(free)] if len(free) > 1 else []
    if view.get("error"):
        lines.append(f"(free capacity unknown: {view['error']})")
    lines.append(f"(checked {view['checked']}; answers are reused for up to 30 s)")
    return "\n".join(lines) + "\n"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def idle_words(job: dict[str, Any]) -> str:
    """When idle reaping cancels a job if nobody comes back."""
    grace = job.get("idle_grace") or 0
    if not grace:
        return "never cancelled for idleness"
    if job.get("idle_cancel_in") is not None:
        return f"cancelled in {_span(job['idle_cancel_in'])} unless someone connects"
    return f"cancelled {_span(grace)} after the last session leaves"


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
