"""The daemon's own start: process start → serving, and what it adds to a cold connect.

serving   islurmd started REPS times by bench/dstart_probe.py (as the user: islurmd only
          answers its own uid), timed from the spawn to its first `daemon.status` answer
cold      interleaved pairs of cold connects (no job): with islurmd running, and with none
          (the shim starts it on demand). Both through the traced shim (bench-trace), so
          besides the totals (Slurm's 1 s scheduling loop makes those noisy) the share
          "shim start → sbatch" shows the daemon's start alone.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import connect
from bench.env import PREFIX, REPO, Daemon, log, stop_pid


def serving(ctx: connect.Ctx, reps: int) -> list[float]:
    """Seconds from spawn to the first answered daemon.status (no daemon must be running)."""
    env = ctx.user.env(path_first=ctx.work.bin)
    probe = [
        "/usr/bin/python3",
        "-I",
        str(REPO / "bench" / "dstart_probe.py"),
        f"{PREFIX}/bin/islurmd",
        ctx.user.sock,
        str(reps + 1),
    ]
    r = ctx.user.popen(probe, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = r.communicate(timeout=60 + 30 * reps)
    if r.returncode != 0:
        raise RuntimeError(f"dstart_probe: exit {r.returncode}: {err.decode()[-500:]}")
    times: list[float] = json.loads(out)
    return times[1:]  # the first pays for the page cache


def _cold_once(ctx: connect.Ctx, env: dict[str, str]) -> tuple[float, float]:
    """One cold connect through the traced shim: (total, shim start → sbatch) in seconds."""
    time.sleep(connect.SETTLE + random.uniform(0, 1))  # noqa: S311 - sample Slurm's 1 s loop
    skip = len(Path(ctx.trace).read_text().splitlines())
    t0 = time.perf_counter()
    e0 = time.time()
    p = ctx.ssh("bench-trace", "true", env=env)
    _, err = p.communicate(timeout=180)
    total = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"cold connect: exit {p.returncode}: {err.decode()[-500:]}")
    ev = connect._trace_events(ctx.trace, skip)
    sbatch = next((c[0] for c in ctx.work.slurm_calls(e0) if c[1] == "sbatch" and c[2] == "-"), 0)
    return total, sbatch - ev.get("start", float("nan")) if sbatch else float("nan")


def measure(ctx: connect.Ctx, daemon: Daemon, reps: int, pairs: int) -> dict[str, Any]:
    log(f"daemon-start: {reps} starts to serving; {pairs} pairs of cold connects with/without")
    out: dict[str, Any] = {"running-total": [], "starting-total": []}
    out["running-to-sbatch"], out["starting-to-sbatch"] = [], []
    env = ctx.user.env(path_first=ctx.work.bin)  # an on-demand islurmd inherits the wrappers
    ctx.user.cancel_all()
    daemon.stop()
    try:
        out["serving"] = serving(ctx, reps)
        for i in range(pairs + 1):  # the first pair is a warm-up
            for kind in ("running", "starting") if i % 2 == 0 else ("starting", "running"):
                ctx.user.cancel_all()
                own = ctx.user.daemon_pid()
                if kind == "running" and own is None:
                    daemon.start()
                elif kind == "starting" and own is not None:
                    daemon.stop()
                    if ctx.user.daemon_pid() is not None:  # one the shim started
                        stop_pid(own)
                total, to_sbatch = _cold_once(ctx, env)
                if i:
                    out[f"{kind}-total"].append(total)
                    out[f"{kind}-to-sbatch"].append(to_sbatch)
        ctx.user.cancel_all()
    finally:
        own = ctx.user.daemon_pid()
        if own is not None and (daemon.proc is None or own != daemon.proc.pid):
            stop_pid(own)  # the on-demand one; the bench's own comes back below
        daemon.start()
    return out
