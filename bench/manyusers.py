"""Many users on one login node: USERS test users, each with its own islurmd (started on
demand by its first ssh), one job and two open idle sessions through islurm (the login node's
config: ssh holds the socket), and the same user's two idle sessions to the same job through
plain `nc` as ProxyCommand (the comparison: what such sessions cost with no tool at all).

During one idle window it takes slurmctld's RPC counts per user (`sdiag`, "Remote Procedure
Call statistics by user": the difference over the window, nothing reset), and the memory (RSS
and PSS) and CPU time (schedstat) of every islurm process of those users (islurmd, and any
shim) and of every nc. The users are created here and removed afterwards, with their jobs.

The test cluster has 2 nodes x 16 CPUs: 50 one-CPU jobs do not fit. The jobs go to a
partition made at run time (`scontrol create`, deleted afterwards) that oversubscribes two
CPUs per node (OverSubscribe=FORCE, MaxCPUsPerNode=2): the other partitions keep the rest.
Not Hidden: squeue without --all does not show a hidden partition's jobs (islurmd's poll
would take them for gone).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench import sshconf
from bench.env import PREFIX, User, log, stop_pid
from bench.remote import close_sessions

NAME = "islurmb{:02d}"
PARTITION = "islurmbench"
CONFIG = f"""\
# islurm benchmark config (bench/manyusers.py): the default daemon intervals.
[update]
auto_update = false

[profiles.cpu]
description = "benchmark, many users: 1 CPU shared, 16 MB"
sbatch = ["--partition={PARTITION}", "--cpus-per-task=1", "--mem=16M", "--time=00:30:00"]
"""
HOLD = "echo up; exec cat >/dev/null"


def sdiag_by_user() -> dict[str, int]:
    """slurmctld's RPC count per user name since its start (or the last `sdiag -r`)."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    counts, inside = {}, False
    for line in out.splitlines():
        if line.startswith("Remote Procedure Call statistics by user"):
            inside = True
        elif inside and not line.startswith("\t"):
            break
        elif inside:
            m = re.match(r"\s*(\S+)\s+\(\s*\d+\)\s+count:(\d+)", line)
            if m:
                counts[m.group(1)] = int(m.group(2))
    if not inside:
        raise RuntimeError(f"sdiag printed no per-user RPC statistics:\n{out}")
    return counts


class Partition:
    """The bench's own oversubscribed partition, made at run time (no slurm.conf change)."""

    def __init__(self) -> None:
        self.made = False
        shown = subprocess.run(
            ["scontrol", "show", "partition", PARTITION], capture_output=True, check=False
        )
        if shown.returncode != 0:
            subprocess.run(
                ["scontrol", "create", f"PartitionName={PARTITION}", "Nodes=c1,c2",
                 "OverSubscribe=FORCE:50", "MaxCPUsPerNode=2",
                 "MaxTime=INFINITE", "State=UP"],
                check=True, capture_output=True,
            )  # fmt: skip
            self.made = True

    def remove(self) -> None:
        if self.made:
            subprocess.run(
                ["scontrol", "delete", f"PartitionName={PARTITION}"],
                capture_output=True,
                check=False,
            )


