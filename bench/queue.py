"""Queue awareness (issue 15): Slurm calls made by `islurmctl profiles --available` in a loop
and by 10 connects waiting at once, while another user's job holds the CPUs the `cpu`
profile needs. Counted by the Slurm wrappers on islurmd's PATH (bench/env.py)."""

from __future__ import annotations

import collections
import subprocess
import time
from typing import Any

from bench.connect import Ctx
from bench.env import PREFIX, log

OTHER_USER = "islurmtest"  # not the bench's user: "another user's job"


def _blocker() -> str:
    argv = [
        *("runuser", "-u", OTHER_USER, "--", "sbatch", "--parsable", "--chdir=/tmp"),
        *("--output=/dev/null", "--partition=interactive", "--nodes=2", "--ntasks-per-node=1"),
        *("--cpus-per-task=15", "--mem=1G", "--time=5", "--job-name=islurm-bench-blocker"),
        *("--wrap", "sleep 300"),
    ]
    job = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job.strip(), "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "RUNNING":
            return job.strip()
        time.sleep(0.2)
    raise RuntimeError(f"blocker job {job.strip()} did not start")


def _tools(calls: list[tuple[float, str, str]]) -> dict[str, int]:
    return dict(collections.Counter(tool for _, tool, _ in calls))


def measure(ctx: Ctx, loops: int = 10, waiters: int = 10, window: float = 10.0) -> dict[str, Any]:
    blocker = _blocker()
    try:
        seconds = []
        t0 = time.time()
        for _ in range(loops):
            s = time.perf_counter()
            r = ctx.user.run([f"{PREFIX}/bin/islurmctl", "profiles", "--available", "--json"])
            seconds.append(time.perf_counter() - s)
            if r.returncode != 0:
                raise RuntimeError(f"profiles --available: {r.stderr[-500:]}")
        loop_calls = ctx.work.slurm_calls(t0, time.time())
        log(f"profiles --available x{loops}: {len(loop_calls)} Slurm calls {_tools(loop_calls)}")
        # `wide` (8 CPUs) cannot start while the blocker holds 15 of each node's 16: they wait.
        procs = [ctx.ssh("slurm-wide", "true") for _ in range(waiters)]
        try:
            time.sleep(3.0)  # all submitted/attached; count the steady waiting
            t1 = time.time()
            time.sleep(window)
            wait_calls = ctx.work.slurm_calls(t1, time.time())
            done = [p.args for p in procs if p.poll() is not None]
            if done:
                raise RuntimeError(f"{len(done)} of the {waiters} connects did not wait")
            pending = [j for j in ctx.user.live_jobs() if j[1] == "PENDING"]
            if len(pending) != 1:
                raise RuntimeError(f"expected one pending job for the waiters, saw {pending}")
        finally:
            for p in procs:
                p.kill()
                p.wait(30)
        log(f"{waiters} waiting connects, {window:.0f} s: {len(wait_calls)} Slurm calls")
        return {
            "loops": loops,
            "available_calls": len(loop_calls),
            "available_tools": _tools(loop_calls),
            "available_seconds": seconds,
            "waiters": waiters,
            "window": window,
            "waiting_calls": len(wait_calls),
            "waiting_tools": _tools(wait_calls),
        }
    finally:
        subprocess.run(["scancel", blocker], capture_output=True, check=False)
        ctx.user.cancel_all()
