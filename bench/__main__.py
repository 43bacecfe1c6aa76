"""`python -m bench [--quick] [--only NAME[,NAME]]`: see bench/__init__.py."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    connect,
    env,
    lifecycle,
    local,
    manyusers,
    queue,
    remote,
    rows,
    sshconf,
    stats,
    twohop,
)

PHASES = (
    "startup",
    "shim-throughput",
    "cold",
    "daemon-start",
    "concurrent",
    "warm",
    "ssh-throughput",
    "two-hops",
    "idle",
    "queue",
    "many-users",
)
NEEDS_JOB = {"warm", "ssh-throughput", "two-hops", "idle"}
NEEDS_DAEMON = {"cold", "daemon-start", "concurrent", "queue", *NEEDS_JOB}
RESULTS = env.REPO / "bench-results"


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller transfers")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(PHASES)}")
    a = p.parse_args()
    a.phases = [x for x in PHASES if x in a.only.split(",")] if a.only else list(PHASES)
    unknown = set(a.only.split(",")) - set(PHASES) - {""}
    if unknown:
        p.error(f"unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}")
    return a


def _reps(quick: bool) -> dict[str, Any]:
    if quick:
        return {"startup": 10, "shim": 3, "cold": 3, "concurrent": 2, "warm": 6, "ssh": 3,
                "bytes": 256 << 20, "shim_bytes": 256 << 20, "window": 60.0, "serving": 4,
                "dpairs": 3, "hop_pairs": 6, "hop_reps": 2, "users": 5,
                "crowd_window": 60.0}  # fmt: skip
    return {"startup": 30, "shim": 10, "cold": 10, "concurrent": 8, "warm": 40, "ssh": 16,
            "bytes": 1 << 30, "shim_bytes": 512 << 20, "window": 300.0, "serving": 10,
            "dpairs": 12, "hop_pairs": 40, "hop_reps": 6, "users": 50,
            "crowd_window": 180.0}  # fmt: skip


def _ensure_job(ctx: connect.Ctx, proxy: list[str], variants: str) -> None:
    """A running job, and the baseline hosts pointing at its sshd."""
    if not any(j[1] == "RUNNING" for j in ctx.user.live_jobs()):
        ctx.ssh_ok("slurm-cpu")
    _, rec = ctx.running_job()
    ctx.node, ctx.port = rec["node"], int(rec["port"])
    _write_variants(ctx, proxy, variants, ctx.node, ctx.port)


def _write_variants(ctx: connect.Ctx, proxy: list[str], path: str, node: str, port: int) -> None:
    site = os.path.dirname(os.path.dirname(os.path.dirname(proxy[-1])))
    shimtrace = str(env.REPO / "bench" / "shimtrace.py")
    ctx.traced = [*proxy[:-1], shimtrace, site, ctx.trace, "cpu"]
    text = sshconf.variants(
        ctx.user.ssh_config,
        "slurm-cpu",
        node,
        port,
        " ".join(shlex.quote(w) for w in ctx.traced),
        sshconf.proxy_line(ctx.user.relay_config, "slurm-cpu"),
        None if ctx.login is None else (ctx.login.port, ctx.login.known_hosts, path),
    )
    Path(path).write_text(text)
    os.chown(path, ctx.user.uid, ctx.user.gid)
    os.chmod(path, 0o600)


def measure(a: argparse.Namespace, user: env.User, work: env.Workdir) -> dict[str, Any]:
    n = _reps(a.quick)
    raw: dict[str, Any] = {"phase_seconds": {}}
    # The shim as a relay (the --relay config), without PROFILE: the local phases and the
    # traced cold connects need it to carry the bytes (with --fdpass it hands ssh the socket).
    proxy = sshconf.proxy_argv(user.relay_config, "slurm-cpu")[:-1]

    def run_local() -> None:
        for phase in ("startup", "shim-throughput"):
            if phase in a.phases:
                t0 = time.monotonic()
                fakes = local.Fakes(work.path, n["shim_bytes"])
                try:
                    raw.update(
                        local.run(proxy, fakes, n["startup"], n["shim"], n["shim_bytes"], {phase})
                    )
                finally:
                    fakes.stop()
                raw["phase_seconds"][phase] = time.monotonic() - t0

    if "idle" not in a.phases:
        run_local()
    if "many-users" in a.phases and not set(a.phases) & NEEDS_DAEMON:
        raw["many-users"] = manyusers.measure(n["users"], work.path, n["crowd_window"])
    if not set(a.phases) & NEEDS_DAEMON:
        return raw
    daemon = env.Daemon(user, work)
    env.log(f"islurmd for {user.name}: pid {daemon.start()} (Slurm wrappers first on its PATH)")
    variants = os.path.join(work.path, "ssh_variants")
    trace = work.user_file("shim-trace.log", user)
    ctx = connect.Ctx(user, work, variants, trace)
    if "two-hops" in a.phases:
        ctx.login = twohop.LoginSshd(work.path, user)
    _write_variants(ctx, proxy, variants, "none.invalid", 1)
    steps: dict[str, Callable[[], Any]] = {
        "cold": lambda: connect.cold(ctx, n["cold"]),
        "daemon-start": lambda: lifecycle.measure(ctx, daemon, n["serving"], n["dpairs"]),
        "concurrent": lambda: connect.concurrent(ctx, n["concurrent"]),
        "warm": lambda: connect.warm(ctx, n["warm"]),
        "ssh-throughput": lambda: remote.throughput(ctx, n["ssh"], n["bytes"]),
        "two-hops": lambda: twohop.measure(ctx, n["hop_pairs"], n["hop_reps"], n["bytes"]),
        # The local phases need neither Slurm nor islurmd: they use the first idle window.
        "idle": lambda: remote.idle(ctx, daemon.pid, n["window"], (1, 20), run_local),
        "queue": lambda: queue.measure(ctx),
        # Last: its own users, daemons and jobs (the bench user's are gone by then).
        "many-users": lambda: manyusers.measure(n["users"], work.path, n["crowd_window"]),
    }
    try:
        for phase, step in steps.items():
            if phase not in a.phases:
                continue
            t0 = time.monotonic()
            if phase in NEEDS_JOB:
                _ensure_job(ctx, proxy, variants)
            if phase == "many-users":
                user.cancel_all()
                daemon.stop()
            raw[phase] = step()
            raw["phase_seconds"][phase] = time.monotonic() - t0
            _save_raw(raw)
    finally:
        env.log("cleaning up: cancelling islurmtest2's jobs, stopping its islurmd")
        try:
            user.cancel_all()
        finally:
            daemon.stop()
            if ctx.login is not None:
                ctx.login.stop()
    return raw


def _save_raw(raw: dict[str, Any]) -> None:
    """The samples so far: a phase or the table failing later must not lose them."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "raw-latest.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    py = subprocess.run(
        [f"{env.PREFIX}/share/islurm/venv/bin/python", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    socat = subprocess.run(["socat", "-V"], capture_output=True, text=True, check=False).stdout
    socat_v = next((ln.strip() for ln in socat.splitlines() if "version" in ln), "?")
    return {
        "nproc": str(os.cpu_count()),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "cpu": cpu,
        "python": f"{py} (product, {env.PREFIX}); bench {platform.python_version()}",
        "openssh": ssh,
        "socat": socat_v,
        "slurm": subprocess.run(
            ["sinfo", "-V"], capture_output=True, text=True, check=False
        ).stdout.strip(),
    }


METHOD = """\
How: everything runs as the test user islurmtest2 against the local two-node Slurm test
cluster (cluster/testcluster.sh), product installed from this tree into /opt/islurm-bench at
the start of the run, loopback only. islurmd is started by the bench with wrappers for
sbatch/squeue/scancel/scontrol first on its PATH (inherited by its jobs), which log each call.
`ssh slurm-cpu` uses the login node's generated config (`ssh-config --local`: ProxyUseFdpass,
the shim hands ssh the socket and exits); "relay" is `ssh-config --local --relay`. Baselines
use the same Host block with only the route swapped: `ProxyCommand socat - TCP:node:port`,
or direct (`HostName`/`Port`) to the same job's sshd. Ratios marked "per-pair" are medians of
the ratios of interleaved pairs (order alternating). The cold-connect split uses
bench/shimtrace.py (the installed relay shim, wrapped from outside), the readiness record's
`started`, and the hook's process start time from /proc (10 ms ticks). The daemon's start:
bench/dstart_probe.py spawns islurmd as the user and times it to its first answered
daemon.status. Two hops: a second sshd (root, 127.0.0.1, own host key, UsePAM yes) is the
login node; the laptop path is the config `islurmctl setup` writes on a laptop whose ssh has
ProxyUseFdpass: `islurm-proxy --via login cpu` (ssh -D to the login node, whose sshd opens the
connection to the job, no islurm process in the path once connected), the floor is
`ProxyJump login` to the job's sshd. Many
users: 50 users created for the run (and removed), each islurmd started on demand by its
first ssh, jobs in an oversubscribed partition made with `scontrol create` for the run;
slurmctld RPCs from `sdiag` per-user counts (differences over the window). The shim-alone
rows use a fake islurmd (bench/fakes.py) and loopback servers, during the first idle window.
Idle rates: 120 s windows, scaled; the daemon's CPU from /proc/PID/task/*/schedstat.
"""


def _write(result: dict[str, Any], table: str, full: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(result["started_epoch"]))
    text = json.dumps(result, indent=1, default=str) + "\n"
    (RESULTS / f"{stamp}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    if not full:
        return
    m = result["machine"]
    (RESULTS / "TABLE.md").write_text(
        f"# islurm benchmarks ({result['started']}, `make bench`"
        f"{' --quick' if result['quick'] else ''}, {result['duration_s']:.0f} s)\n\n"
        "Median [p10..p90] n=samples, variants interleaved within the run; ratios are the "
        "comparable part (a shared 2-vCPU machine: absolute times drift between runs).\n\n"
        + METHOD
        + "\n"
        + table
        + "\nMachine:\n\n"
        + "".join(f"- {k}: {v}\n" for k, v in m.items())
    )


def main() -> int:
    a = _args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the clean-up (finally) blocks: jobs, daemon, fakes

    signal.signal(signal.SIGTERM, interrupted)
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it starts Slurm and runs things as islurmtest2)")
    os.chdir(env.REPO)
    started = time.time()
    env.ensure_cluster_and_product()
    built_from = env.product()
    user = env.User()
    work = env.Workdir(user)
    try:
        env.log(f"preparing {user.name} (bench config, ssh config); clean state")
        user.cancel_all()
        old = user.daemon_pid()
        if old is not None:
            env.stop_pid(old)
        shutil.rmtree(user.state, ignore_errors=True)
        user.prepare(work.path)
        raw = measure(a, user, work)
    finally:
        work.cleanup()
    _save_raw(raw)
    table_rows = rows.build(raw)
    previous = None
    if (RESULTS / "latest.json").exists():
        try:
            previous = json.loads((RESULTS / "latest.json").read_text())
        except ValueError:
            previous = None
    result = {
        "version": 1,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "started_epoch": started,
        "duration_s": time.time() - started,
        "quick": a.quick,
        "phases": a.phases,
        "machine": {"product": built_from, **machine()},
        "loadavg": os.getloadavg(),
        "rows": [r.as_dict() for r in table_rows],
        "raw": raw,
    }
    print(stats.render(table_rows))
    _write(result, stats.render(table_rows, markdown=True), full=a.phases == list(PHASES))
    if previous is not None:
        print(stats.compare(previous, table_rows))
    env.log(f"done in {result['duration_s']:.0f} s; results in {RESULTS}/latest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
