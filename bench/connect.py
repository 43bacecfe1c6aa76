"""Connects through the real cluster: cold (split into shares), 32 at once, and warm against
a socat ProxyCommand and direct ssh to the same job's sshd."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.env import User, Workdir, log

SETTLE = 0.5  # after a cancel: let the daemon's kick-triggered poll pass before timing
CONFIRM_FRESH = 2.0  # daemon/manager.py: a banner check vouches for an endpoint this long
SPARE_TTL = 10.0  # daemon/spares.py: a connect's spare connection is handed out this long


class Ctx:
    def __init__(self, user: User, work: Workdir, variants: str, trace: str) -> None:
        self.user, self.work, self.variants, self.trace = user, work, variants, trace
        self.traced: list[str] = []  # the shim under bench/shimtrace.py, profile cpu
        self.node, self.port = "", 0  # the running job's sshd
        self.login: Any = None  # bench.twohop.LoginSshd, when the two-hops phase runs

    def ssh(self, host: str, command: str, **kw: Any) -> subprocess.Popen[bytes]:
        config = self.user.ssh_config if host.startswith("slurm-") else self.variants
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.PIPE)
        return self.user.popen(self.user.ssh_argv(host, command, config), **kw)  # type: ignore[no-any-return]

    def ssh_ok(self, host: str, command: str = "true", timeout: float = 180) -> float:
        """Run one ssh; its wall time in seconds (raises if it failed)."""
        t0 = time.perf_counter()
        p = self.ssh(host, command)
        _, err = p.communicate(timeout=timeout)
        t = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"ssh {host} {command}: exit {p.returncode}: {err.decode()[-500:]}")
        return t

    def running_job(self) -> tuple[str, dict[str, Any]]:
        """The user's one running islurm job and its readiness record."""
        jobs = [j for j in self.user.live_jobs() if j[1] == "RUNNING"]
        if len(jobs) != 1:
            raise RuntimeError(f"expected one running job, got {jobs}")
        rec = self.user.record(jobs[0][0])
        if rec is None:
            raise RuntimeError(f"job {jobs[0][0]} has no readiness record")
        return jobs[0][0], rec


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_start_epoch(pid: int) -> float:
    """When `pid` was forked, as epoch seconds (the kernel keeps clock ticks since boot)."""
    ticks = int(_stat_fields(pid)[19])  # field 22, starttime
    boot_now = time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time() - boot_now + ticks / os.sysconf("SC_CLK_TCK")


def hook_start(sshd_pid: int) -> float | None:
    """The session hook is the job's batch process (the script execs it) and sshd's parent."""
    try:
        ppid = int(_stat_fields(sshd_pid)[1])
        if b"sessionhooks" not in Path(f"/proc/{ppid}/cmdline").read_bytes():
            return None
        return process_start_epoch(ppid)
    except (OSError, ValueError, IndexError):
        return None


def _daemon_event(user: User, event: str, job_id: str) -> float:
    """The epoch time of the daemon's log line `event` for `job_id` (NaN if none)."""
    import json
    from datetime import datetime

    found = float("nan")
    for line in Path(user.state, "log", "islurmd.log").read_text().splitlines():
        if f'"{event}"' in line and f'"{job_id}"' in line:
            rec = json.loads(line)
            if rec.get("event") == event and rec.get("job_id") == job_id:
                found = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
    return found


def _trace_events(path: str, skip: int) -> dict[str, float]:
    lines = Path(path).read_text().splitlines()[skip:]
    return {w[1]: float(w[3]) for w in (ln.split() for ln in lines) if len(w) == 4}


