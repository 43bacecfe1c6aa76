"""Issue 14 on the real cluster: no relay on the login node, no Slurm calls while idle, no
daemon when unused. Behaviour only; the costs are measured by `make bench`."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.e2e.conftest import User

QUIET = """\
[daemon]
poll_busy = 0.25

[profiles.short]
description = "a small CPU job for tests"
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
"""


def _islurm_processes(user: User) -> list[str]:
    """Command lines of the user's islurm shims (anything carrying session bytes)."""
    found = []
    for proc in psutil.process_iter(["username", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["username"] == user.name and ("proxyshim" in cmd or "islurm-proxy" in cmd):
            found.append(cmd)
    return found


def test_a_login_node_session_has_no_relay(user: User) -> None:
    config = Path(user.ssh_config).read_text()  # what `ssh-config --local` writes by default
    assert "ProxyUseFdpass yes" in config and "--fdpass" in config
    argv = user.ssh_argv("slurm-cpu", "echo open; head -c 5 >/dev/null; echo done")
    with user.popen(argv, stdout=-1, stderr=-1, stdin=-1) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"open\n"
        assert _islurm_processes(user) == []  # ssh holds the socket itself
        proc.stdin.write(b"12345")  # bytes still flow both ways without a relay
        proc.stdin.close()
        assert proc.stdout.readline() == b"done\n"
        proc.wait(timeout=30)
    assert proc.returncode == 0


def _connections_to(pid: int, port: int) -> int:
    """islurmd's established TCP connections to a job's sshd at `port`."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.raddr and c.raddr.port == port and c.status == "ESTABLISHED")


def test_a_connect_soon_after_another_takes_islurmds_spare_connection(
    user: User, tmp_path: Path
) -> None:
    user.prepare(QUIET, tmp_path)
    first = user.ssh("slurm-short", "echo $SLURM_JOB_ID")
    assert first.returncode == 0, first.stderr.decode()
    job_id = first.stdout.decode().strip()
    assert job_id.isdigit() and user.logged_jobs("session.spare_handed") == []
    second = user.ssh("slurm-short", "echo $SLURM_JOB_ID")  # ssh takes islurmd's connection
    assert second.returncode == 0, second.stderr.decode()
    assert second.stdout.decode().strip() == job_id
    assert user.logged_jobs("session.spare_handed") == [job_id]
    # The spare made after the second connect is closed unused after SPARE_TTL (10 s), well
    # inside the job's sshd's LoginGraceTime (20 s): never handed on at its end.
    listed = json.loads(user.islurmctl("list", "--json").stdout)
    port = int(next(j["port"] for j in listed if j["job_id"] == job_id))
    pid = user.daemon_pid()
    assert pid is not None
    deadline = time.monotonic() + 5
    while _connections_to(pid, port) != 1:
        assert time.monotonic() < deadline, "islurmd made no spare after the second connect"
        time.sleep(0.1)
    made = time.monotonic()
    while _connections_to(pid, port):
        assert time.monotonic() < made + 15, "the unused spare was kept past its time"
        time.sleep(0.25)
    assert time.monotonic() - made > 5  # kept for its time, not dropped at once
    third = user.ssh("slurm-short", "true")  # no spare now: the shim connects itself
    assert third.returncode == 0, third.stderr.decode()
    assert user.logged_jobs("session.spare_handed") == [job_id]


GRACE = """\
[daemon]
poll_busy = 0.25

[profiles.short]
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
idle_grace = "5s"
"""


def _reaped_after(user: User, job_id: str, ended: float) -> None:
    """The job is reaped within 30 s of its last session's end, and by the grace, not at once."""
    deadline = ended + 30
    while user.live_jobs():
        assert time.monotonic() < deadline, "the job was not reaped after the session ended"
        time.sleep(0.5)
    assert time.monotonic() - ended > 3.0  # the grace counted from the disconnect
    assert user.logged_jobs("job.idle_reaped") == [job_id]


def test_a_session_without_relay_holds_its_job_past_the_grace_and_frees_it_after(
    user: User, tmp_path: Path
) -> None:
    user.stop_daemon()
    user.prepare(GRACE, tmp_path)
    argv = user.ssh_argv("slurm-short", "echo open; read line; echo bye")
    with user.popen(argv, stdout=-1, stderr=-1, stdin=-1) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"open\n"
        assert _islurm_processes(user) == []
        job_id = user.live_jobs()[0]["job_id"]
        time.sleep(12)  # more than twice the grace, idle but connected
        assert [j["job_id"] for j in user.live_jobs()] == [job_id]
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert proc.stdout.readline() == b"bye\n"
        proc.wait(timeout=30)
        ended = time.monotonic()
    _reaped_after(user, job_id, ended)


def _laptop_config(user: User, login_port: int) -> Path:
    """The laptop's route as `islurmctl setup` writes it (the shim `--via` the login node,
    ProxyUseFdpass), with the cluster user as the laptop user: its own key is authorized."""
    home = Path(user.home)
    known = home / ".ssh/e2e_login_known_hosts"
    hostkey = Path("/tmp/islurm-e2e-login/hostkey.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{login_port} {' '.join(hostkey)}\n")
    config = home / ".ssh/e2e_laptop_config"
    shim = f"{user.prefix}/share/islurm/current/venv/bin/python"
    lines = [
        "Host e2e-login",
        "    HostName 127.0.0.1",
        f"    Port {login_port}",
        f"    UserKnownHostsFile {known}",
        "    StrictHostKeyChecking yes",
        "Host slurm-short",
    ]
    for line in Path(user.ssh_config).read_text().split("Host slurm-short\n")[1].splitlines():
        if not line.strip():
            break
        if line.strip().startswith("ProxyCommand"):
            words = line.split()
            launch = next(w for w in words if w.endswith("proxyshim/launch.py"))
            line = (
                f"    ProxyCommand {shim} -I -S {launch} --via e2e-login --ssh-config {config} "
                f"--remote {user.prefix}/bin/islurm-proxy short"
            )
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    for path in (known, config):
        os.chown(path, user.uid, -1)
        path.chmod(0o600)
    return config


def test_a_session_by_the_laptops_remembered_route_holds_its_job_past_the_grace(
    user: User, login_node: int, tmp_path: Path
) -> None:
    """The laptop's remembered route (proxyshim/shortcut.py) reaches the job's sshd without
    islurmd; the job's own session count holds it, then frees it once the session ends."""
    user.stop_daemon()
    user.prepare(GRACE, tmp_path)
    routes = Path(user.home) / ".cache/islurm/routes"
    shutil.rmtree(routes, ignore_errors=True)
    config = _laptop_config(user, login_node)
    try:
        first = user.run(user.ssh_argv("slurm-short", "true", str(config)), timeout=180)
        assert first.returncode == 0, first.stderr.decode()
        (job_id,) = [j["job_id"] for j in user.live_jobs()]
        # the full route: islurmd handed that session
        assert user.logged_jobs("session.handed") == [job_id]
        argv = user.ssh_argv("slurm-short", "echo open; read line; echo bye", str(config))
        with user.popen(argv, stdout=-1, stderr=-1, stdin=-1) as proc:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline() == b"open\n"
            time.sleep(12)  # more than twice the grace since the first session ended
            assert [j["job_id"] for j in user.live_jobs()] == [job_id]
            # the remembered route: islurmd never heard
            assert user.logged_jobs("session.handed") == [job_id]
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            assert proc.stdout.readline() == b"bye\n"
            proc.wait(timeout=30)
            ended = time.monotonic()
        _reaped_after(user, job_id, ended)
    finally:
        shutil.rmtree(routes, ignore_errors=True)
        for name in ("e2e_laptop_config", "e2e_login_known_hosts"):
            (Path(user.home) / ".ssh" / name).unlink(missing_ok=True)


def test_a_job_cancelled_under_a_session_without_relay_is_told_on_its_terminal(
    user: User,
) -> None:
    master, slave = os.openpty()  # ssh's stderr is the user's terminal
    os.fchown(slave, user.uid, -1)
    try:
        argv = user.ssh_argv("slurm-cpu", "echo open; sleep 300")
        with user.popen(argv, stdout=-1, stderr=slave, stdin=-3) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"open\n"
            assert _islurm_processes(user) == []
            job_id = user.live_jobs()[0]["job_id"]
            subprocess.run(["scancel", job_id], check=True)
            proc.wait(timeout=60)
            said = _read_until(master, f"job {job_id} (cpu) was cancelled".encode(), 20)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode != 0
    assert f"islurm: job {job_id} (cpu) was cancelled" in said, said


def test_a_job_that_ends_with_no_daemon_running_leaves_no_files(user: User) -> None:
    """The job's session count goes with the job even when no islurmd sees the end (it had
    exited or was stopped): the hook, its only writer, removes it on TERM."""
    r = user.ssh("slurm-cpu", "true")
    assert r.returncode == 0, r.stderr.decode()
    job_id = user.live_jobs()[0]["job_id"]
    jobs = Path(user.home, ".local/state/islurm/jobs")
    count = jobs / f"{job_id}.sessions"
    deadline = time.monotonic() + 20
    while not count.exists():  # written at the login (1), then at the logout (0)
        assert time.monotonic() < deadline, f"no {count.name} after a session"
        time.sleep(0.1)
    user.stop_daemon()
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while user.live_jobs() or sorted(p.name for p in jobs.glob(f"{job_id}.*")):
        assert time.monotonic() < deadline, sorted(p.name for p in jobs.glob(f"{job_id}.*"))
        time.sleep(0.2)


def _read_until(fd: int, wanted: bytes, timeout: float) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            seen += os.read(fd, 4096)
    return seen.decode(errors="replace")


def _wrap_slurm(user: User, where: Path) -> tuple[str, Path]:
    """PATH wrappers that log every Slurm command islurmd (and its jobs) run, in `where`,
    which the test user can reach (pytest's tmp_path sits under a 0700 dir of root's)."""
    wrap = where / "bin"
    wrap.mkdir(parents=True)
    calls = where / "slurm-calls.log"
    calls.touch()
    for tool in ("squeue", "sbatch", "scancel", "sinfo", "scontrol"):
        script = wrap / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexec /usr/bin/{tool} "$@"\n')
        script.chmod(0o755)
    where.chmod(0o755)
    calls.chmod(0o666)
    return f"{wrap}:{user.prefix}/bin:/usr/bin:/bin", calls


def test_no_slurm_call_in_an_idle_minute_with_sessions_open(user: User, tmp_path: Path) -> None:
    user.stop_daemon()
    user.prepare(QUIET, tmp_path)
    where = Path(tempfile.mkdtemp(prefix="islurm-e2e-wrap-", dir="/tmp"))
    path, calls = _wrap_slurm(user, where)
    # The shims start islurmd with ssh's environment: the wrappers come first on its PATH.
    argv = user.argv(user.ssh_argv("slurm-short", "echo open; sleep 100"), env={"PATH": path})
    sessions = [subprocess.Popen(argv, stdout=-1, stdin=-3) for _ in range(2)]
    try:
        for s in sessions:
            assert s.stdout is not None and s.stdout.readline() == b"open\n"
        time.sleep(10)  # the polls the connects asked for are over
        before = calls.read_text().splitlines()
        assert any(line.startswith("sbatch") for line in before)  # the wrappers do count
        time.sleep(60)
        during = calls.read_text().splitlines()[len(before) :]
        assert [j["state"] for j in user.live_jobs()] == ["RUNNING"]
    finally:
        for s in sessions:
            s.kill()
            s.wait()
            if s.stdout is not None:
                s.stdout.close()
        shutil.rmtree(where, ignore_errors=True)
    assert during == []


def test_an_unused_daemon_exits_and_the_next_connect_starts_one(user: User, tmp_path: Path) -> None:
    user.stop_daemon()
    user.prepare(QUIET.replace("[daemon]\n", '[daemon]\nidle_exit = "10s"\n'), tmp_path)
    cfg = Path(user.home) / ".config/islurm/config.toml"
    assert 'idle_exit = "10s"' in cfg.read_text()
    assert user.ssh("slurm-short", "true").returncode == 0
    first = user.daemon_pid()
    assert first is not None
    assert user.islurmctl("cancel", "--all").returncode == 0
    user.wait_no_jobs()
    deadline = time.monotonic() + 40
    while user.daemon_pid() == first:
        assert time.monotonic() < deadline, "the unused daemon did not exit"
        time.sleep(0.5)
    again = user.ssh("slurm-short", "hostname")
    assert again.returncode == 0, again.stderr.decode()
    assert user.daemon_pid() not in (None, first)
