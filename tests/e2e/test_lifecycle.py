"""Issue 3 acceptance: one job per profile under load, daemon crashes, controller outages,
outside cancels, idle reaping, job environment, walltime warnings — all on the real cluster."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import Cluster, User


def _wait_for(predicate, timeout: float, what: str, step: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_32_concurrent_cold_connects_submit_exactly_one_job(user: User) -> None:
    def connect(_: int) -> subprocess.CompletedProcess[bytes]:
        return user.ssh("slurm-cpu", "true", timeout=240)

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(connect, range(32)))
    failed = [r.stderr.decode() for r in results if r.returncode != 0]
    assert failed == []
    assert len(user.jobs(all_states=True)) == 1


def test_two_daemons_connecting_at_once_leave_one_job(user: User) -> None:
    second_socket = f"/tmp/islurm-{user.uid}/second.sock"
    env2 = {"ISLURM_SOCKET": second_socket}

    def connect(env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
        return user.run(user.ssh_argv("slurm-cpu", "echo $SLURM_JOB_ID"), timeout=240, env=env)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            a, b = pool.map(connect, [{}, env2])
        assert a.returncode == 0, a.stderr.decode()
        assert b.returncode == 0, b.stderr.decode()
        assert a.stdout == b.stdout  # both landed in the same job
        live = _wait_for(lambda: len(user.live_jobs()) == 1 and user.live_jobs(), 30, "one job")
        assert live[0]["job_id"] == a.stdout.decode().strip()
    finally:
        user.stop_daemon(second_socket)


def test_daemon_sigkill_loses_no_session_and_no_waiting_connect(user: User) -> None:
    assert user.ssh("slurm-cpu", "true").returncode == 0
    job_id = user.live_jobs()[0]["job_id"]
    block = os.urandom(32 * 1024 * 1024)
    with user.popen(
        user.ssh_argv("slurm-cpu", "sleep 2; sha256sum"), stdin=-1, stdout=-1, stderr=-1
    ) as streaming:
        assert streaming.stdin is not None
        streaming.stdin.write(block[: len(block) // 2])
        pid = user.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # A connect that starts while no daemon runs starts a new one, which adopts the job.
        waiting = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
        streaming.stdin.write(block[len(block) // 2 :])
        streaming.stdin.close()
        streaming.stdin = None
        out, err = streaming.communicate(timeout=120)
    assert streaming.returncode == 0, err.decode()
    assert out.split()[0].decode() == hashlib.sha256(block).hexdigest()
    assert waiting.returncode == 0, waiting.stderr.decode()
    assert waiting.stdout.decode().strip() == job_id
    assert [j["job_id"] for j in user.jobs(all_states=True)] == [job_id]
    assert user.daemon_pid() not in (None, pid)


def test_controller_outage_during_connect_is_reported_and_survived(
    user: User, cluster: Cluster
) -> None:
    stopped = cluster.script("stop-ctld")
    assert stopped.returncode == 0, stopped.stderr
    try:
        with user.popen(
            user.ssh_argv("slurm-cpu", "hostname"), stdout=-1, stderr=-1, stdin=-3
        ) as proc:
            time.sleep(20)
            started = cluster.script("start-ctld")
            assert started.returncode == 0, started.stderr
            out, err = proc.communicate(timeout=180)
    finally:
        cluster.script("start-ctld")
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() in cluster.nodes
    assert b"unreachable" in err.lower()


def test_outside_scancel_ends_the_session_with_a_message(user: User) -> None:
    # The relay says it (exit 6); a session without one: test_footprint.py.
    argv = user.ssh_argv("slurm-cpu", "echo open; sleep 300", config=user.relay_config)
    with user.popen(argv, stdout=-1, stderr=-1, stdin=-3) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        job_id = user.live_jobs()[0]["job_id"]
        subprocess.run(["scancel", job_id], check=True)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    text = err.decode()
    assert f"job {job_id}" in text and "cancelled" in text.lower(), text
    again = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().strip() not in ("", job_id)


def test_idle_grace_reaps_the_job_only_after_the_last_session(user: User, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user.stop_daemon()
    user.prepare(
        '[profiles.cpu]\nsbatch = ["--partition=interactive", "--time=00:20:00"]\n'
        'idle_grace = "5s"\n[daemon]\npoll_busy = 0.25\npoll_idle = 5\n',
        tmp_path,
    )
    with user.popen(
        user.ssh_argv("slurm-cpu", "echo open; sleep 9"), stdout=-1, stderr=-1, stdin=-3
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        job_id = user.live_jobs()[0]["job_id"]
        time.sleep(7)  # longer than the grace, but a session is open
        assert [j["job_id"] for j in user.live_jobs()] == [job_id]
        proc.communicate(timeout=30)
        ended = time.monotonic()
    _wait_for(lambda: not user.live_jobs(), 30, "the idle job to be cancelled")
    took = time.monotonic() - ended
    assert 3.0 < took < 15.0, took
    log = Path(f"{user.home}/.local/state/islurm/log/islurmd.log").read_text()
    reaped = [json.loads(ln) for ln in log.splitlines() if '"job.idle_reaped"' in ln]
    assert [(r["job_id"], r["grace"]) for r in reaped] == [(job_id, 5.0)]


def test_job_environment_reaches_the_ssh_session(user: User) -> None:
    r = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID $SLURM_JOB_NODELIST $SLURM_JOB_NAME")
    assert r.returncode == 0, r.stderr.decode()
    job = user.live_jobs()[0]
    assert r.stdout.decode().split() == [job["job_id"], job["node"], "islurm-cpu"]


def test_walltime_warning_reaches_an_open_terminal(user: User, tmp_path) -> None:  # type: ignore[no-untyped-def]
    user.stop_daemon()
    user.prepare(
        '[profiles.cpu]\nsbatch = ["--partition=interactive", "--time=00:01:00"]\n'
        'walltime_warnings = ["50s"]\n',
        tmp_path,
    )
    pid, fd = pty.fork()
    if pid == 0:  # child: a real terminal session
        argv = user.argv(["ssh", "-tt", "-F", user.ssh_config, "slurm-cpu", "sleep 60"])
        os.execvp(argv[0], argv)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        while b"time limit" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"reaches its time limit in" in seen, seen.decode(errors="replace")
