"""Issue 15 acceptance on the real cluster: what would start now (and when), why a connect
waits, fallbacks, modules per profile, and how many Slurm calls all of that costs."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, User

SMALL = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
GPU = ["--partition=gpu", "--gres=gpu:1", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
TWO = ["--partition=interactive", "--cpus-per-task=2", "--mem=512M", "--time=00:20:00"]


def _config(modulepath: str) -> str:
    mod = [*SMALL, f"--export=ALL,MODULEPATH={modulepath}"]
    return f"""\
[daemon]
poll_busy = 0.25
poll_idle = 5

[profiles.bad]
sbatch = ["--partition=nosuchpartition", "--time=00:05:00"]

[profiles.cpu-small]
sbatch = {json.dumps(SMALL)}

[profiles.gpu-small]
sbatch = {json.dumps(GPU)}

[profiles.cpu-fb]
sbatch = {json.dumps(TWO)}
fallbacks = ["cpu-small"]
fallback_after = "5s"

[profiles.cpu-keep]
sbatch = {json.dumps([*TWO[:-1], "--time=00:19:00"])}
fallbacks = ["cpu-small"]
fallback_after = "5s"
keep_pending = true

[profiles.mod]
sbatch = {json.dumps(mod)}
modules = ["testmod/1.0"]

