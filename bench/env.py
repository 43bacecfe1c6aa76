"""The bench's world: cluster, installed product, the test user, its daemon, Slurm wrappers.

Processes run as the unprivileged user are started with Popen(user=, group=) straight from
this (root) process: `runuser` would add its PAM set-up to every timed ssh."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster" / "testcluster.sh"
PREPARE = REPO / "cluster" / "prepare-user.sh"
# The bench's own install: the e2e tests (of any worktree) reinstall /opt/islurm-test.
PREFIX = "/opt/islurm-bench"
USER = "islurmtest2"  # never islurmtest: the e2e tests own that one
SOURCES = ("daemon", "proxyshim", "sessionhooks", "config", "pyproject.toml")
SLURM_TOOLS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")

BENCH_CONFIG = """\
# islurm benchmark config (bench/env.py): the default daemon intervals, a small cpu profile
# and a wide one.
[update]
auto_update = false

[profiles.cpu]
description = "benchmark: 1 CPU, 256 MB"
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:30:00"]

[profiles.wide]
description = "benchmark: 8 CPUs (waits while another user's job holds the CPUs: the queue phase)"
sbatch = ["--partition=interactive", "--cpus-per-task=8", "--mem=256M", "--time=00:30:00"]
"""


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def ensure_cluster_and_product() -> None:
    log("cluster/testcluster.sh up")
    r = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"bench: the test cluster did not come up:\n{r.stdout}\n{r.stderr}")
    # Always from this tree: other worktrees' test runs install into the same prefix.
    log(f"installing the product into {PREFIX} (make e2e-install)")
    r = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "e2e-install", f"E2E_PREFIX={PREFIX}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        sys.exit(f"bench: make e2e-install failed:\n{r.stdout}\n{r.stderr}")


def product() -> str:
    """The source the installed product was built from: the commit, and whether the product's
    files had uncommitted changes (make e2e-install installs the working tree)."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip()

    dirty = git("status", "--porcelain", "--", *SOURCES)
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


class User:
    """The benchmark's unprivileged user."""

    def __init__(self, name: str = USER) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.state = f"{self.home}/.local/state/islurm"
        self.ssh_config = f"{self.home}/.ssh/islurm_config"  # the login node's: fdpass
        self.relay_config = f"{self.home}/.ssh/islurm_relay_config"  # the shim relays
        self.sock = f"/tmp/islurm-{self.uid}/islurmd.sock"  # noqa: S108 - PROTOCOL.md §1

    def env(self, path_first: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
        path = f"{PREFIX}/bin:/usr/bin:/bin"
        env = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
            "PATH": f"{path_first}:{path}" if path_first else path,
        }
        env.update(extra or {})
        return env

    def popen(self, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> Any:
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=env or self.env(),
            cwd=self.home,
            **kw,
        )

    def run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def ssh_argv(self, host: str, command: str, config: str | None = None) -> list[str]:
        return ["ssh", "-F", config or self.ssh_config, "-o", "BatchMode=yes", host, command]

    def prepare(self, workdir: str) -> None:
        cfg = Path(workdir, "config.toml")
        cfg.write_text(BENCH_CONFIG)
        r = subprocess.run(
            ["bash", str(PREPARE), self.name, PREFIX, str(cfg)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode != 0:
            sys.exit(f"bench: prepare-user failed: {r.stderr}")

    # -- Slurm, as Slurm sees this user ---------------------------------------------------
    def live_jobs(self) -> list[tuple[str, str, str]]:
        out = subprocess.run(
            ["squeue", "-u", self.name, "-h", "-t", "PD,R,CF,CG,S", "-o", "%i|%T|%j"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel through the daemon (its view stays true), then scancel -u; wait until gone."""
        if self.daemon_pid() is not None and self.live_jobs():
            self.run(["islurmctl", "cancel", "--all"], timeout=30)
        subprocess.run(["scancel", "-u", self.name], capture_output=True, check=False)
        deadline = time.monotonic() + timeout
        while self.live_jobs():
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs of {self.name} still there: {self.live_jobs()}")
            time.sleep(0.1)

    def record(self, job_id: str) -> dict[str, Any] | None:
        import json

        try:
            return json.loads(Path(self.state, "jobs", f"{job_id}.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    # -- the user's daemon ----------------------------------------------------------------
    def daemon_pid(self) -> int | None:
        try:
            pid = int(Path(self.sock).with_suffix(".lock").read_text().strip() or 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError):
            return None
        if b"islurm" not in cmdline or "\nState:\tZ" in status:
            return None
        return pid


def stop_pid(pid: int, timeout: float = 10) -> None:
    """TERM, wait, KILL: one process, by its pid."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Workdir:
    """A fresh temporary dir (mkdtemp): wrappers, counters, traces; readable by the user."""

    def __init__(self, user: User) -> None:
        self.path = tempfile.mkdtemp(prefix="islurm-bench.")
        os.chmod(self.path, 0o755)  # noqa: S103 - the user's daemon runs the wrappers
        self.bin = os.path.join(self.path, "slurm-bin")
        os.mkdir(self.bin, 0o755)
        self.calls = os.path.join(self.path, "slurm-calls.log")
        Path(self.calls).touch()
        os.chown(self.calls, user.uid, user.gid)
        for tool in SLURM_TOOLS:
            real = shutil.which(tool)
            if real is None:
                sys.exit(f"bench: {tool} not found")
            script = os.path.join(self.bin, tool)
            # One appended line per call (time, tool, job id if inside a job), then the real one.
            Path(script).write_text(
                "#!/bin/bash\n"
                f'printf \'%s {tool} %s\\n\' "$EPOCHREALTIME" "${{SLURM_JOB_ID:--}}"'
                f" >> {shlex.quote(self.calls)}\n"
                f'exec {shlex.quote(real)} "$@"\n'
            )
            os.chmod(script, 0o755)  # noqa: S103 - run by the user's daemon and jobs

    def user_file(self, name: str, user: User) -> str:
        path = os.path.join(self.path, name)
        Path(path).touch()
        os.chown(path, user.uid, user.gid)
        return path

    def slurm_calls(
        self, t0: float = 0.0, t1: float = float("inf")
    ) -> list[tuple[float, str, str]]:
        """(time, tool, job id or "-") of the wrapped calls in [t0, t1]."""
        out = []
        for line in Path(self.calls).read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                t = float(parts[0])
                if t0 <= t <= t1:
                    out.append((t, parts[1], parts[2]))
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Daemon:
    """The user's islurmd, started by us with the Slurm wrappers first on its PATH."""

    def __init__(self, user: User, work: Workdir) -> None:
        self.user, self.work = user, work
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: IO[bytes] | None = None

    def start(self) -> int:
        old = self.user.daemon_pid()
        if old is not None:
            log(f"stopping {self.user.name}'s running islurmd (pid {old})")
            stop_pid(old)
        self.out = open(os.path.join(self.work.path, "islurmd.out"), "wb")  # noqa: SIM115
        self.proc = self.user.popen(
            [f"{PREFIX}/bin/islurmd"],
            env=self.user.env(path_first=self.work.bin),
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while self.user.daemon_pid() != self.proc.pid or not os.path.exists(self.user.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: islurmd did not start (see {self.out.name})")
            time.sleep(0.05)
        return self.proc.pid

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc.wait(10)
            self.proc = None
        if self.out is not None:
            self.out.close()
            self.out = None
