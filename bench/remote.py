"""Through the real job's sshd: 1 GiB each way via `ssh slurm-cpu` and via direct ssh; then
the idle daemon: Slurm calls per minute with 1 and 20 open sessions, its RSS and CPU time."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.connect import Ctx
from bench.env import log
from bench.local import download, upload

UP_CMD = "printf g; exec cat >/dev/null"


def _busy() -> tuple[int, int]:
    """(all, idle) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


class ProxyCpu:
    """Samples the CPU time of ssh's children (its ProxyCommand) while ssh runs: ssh does not
    wait for them, so RUSAGE_CHILDREN never sees it."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.last: dict[int, float] = {}
        self.proc = proc
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.proc.poll() is None:
            try:
                for child in psutil.Process(self.proc.pid).children():
                    t = child.cpu_times()
                    self.last[child.pid] = t.user + t.system
            except psutil.Error:
                pass
            time.sleep(0.05)


def transfer(ctx: Ctx, name: str, host: str, total: int, out: dict[str, list[float]]) -> None:
    """`total` bytes down then up through `ssh host`: MiB/s, CPU of ssh and of its
    ProxyCommand per GiB, how busy the machine was; appended to out[name-down|up...]."""
    down_cmd = f"exec head -c {total} /dev/zero"
    for direction, fn, cmd in (("down", download, down_cmd), ("up", upload, UP_CMD)):
        samplers: list[ProxyCpu] = []

        def start(
            h: str = host, c: str = cmd, s: list[ProxyCpu] = samplers
        ) -> subprocess.Popen[bytes]:
            p = ctx.ssh(h, c, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            s.append(ProxyCpu(p))
            return p

        b0 = _busy()
        rate, cpu = fn(start, total)
        b1 = _busy()
        gib = total / (1 << 30)
        key = f"{name}-{direction}"
        out.setdefault(key, []).append(rate)
        out.setdefault(f"{key}-ssh-cpu-s-per-GiB", []).append(cpu)
        proxy = sum(samplers[0].last.values()) / gib if samplers else float("nan")
        out.setdefault(f"{key}-proxy-cpu-s-per-GiB", []).append(proxy)
        busy = 100 * (1 - (b1[1] - b0[1]) / max(1, b1[0] - b0[0]))
        out.setdefault(f"{key}-machine-busy-%", []).append(busy)


def throughput(ctx: Ctx, reps: int, total: int) -> dict[str, list[float]]:
    """Every round: `ssh slurm-cpu` (the login node's config: ssh holds the socket, no relay)
    and direct ssh; every other round the shim as a relay (`--relay` config); every fourth a
    socat ProxyCommand (what any relay process costs here). Order rotates per round."""
    log(
        f"ssh-throughput: {reps} x {total >> 20} MiB each way, slurm-cpu (fdpass) vs direct "
        "ssh (+ the relay, + socat)"
    )
    out: dict[str, list[float]] = {}
    for i in range(reps):
        hosts = [("islurm", "slurm-cpu"), ("direct", "bench-direct")]
        if i % 2 == 0:
            hosts.append(("relay", "bench-relay"))
        if i % 4 == 1:
            hosts.append(("socat", "bench-socat"))
        k = i % len(hosts)
        for name, host in hosts[k:] + hosts[:k]:
            transfer(ctx, name, host, total, out)
    return out


def open_sessions(ctx: Ctx, n: int, timeout: float = 120) -> list[subprocess.Popen[bytes]]:
    """n open sessions, each a remote `cat` reading its stdin: it ends with the connection
    (a remote `sleep` would outlive it: the test cluster's proctrack/linuxproc does not kill
    what a session leaves behind, not even on scancel)."""
    pipe = subprocess.PIPE
    procs = [
        ctx.ssh("slurm-cpu", "echo up; exec cat >/dev/null", stdin=pipe, stdout=pipe)
        for _ in range(n)
    ]
    deadline = time.monotonic() + timeout
    for p in procs:
        assert p.stdout
        ready, _, _ = select.select([p.stdout], [], [], max(0.1, deadline - time.monotonic()))
        if not ready or p.stdout.readline() != b"up\n":
            close_sessions(procs)
            raise RuntimeError(f"a session did not open (exit {p.poll()})")
    return procs


def close_sessions(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:  # EOF: the remote cat exits, the session ends, ssh exits
        if p.stdin:
            p.stdin.close()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for s in (p.stdout, p.stderr):
            if s:
                s.close()


class CpuMeter:
    """CPU time of all of a process's threads, in ns, from schedstat (psutil's 10 ms ticks are
    too coarse for an idle daemon). Sampled every half second so threads that end during the
    window (trio's idle worker threads do) keep what they used up to the last sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[str, int] = self._sample()
        self.used = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[str, int]:
        out = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    out[tid] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return out

    def _tick(self) -> None:
        now = self._sample()
        for tid, ns in now.items():
            self.used += ns - self.seen.get(tid, 0)  # a new thread counts from zero
        self.seen = now

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._tick()

    def stop(self) -> float:
        """Seconds used since the start."""
        self._stop.set()
        self._thread.join()
        self._tick()
        return self.used / 1e9


def idle(
    ctx: Ctx,
    daemon_pid: int,
    window: float,
    counts: tuple[int, ...],
    meanwhile: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """For each session count: Slurm calls in `window` idle seconds; daemon RSS and CPU.
    `meanwhile` runs during the first window (work that leaves islurmd and Slurm alone)."""
    out: dict[str, Any] = {}
    proc = psutil.Process(daemon_pid)
    for n in counts:
        log(f"idle: {n} open session(s), {window:.0f} s idle window")
        sessions = open_sessions(ctx, n)
        try:
            time.sleep(2.0)  # the connects' busy polls are over
            t0 = time.time()
            c0, meter = proc.cpu_times(), CpuMeter(daemon_pid)
            if meanwhile is not None:
                meanwhile()
                meanwhile = None
            time.sleep(max(0.0, t0 + window - time.time()))
            c1, own = proc.cpu_times(), meter.stop()
            t1 = time.time()
            mem = proc.memory_full_info()
            calls = ctx.work.slurm_calls(t0, t1)
            alive = sum(p.poll() is None for p in sessions)
            threads, fds = proc.num_threads(), proc.num_fds()
        finally:
            close_sessions(sessions)
        minutes = (t1 - t0) / 60
        ticks = (c1.user - c0.user) + (c1.system - c0.system)
        kids = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        out[str(n)] = {
            "window_s": t1 - t0,
            "daemon_calls": [c[1] for c in calls if c[2] == "-"],
            "job_calls": [c[1] for c in calls if c[2] != "-"],
            "daemon_calls_per_min": sum(c[2] == "-" for c in calls) / minutes,
            "job_calls_per_min": sum(c[2] != "-" for c in calls) / minutes,
            "call_times": [c[0] - t0 for c in calls],
            "cpu_s": own,
            "cpu_s_psutil_ticks": ticks,
            "cpu_s_per_hour": own * 3600 / (t1 - t0),
            "children_cpu_s_per_hour": kids * 3600 / (t1 - t0),
            "rss_mb": mem.rss / 1e6,
            "uss_mb": mem.uss / 1e6,
            "sessions_alive": alive,
            "threads": threads,
            "fds": fds,
        }
    return out


def shares_cpu() -> dict[str, float]:
    """Load while measuring: the machine is shared with other engineers' runs."""
    return {"loadavg_1m": os.getloadavg()[0]}