[profiles.modbad]
sbatch = {json.dumps(mod)}
modules = ["nosuchmod/9.9"]
"""


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def queued(cluster: Cluster, user: User, tmp_path: Path) -> Iterator[User]:
    """islurmtest with this file's profiles, while islurmtest2 holds 15 of 16 CPUs per node."""
    user.prepare(_config(f"{cluster.dir}/modulefiles"), tmp_path)
    blocker = subprocess.run(
        [
            *("runuser", "-u", cluster.user2, "--", "sbatch", "--parsable", "--chdir=/tmp"),
            *("--output=/dev/null", "--partition=interactive", "--nodes=2"),
            *("--ntasks-per-node=1", "--cpus-per-task=15", "--mem=1G", "--time=5"),
            *("--job-name=islurm-e2e-blocker", "--wrap", "sleep 300"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    try:
        _wait_for(
            lambda: _squeue_state(blocker) == "RUNNING", 30, f"the blocker job {blocker} to run"
        )
        yield user
    finally:
        subprocess.run(["scancel", blocker], capture_output=True, check=False)


def _squeue_state(job_id: str) -> str:
    argv = ["squeue", "-h", "-j", job_id, "-o", "%T"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def _profile_jobs(user: User, profile: str) -> list[dict[str, str]]:
    return [j for j in user.live_jobs() if j["name"] == f"islurm-{profile}"]


def _calls(user: User) -> int:
    status = json.loads(user.islurmctl("status", "--json").stdout)
    return int(status["watcher"]["slurm_calls"])


class Lines:
    """A child's stderr, line by line, with timestamps (read in a thread)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.t0 = time.monotonic()
        self.seen: queue.Queue[tuple[float, str]] = queue.Queue()
        assert proc.stderr is not None
        stream = proc.stderr
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        self.all: list[str] = []

    def _read(self, stream: Any) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed by _end once the child ended
            for raw in stream:
                self.seen.put((time.monotonic() - self.t0, raw.decode("utf-8", "replace")))

    def until(self, pattern: str, timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, line = self.seen.get(timeout=left)
            except queue.Empty:
                break
            self.all.append(line)
            if re.search(pattern, line):
                return at, line
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s: {self.all}")


@contextlib.contextmanager
def _spawned(user: User, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child ssh, killed on the way out (a waiting connect would otherwise wait 30 min)."""
    proc = user.popen(argv, stdin=subprocess.DEVNULL, stdout=-1, stderr=-1)
    try:
        yield proc
    finally:
        _end(proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _waiting(user: User, profile: str) -> subprocess.Popen[bytes]:
    return user.popen(
        user.ssh_argv(f"slurm-{profile}", "true"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_available_fallback_and_keep_pending(queued: User) -> None:
    user = queued
    r = user.islurmctl("profiles", "--available", "--json", timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    view = json.loads(r.stdout)
    by_name = {p["profile"]: p for p in view["profiles"]}
    assert by_name["cpu"]["starts_now"] is False and by_name["cpu"]["start_time"]
    assert by_name["cpu-small"]["starts_now"] is True
    assert by_name["gpu-small"]["starts_now"] is True and by_name["gpu-small"]["partition"] == "gpu"
    assert by_name["cpu-small"]["decided_by"] == "sinfo" and by_name["cpu"]["decided_by"] == "sinfo"
    assert by_name["bad"]["starts_now"] is None and "partition" in by_name["bad"]["error"]
    parts = {p["partition"]: p for p in view["partitions"]}
    assert parts["interactive"]["idle_cpus"] == 2 and parts["gpu"]["free_gpus"] == {"gpu": 8}
    # One --test-only per distinct set of options and one sinfo; a second ask is cached.
    before = _calls(user)
    again = user.islurmctl("profiles", "--available")
    assert again.returncode == 0 and b"cpu-small" in again.stdout
    assert _calls(user) == before
    print(f"profiles --available: {len(by_name)} profiles, calls until then: {before}")

    # Fallback: lands on cpu-small's job, says so, the pending cpu-fb job is cancelled.
    with _spawned(user, user.ssh_argv("slurm-cpu-fb", "echo J=$SLURM_JOB_ID; sleep 60")) as fb:
        lines = Lines(fb)
        try:
            lines.until(r"this connect gets profile cpu-small instead", 30)
        except AssertionError:
            print(user.islurmctl("profiles", "--available").stdout.decode())
            print(
                subprocess.run(
                    ["squeue", "-o", "%i %u %j %T %r %S %C"], capture_output=True
                ).stdout.decode()
            )
            print(Path(user.home, ".local/state/islurm/log/islurmd.log").read_text()[-6000:])
            raise
        assert fb.stdout is not None
        job = fb.stdout.readline().decode().strip().removeprefix("J=")
        small = _profile_jobs(user, "cpu-small")
        assert [j["job_id"] for j in small] == [job]
        _wait_for(lambda: not _profile_jobs(user, "cpu-fb"), 10, "the cpu-fb job to go")
        listed = json.loads(user.islurmctl("list", "--json").stdout)
        assert [j["fallback_for"] for j in listed if j["job_id"] == job] == [["cpu-fb"]]

    # keep_pending: the pending job stays, and the next connect once it runs lands on it.
    kept = user.ssh("slurm-cpu-keep", "echo J=$SLURM_JOB_ID", timeout=60)
    assert kept.returncode == 0, kept.stderr.decode()
    assert kept.stdout.decode().strip() == f"J={job}"
    assert b"it stays queued" in kept.stderr
    pending = _profile_jobs(user, "cpu-keep")
    assert [j["state"] for j in pending] == ["PENDING"]
    subprocess.run(["scancel", "-n", "islurm-e2e-blocker"], capture_output=True, check=False)
    later = user.ssh("slurm-cpu-keep", "echo J=$SLURM_JOB_ID", timeout=60)
    assert later.stdout.decode().strip() == f"J={pending[0]['job_id']}", later.stderr.decode()


def test_waiting_connects_say_why_when_and_what_starts_now(queued: User) -> None:
    user = queued
    # A waiting connect says why, when, and what starts now, within 5 s.
    with _spawned(user, user.ssh_argv("slurm-cpu", "true")) as proc:
        lines = Lines(proc)
        at, line = lines.until(r"\((Resources|Priority)\).*estimated start .*cpu-small", 5)
        assert "(ssh slurm-cpu-small)" in line and "waiting because" in line
        print(f"waiting words after {at:.1f} s: {line.strip()}")
        one = _calls(user)
        time.sleep(10)
        one = _calls(user) - one
    waiters = [_waiting(user, "cpu") for _ in range(10)]
    try:
        time.sleep(2)
        ten = _calls(user)
        time.sleep(10)
        ten = _calls(user) - ten
    finally:
        for w in waiters:
            _end(w)
    print(f"Slurm calls in 10 s: 1 waiting connect {one}, 10 waiting connects {ten}")
    assert ten <= one * 1.5 + 5, (one, ten)  # shared polls: not 10x
    assert ten < 120


def test_modules_are_loaded_once_and_a_missing_one_fails_the_connect(
    user: User, cluster: Cluster, tmp_path: Path
) -> None:
    user.prepare(_config(f"{cluster.dir}/modulefiles"), tmp_path)
    r = user.ssh("slurm-mod", "echo T=$TESTMOD_LOADED; testmod-hello; module list 2>&1")
    if r.returncode != 0:  # what the session saw
        print(user.ssh("slurm-mod", "env; declare -F; cat $BASH_ENV | head -20").stdout.decode())
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "T=1.0" in out and "hello from testmod" in out and "testmod/1.0" in out
    # An interactive login shell: Debian's /etc/profile resets PATH; the module's PATH and
    # the `module` command are back before the first prompt.
    login = user.run(
        ["ssh", "-F", user.ssh_config, "-o", "BatchMode=yes", "-tt", "slurm-mod"],
        input=b"testmod-hello; type module >/dev/null && echo $((40+2))M; exit\n",
        timeout=60,
    )
    said = login.stdout.decode(errors="replace")
    assert "hello from testmod" in said and "42M" in said, said
    bad = user.ssh("slurm-modbad", "true")
    assert bad.returncode != 0
    said = bad.stderr.decode()
    assert "nosuchmod/9.9" in said and "Lmod has detected the following error" in said, said
    _wait_for(lambda: not _profile_jobs(user, "modbad"), 15, "the modbad job to end")