class Crowd:
    """The test users: created (unless there) and removed by us, with all they ran."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.created: list[str] = []
        self.users: list[User] = []
        self.sessions: list[subprocess.Popen[bytes]] = []

    def create(self, n: int) -> None:
        """n users (made unless there; each one recorded at once for cleanup), prepared."""
        cfg = Path(self.workdir, "crowd-config.toml")
        cfg.write_text(CONFIG)
        for i in range(1, n + 1):
            name = NAME.format(i)
            try:
                pwd.getpwnam(name)
            except KeyError:
                subprocess.run(
                    ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                    check=True,
                    capture_output=True,
                )
                self.created.append(name)
            self.users.append(User(name))
        prepare = Path(__file__).resolve().parents[1] / "cluster" / "prepare-user.sh"

        def prep(u: User) -> None:
            r = subprocess.run(
                ["bash", str(prepare), u.name, PREFIX, str(cfg)], capture_output=True, text=True
            )
            if r.returncode != 0:
                raise RuntimeError(f"prepare-user {u.name}: exit {r.returncode}: {r.stderr}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(prep, self.users))

    def daemons(self) -> list[int]:
        return [p for u in self.users if (p := u.daemon_pid()) is not None]

    def cleanup(self) -> None:
        close_sessions(self.sessions)
        self.sessions = []
        for u in self.users:
            subprocess.run(["scancel", "-u", u.name], capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while any(u.live_jobs() for u in self.users) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self.daemons():  # started on demand by our ssh sessions
            stop_pid(pid)
        for u in self.users:
            if u.name not in self.created:
                continue
            name, uid = u.name, u.uid
            deadline = time.monotonic() + 30
            while any(p.info["uids"].real == uid for p in psutil.process_iter(["uids"])):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                shutil.rmtree(os.path.dirname(u.sock))


#: each session's stderr, kept in the run's work dir for the error if it does not open
ERRS: dict[int, str] = {}


def _open(user: User, config: str, host: str, workdir: str) -> subprocess.Popen[bytes]:
    path = os.path.join(workdir, f"{user.name}-{len(ERRS)}.stderr")
    with open(path, "wb") as err:
        p: subprocess.Popen[bytes] = user.popen(
            user.ssh_argv(host, HOLD, config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    ERRS[p.pid] = path
    return p


def _wait_up(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    import select

    deadline = time.monotonic() + timeout
    for p in procs:
        assert p.stdout
        ready, _, _ = select.select([p.stdout], [], [], max(0.1, deadline - time.monotonic()))
        if not ready or p.stdout.readline() != b"up\n":
            err = Path(ERRS[p.pid]).read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"a session did not open: {p.args!r} (exit {p.poll()}): {err}")


def _procs(uids: set[int], want: str) -> list[psutil.Process]:
    """The crowd's processes: `islurm` (islurmd, shims) or `nc` (the baseline's)."""
    out = []
    for p in psutil.process_iter(["uids", "cmdline", "name"]):
        if p.info["uids"] is None or p.info["uids"].real not in uids:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if (want == "islurm" and ("islurmd" in cmd or "proxyshim" in cmd)) or (
            want == "nc" and p.info["name"] == "nc"
        ):
            out.append(p)
    return out


def _cpu(procs: list[psutil.Process]) -> float:
    """user+sys seconds of these processes (the kernel keeps ended threads' share in it)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _memory(procs: list[psutil.Process]) -> tuple[float, float]:
    rss = pss = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            m = p.memory_full_info()
            rss, pss = rss + m.rss, pss + m.pss
    return rss / 1e6, pss / 1e6


def measure(n: int, workdir: str, window: float) -> dict[str, Any]:
    log(f"many-users: {n} users, each 1 job + 2 islurm + 2 nc idle sessions; {window:.0f} s")
    part = Partition()
    crowd = None
    try:
        t0 = time.monotonic()
        crowd = Crowd(workdir)
        crowd.create(n)
        log(f"many-users: {n} users prepared in {time.monotonic() - t0:.0f} s")
        first = [_open(u, u.ssh_config, "slurm-cpu", workdir) for u in crowd.users]
        crowd.sessions += first
        _wait_up(first, 300)
        second = [_open(u, u.ssh_config, "slurm-cpu", workdir) for u in crowd.users]
        crowd.sessions += second
        _wait_up(second, 120)
        nc = []
        for u in crowd.users:
            jobs = [j for j in u.live_jobs() if j[1] == "RUNNING"]
            rec = u.record(jobs[0][0]) if len(jobs) == 1 else None
            if rec is None:
                raise RuntimeError(f"{u.name}: expected one running job with a record: {jobs}")
            path = os.path.join(u.home, ".ssh", "bench_nc")
            text = sshconf.variants(u.ssh_config, "slurm-cpu", rec["node"], int(rec["port"]))
            Path(path).write_text(text)
            os.chown(path, u.uid, u.gid)
            nc += [_open(u, path, "bench-nc", workdir) for _ in range(2)]
        crowd.sessions += nc
        _wait_up(nc, 120)
        log(f"many-users: {len(crowd.sessions)} sessions open; settling 15 s")
        time.sleep(15)  # the connects' busy polls are over
        uids = {u.uid for u in crowd.users}
        ours, theirs = _procs(uids, "islurm"), _procs(uids, "nc")
        cpu0 = _cpu(ours), _cpu(theirs)
        before, w0 = sdiag_by_user(), time.monotonic()
        time.sleep(window)
        after, w1 = sdiag_by_user(), time.monotonic()
        cpu1 = _cpu(ours), _cpu(theirs)
        minutes = (w1 - w0) / 60
        names = [u.name for u in crowd.users]
        rpcs = {k: after.get(k, 0) - before.get(k, 0) for k in names}
        mem_i, mem_n = _memory(ours), _memory(theirs)
        alive = sum(p.poll() is None for p in crowd.sessions)
        return {
            "users": n,
            "window_s": w1 - w0,
            "rpcs_per_min_total": sum(rpcs.values()) / minutes,
            "rpcs_by_user": rpcs,
            "rpcs_other_users_per_min": sum(
                after.get(k, 0) - before.get(k, 0) for k in after if k not in names
            )
            / minutes,
            "islurm_processes": len(ours),
            "islurm_kinds": sorted({" ".join(p.cmdline()[1:2])[-40:] for p in ours}),
            "islurm_rss_mb": mem_i[0],
            "islurm_pss_mb": mem_i[1],
            "islurm_cpu_s_per_hour": (cpu1[0] - cpu0[0]) * 3600 / (w1 - w0),
            "nc_processes": len(theirs),
            "nc_rss_mb": mem_n[0],
            "nc_pss_mb": mem_n[1],
            "nc_cpu_s_per_hour": (cpu1[1] - cpu0[1]) * 3600 / (w1 - w0),
            "islurm_sessions": 2 * n,
            "sessions_alive": alive,
        }
    finally:
        if crowd is not None:
            log("many-users: closing sessions, cancelling jobs, removing the users")
            crowd.cleanup()
        part.remove()