def cold(ctx: Ctx, reps: int) -> dict[str, list[float]]:
    """`ssh bench-trace true` (the shim, timestamped) with no job: the shares of the wait."""
    log(f"cold: {reps} cold connects (+1 warm-up), cancelling the job between them")
    out: dict[str, list[float]] = {}
    for i in range(reps + 1):
        ctx.user.cancel_all()
        # slurmctld starts batch jobs on a 1 s loop, and cancel+wait+settle would lock our
        # submissions to one phase of it: a random delay samples the whole second.
        time.sleep(SETTLE + random.uniform(0, 1))  # noqa: S311 - not cryptography
        skip = len(Path(ctx.trace).read_text().splitlines())
        t0 = time.time()
        total = ctx.ssh_ok("bench-trace")
        t1 = time.time()
        job_id, rec = ctx.running_job()
        ev = _trace_events(ctx.trace, skip)
        calls = ctx.work.slurm_calls(t0, t1)
        ours = [c for c in calls if c[2] == "-"]
        sbatch = next((c[0] for c in ours if c[1] == "sbatch"), None)
        hook = hook_start(int(rec["pid"]))
        ready_logged = _daemon_event(ctx.user, "job.ready", job_id)
        listen = float(rec["started"])
        if i == 0:
            continue  # warm-up: slurmctld's first scheduling pass, page cache
        sample = {
            "total": total,
            "ssh+shim start": ev.get("start", float("nan")) - t0,
            "ours: shim start -> sbatch": (sbatch or float("nan")) - ev.get("start", float("nan")),
            "slurm: sbatch -> job process": (hook or float("nan")) - (sbatch or float("nan")),
            "hook: job process -> sshd listening": listen - (hook or float("nan")),
            "ours: sshd listening -> session.ready": ev.get("ready", float("nan")) - listen,
            "daemon: sshd listening -> job.ready logged": ready_logged - listen,
            "ours: session.ready -> first byte": ev.get("first_byte", float("nan"))
            - ev.get("ready", float("nan")),
            "ours: sshd listening -> splice started": ev.get("first_byte", float("nan")) - listen,
            "ssh: first byte -> done": t1 - ev.get("first_byte", float("nan")),
            "slurm calls (daemon)": float(len(ours)),
            "slurm calls (job)": float(len(calls) - len(ours)),
            "slurm calls": float(len(calls)),
            "job": float(job_id),
        }
        for k, v in sample.items():
            out.setdefault(k, []).append(v)
        seq = " ".join(
            f"{tool}{'@job' if job != '-' else ''}+{t - t0:.3f}" for t, tool, job in calls
        )
        out.setdefault("calls", []).append(seq)  # type: ignore[arg-type]
    return out


def concurrent(ctx: Ctx, reps: int, n: int = 32) -> dict[str, list[float]]:
    log(f"concurrent: {reps} x {n} cold connects at once")
    out: dict[str, list[float]] = {"wall": [], "jobs submitted": [], "failed": []}
    for _ in range(reps):
        ctx.user.cancel_all()
        time.sleep(SETTLE)
        t0, p0 = time.time(), time.perf_counter()
        procs = [ctx.ssh("slurm-cpu", "true") for _ in range(n)]
        failed = 0
        for p in procs:
            p.communicate(timeout=300)
            failed += p.returncode != 0
        wall = time.perf_counter() - p0
        calls = ctx.work.slurm_calls(t0, time.time())
        out["wall"].append(wall)
        out["jobs submitted"].append(float(sum(c[1] == "sbatch" and c[2] == "-" for c in calls)))
        out["failed"].append(float(failed))
    return out


def probe(ctx: Ctx, argv: list[str]) -> tuple[float, dict[str, float]]:
    """A ProxyCommand alone, as the user, pipes on stdin/stdout: ms from spawn to the first
    byte of the job's sshd banner, and the shim's trace events if it is the traced shim."""
    skip = len(Path(ctx.trace).read_text().splitlines())
    t0 = time.perf_counter()
    p = ctx.user.popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert p.stdin and p.stdout
    got = os.read(p.stdout.fileno(), 1)
    ms = (time.perf_counter() - t0) * 1000
    p.stdin.close()  # sshd sees EOF before any client banner and hangs up
    while os.read(p.stdout.fileno(), 65536):
        pass
    p.stdout.close()
    p.wait(30)
    if not got:
        raise RuntimeError(f"no banner through {argv}")
    return ms, _trace_events(ctx.trace, skip)


