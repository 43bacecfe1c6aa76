"""Issue 5 acceptance on the real cluster: list/cancel, gpuswap, config refusals and reload."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import TEST_CONFIG, User


def _scontrol(job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "-d", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout


def test_list_json_matches_squeue_and_cancel_by_profile_id_and_all(user: User) -> None:
    for profile in ("cpu", "short"):
        assert user.ssh(f"slurm-{profile}", "true").returncode == 0
    listed = json.loads(user.islurmctl("list", "--json").stdout)
    squeue = {j["job_id"]: j for j in user.live_jobs()}
    assert {j["job_id"] for j in listed} == set(squeue)
    for job in listed:
        assert squeue[job["job_id"]]["state"] == job["state"] == "RUNNING"
        assert squeue[job["job_id"]]["node"] == job["node"]
        assert squeue[job["job_id"]]["name"] == f"islurm-{job['profile']}"
        assert job["time_left"] and job["time_used"]
    by_profile = {j["profile"]: j["job_id"] for j in listed}
    # by profile
    r = user.islurmctl("cancel", "short", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"cancelled": [by_profile["short"]]}
    # by id
    r = user.islurmctl("cancel", by_profile["cpu"])
    assert r.returncode == 0 and f"job {by_profile['cpu']}" in r.stdout.decode()
    user.wait_no_jobs()
    # --all
    for profile in ("cpu", "short"):
        assert user.ssh(f"slurm-{profile}", "true").returncode == 0
    assert len(user.live_jobs()) == 2
    r = user.islurmctl("cancel", "--all")
    assert r.returncode == 0, r.stderr
    user.wait_no_jobs()
    assert [j for j in user.live_jobs() if j["name"].startswith("islurm-")] == []
    # nothing left to cancel: a clear error and its own exit code
    r = user.islurmctl("cancel", "cpu")
    assert r.returncode == 4 and b"no job for profile cpu" in r.stderr


def test_gpuswap_lands_on_a_gpu_with_the_cpu_jobs_exclusions(user: User, tmp_path: Path) -> None:
    user.stop_daemon()
    user.prepare(
        TEST_CONFIG + "\n[profiles.cpu]\n"
        'sbatch = ["--partition=interactive", "--time=00:20:00", "--exclude=c1"]\n',
        tmp_path,
    )
    cpu = user.ssh("slurm-cpu", "hostname")
    assert cpu.returncode == 0 and cpu.stdout.decode().strip() == "c2", cpu
    r = user.islurmctl("gpuswap", "--no-shell", "--json", timeout=180)
    assert r.returncode == 0, r.stderr.decode()
    swap = json.loads(r.stdout)
    assert swap["node"] == "c2" and swap["host"] == "slurm-gpu"
    # scontrol shows the per-node allocation (JOB_GRES) a moment after the job starts.
    deadline = time.monotonic() + 15
    while "JOB_GRES=" not in (details := _scontrol(swap["job_id"])):
        assert time.monotonic() < deadline, details
        time.sleep(0.2)
    assert "Partition=gpu " in details
    assert "ExcNodeList=c1 " in details
    assert "JOB_GRES=gpu:1" in details, details  # a GPU allocated to the job
    assert b"keeping job" in r.stderr  # told the user what was carried over
    # the GPU job is a regular gpu session now: ssh slurm-gpu reuses it
    gpu = user.ssh("slurm-gpu", "echo $SLURM_JOB_ID")
    assert gpu.stdout.decode().strip() == swap["job_id"]
    # --release-cpu cancels the CPU job once the GPU session is ready
    r = user.islurmctl("gpuswap", "--no-shell", "--release-cpu", timeout=180)
    assert r.returncode == 0, r.stderr.decode()
    assert b"Reconnect VS Code" in r.stdout
    deadline = time.monotonic() + 30
    while any(j["name"] == "islurm-cpu" for j in user.live_jobs()):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _write_config(user: User, text: str) -> Path:
    path = Path(f"{user.home}/.config/islurm/config.toml")
    path.write_text(text)
    os.chown(path, user.uid, -1)
    return path


def test_bad_configs_are_refused_by_file_line_key_and_the_daemon_keeps_serving(
    user: User,
) -> None:
    assert user.ssh("slurm-short", "true").returncode == 0  # daemon up with TEST_CONFIG
    pid = user.daemon_pid()
    path = _write_config(user, TEST_CONFIG + '\n[profiles.gpu]\nidel_grace = "5m"\n')
    line = TEST_CONFIG.count("\n") + 3
    r = user.islurmctl("profiles")
    assert r.returncode == 7
    assert f"{path}:{line}: profiles.gpu.idel_grace: unknown key".encode() in r.stderr
    r = user.islurmctl("reload")
    assert r.returncode == 7 and b"keeps its previous config" in r.stderr
    assert f"{path}:{line}".encode() in r.stderr
    # wrong type, reloaded by SIGHUP as systemd's ExecReload would
    _write_config(user, TEST_CONFIG + "\n[defaults]\nidle_grace = true\n")
    assert pid is not None
    os.kill(pid, signal.SIGHUP)
    r = user.islurmctl("profiles")
    assert r.returncode == 7 and b"defaults.idle_grace: expected a duration" in r.stderr
    assert f"config.toml:{line}:".encode() in r.stderr
    time.sleep(0.5)
    log = Path(f"{user.home}/.local/state/islurm/log/islurmd.log").read_text()
    assert '"config.reload_refused"' in log and "defaults.idle_grace" in log
    # still serving, still the same daemon, with the last good profiles
    assert user.daemon_pid() == pid
    again = user.ssh("slurm-short", "echo ok")
    assert again.returncode == 0 and again.stdout == b"ok\n"
    # a good config is taken on reload
    _write_config(user, TEST_CONFIG + '\n[profiles.extra]\nsbatch = ["--time=00:05:00"]\n')
    assert user.islurmctl("reload").returncode == 0
    status = json.loads(user.islurmctl("status", "--json").stdout)
    assert status["pid"] == pid
    r = user.run(["islurm-proxy", "extra"], timeout=60, input=b"")
    assert b"unknown profile" not in r.stderr