def warm(ctx: Ctx, reps: int) -> dict[str, list[float]]:
    """`ssh HOST true` on the running job, in rounds; each islurm time is paired with a socat
    time of its own round (the per-pair ratio is the comparable part on a noisy machine).

    A round: islurm (the login node's config: the shim hands ssh the socket), socat and direct,
    order rotating, "islurm" more than CONFIRM_FRESH after the previous islurm connect (the
    daemon re-checks the sshd's banner, as for a lone connect); then "islurm-burst" within a
    second (that check still vouches for the endpoint, as in VS Code's bursts of connects);
    then, after CONFIRM_FRESH again, the relay (`--relay` config) lone and a second socat,
    order alternating. Then the route alone, without ssh: spawn -> first banner byte through
    the traced relay shim (burst, and lone after the rounds) and through socat. Last, pairs
    of islurm and socat each more than SPARE_TTL after the previous islurm connect: a connect
    with no spare connection from islurmd."""
    log(f"warm: {reps} rounds of islurm / socat / direct, islurm-burst, relay / socat")
    hosts = [("islurm", "slurm-cpu"), ("socat", "bench-socat"), ("direct", "bench-direct")]
    out: dict[str, list[float]] = {name: [] for name, _ in hosts}
    socat = ["socat", "-", f"TCP:{ctx.node}:{ctx.port}"]
    for _, host in [*hosts, ("relay", "bench-relay")]:  # untimed: page cache, known_hosts
        ctx.ssh_ok(host)
    last = time.monotonic()

    def add(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    starts: list[tuple[str, float]] = []  # (lone|burst, epoch) of each islurm connect

    def traced(kind: str) -> None:
        starts.append((kind, time.time()))
        ms, ev = probe(ctx, ctx.traced)
        add(f"route-islurm-{kind}", ms)
        add(f"acquire-{kind}", (ev.get("ready", float("nan")) - ev.get("start", 0)) * 1000)

    def ssh(name: str, host: str) -> None:
        if name in ("islurm", "islurm-burst", "relay", "islurm-idle"):
            starts.append(("burst" if name.endswith("burst") else "lone", time.time()))
        add(name, ctx.ssh_ok(host) * 1000)

    def lone() -> None:
        time.sleep(max(0.0, last + CONFIRM_FRESH + 0.1 - time.monotonic()))

    for i in range(reps):
        lone()
        k = i % 3
        for name, host in hosts[k:] + hosts[:k]:
            ssh(name, host)
        ssh("islurm-burst", "slurm-cpu")
        traced("burst")
        add("route-socat", probe(ctx, socat)[0])
        last = time.monotonic()
        lone()
        pair = [("relay", "bench-relay"), ("socat-2", "bench-socat")]
        for name, host in pair if i % 2 == 0 else pair[::-1]:
            ssh(name, host)
        last = time.monotonic()
    for _ in range(max(5, reps * 2 // 5)):  # 8 of them: each waits out CONFIRM_FRESH
        lone()
        traced("lone")
        last = time.monotonic()
    # The first connect after a pause: more than SPARE_TTL after any islurm connect, so no
    # spare connection is left (daemon/spares.py) and the shim connects and waits for the
    # sshd's banner itself. Paired with a socat connect, order alternating.
    pair = [("islurm-idle", "slurm-cpu"), ("socat-idle", "bench-socat")]
    for i in range(max(6, reps // 2)):
        time.sleep(max(0.0, last + SPARE_TTL + 0.5 - time.monotonic()))
        for name, host in pair if i % 2 == 0 else pair[::-1]:
            ssh(name, host)
        last = time.monotonic()
    # Slurm calls the daemon makes because of a warm connect: those within 0.6 s of its start
    # (the watcher polls at most every poll_busy = 0.5 s; an idle poll lands here 2% of the time)
    calls = ctx.work.slurm_calls(starts[0][1] if starts else 0.0)
    for kind, t in starts:
        n = sum(1 for c in calls if c[2] == "-" and t <= c[0] <= t + 0.6)
        add(f"slurm-calls-{kind}", float(n))
    return out
