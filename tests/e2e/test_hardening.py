"""Issue 9 on the real cluster: stale endpoints, squatters, the CA on the login node only,
the job's sshd bounded, private state dirs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.conftest import TEST_CONFIG, Cluster, User


def _slurm_lists(job_id: str) -> bool:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30
    )
    return bool(out.stdout.strip())


def _connect_job(user: User, host: str = "slurm-cpu") -> tuple[str, str]:
    """(job id, stderr) of one successful `ssh HOST 'echo $SLURM_JOB_ID'`."""
    r = user.ssh(host, "echo $SLURM_JOB_ID")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    return r.stdout.decode().strip(), err


def _record(user: User, job_id: str) -> dict[str, object]:
    data = json.loads(Path(f"{user.home}/.local/state/islurm/jobs/{job_id}.json").read_text())
    assert isinstance(data, dict)
    return data


def test_reconnect_right_after_an_outside_scancel_succeeds_five_times(user: User) -> None:
    job_id, _ = _connect_job(user)
    for _ in range(5):
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        deadline = time.monotonic() + 30
        while _slurm_lists(job_id):
            assert time.monotonic() < deadline, f"squeue still lists {job_id}"
            time.sleep(0.02)
        new_id, err = _connect_job(user)  # at once, as an editor reconnects
        assert new_id != job_id
        # Nothing said describes the cancelled job as usable.
        assert f"job {job_id} (cpu) running" not in err, err
        job_id = new_id


TINY = (
    TEST_CONFIG
    + """
[profiles.tiny]
description = "a job that reaches its time limit within a test"
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:01:00"]
"""
)


def test_reconnects_across_a_time_limit_all_succeed(user: User, tmp_path: Path) -> None:
    user.prepare(TINY, tmp_path)
    seen: list[str] = []
    failures: list[str] = []
    deadline = time.monotonic() + 240

    def connect() -> None:
        r = user.ssh("slurm-tiny", "echo $SLURM_JOB_ID")
        if r.returncode != 0:
            failures.append(r.stderr.decode())
        elif r.stdout.decode().strip() not in seen:
            seen.append(r.stdout.decode().strip())

    # VS Code reconnects as soon as the connection drops: keep connecting until the first
    # job has reached its time limit and a second one serves, then a few more.
    while len(seen) < 2 and time.monotonic() < deadline:
        connect()
        time.sleep(0.3)
    for _ in range(3):
        connect()
    assert failures == []
    assert len(seen) == 2, f"the first job never reached its time limit: {seen}"
    first = subprocess.run(
        ["squeue", "-h", "--states=all", "-j", seen[0], "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert first.stdout.strip() == "TIMEOUT"


SQUATTER = r"""
import json, socket, sys, time
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
end = time.monotonic() + 20
while True:
    try:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
        break
    except OSError:
        if time.monotonic() > end:
            raise
        time.sleep(0.01)
s.listen(16)
print("bound", flush=True)
s.settimeout(0.2)
seen = {"connections": 0, "bytes": 0}
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    seen["connections"] += 1
    c.sendall(b"SSH-2.0-OpenSSH_9.2p1 squatter\r\n")  # a convincing one
    c.settimeout(1)
    try:
        while data := c.recv(65536):
            seen["bytes"] += len(data)
    except OSError:
        pass
    c.close()
print(json.dumps(seen), flush=True)
"""


@contextmanager
def squatter(
    cluster: Cluster, user: User, family: str, port: int
) -> Iterator[list[dict[str, int]]]:
    """Another user's server on the job's port; yields a list that gets what it saw."""
    other = User(cluster.user2, user.prefix)
    proc = other.popen(
        ["/usr/bin/python3", "-c", SQUATTER, family, str(port), "12"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"bound"
        result: list[dict[str, int]] = []
        yield result
        out, _ = proc.communicate(timeout=30)
        result.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def node_resolves_to_ipv6_first(node: str) -> Iterator[None]:
    """/etc/hosts names ::1 for the node before its IPv4 address (rewritten in place: it may
    be a bind mount), as on sites where node names resolve to IPv6 first."""
    hosts = Path("/etc/hosts")
    before = hosts.read_text()
    with open(hosts, "r+") as f:
        f.seek(0)
        f.write(f"::1 {node}\n" + before)
        f.truncate()
    try:
        yield
    finally:
        with open(hosts, "r+") as f:
            f.seek(0)
            f.write(before)
            f.truncate()


def test_a_squatter_on_the_ipv6_port_gets_nothing(user: User, cluster: Cluster) -> None:
    job_id, _ = _connect_job(user)
    rec = _record(user, job_id)
    assert rec["family"] == "inet" and rec["listen"] == "0.0.0.0"
    port, node = int(str(rec["port"])), str(rec["node"])
    with node_resolves_to_ipv6_first(node), squatter(cluster, user, "6", port) as saw:
        again, err = _connect_job(user)
        assert again == job_id, err
        host = user.ssh("slurm-cpu", "hostname")
        assert host.returncode == 0 and host.stdout.decode().strip() == node
    assert saw == [{"connections": 0, "bytes": 0}]


def test_a_squatter_on_a_freed_port_gets_nothing(user: User, cluster: Cluster) -> None:
    job_id, _ = _connect_job(user)
    rec = _record(user, job_id)
    port, sshd_pid = int(str(rec["port"])), int(str(rec["pid"]))
    os.kill(sshd_pid, signal.SIGKILL)  # the job's sshd dies; its port is free for anyone
    with squatter(cluster, user, "4", port) as saw:
        new_id, err = _connect_job(user)
        assert new_id != job_id, err
    assert saw == [{"connections": 0, "bytes": 0}]


def test_the_ca_stays_on_the_login_node_and_certs_name_their_job(
    user: User, tmp_path: Path
) -> None:
    job_id, _ = _connect_job(user)
    ca_dir = f"{user.home}/.config/islurm/ca"
    script = subprocess.run(
        ["scontrol", "write", "batch_script", job_id, "-"], capture_output=True, text=True
    )
    assert script.returncode == 0, script.stderr
    assert "ca" not in re.findall(r"--[a-z-]+", script.stdout)
    assert ca_dir not in script.stdout and "--ca-dir" not in script.stdout
    rec = _record(user, job_id)
    scan = subprocess.run(
        ["ssh-keyscan", "-c", "-p", str(rec["port"]), str(rec["node"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    cert = next(line for line in scan.stdout.splitlines() if "-cert-v01@openssh.com" in line)
    cert_file = tmp_path / "host-cert.pub"
    words = cert.split()  # `ssh-keyscan -c` prints "TYPE BLOB", without the host
    kind = next(i for i, w in enumerate(words) if w.endswith("-cert-v01@openssh.com"))
    cert_file.write_text(" ".join(words[kind : kind + 2]) + "\n")
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(cert_file)], capture_output=True, text=True
    ).stdout
    assert f'Key ID: "islurm-job-{job_id}"' in listing
    until = re.search(r"Valid: from \S+ to (\S+)", listing)
    assert until is not None
    end = time.mktime(time.strptime(until.group(1), "%Y-%m-%dT%H:%M:%S"))
    # cpu's limit is 8 h, the connect timeout 30 min: valid for what the job may pend and
    # run, plus clock skew; not open-ended.
    assert end <= time.time() + 8 * 3600 + 30 * 60 + 600
    ca_key = Path(ca_dir) / "ca"
    assert (ca_key.stat().st_mode & 0o777) == 0o600
    secret = ca_key.read_text().split("\n", 1)[1][:40]
    state = Path(f"{user.home}/.local/state/islurm")
    for path in state.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


CAPPED = "ISLURM_SSHD_LOG_CAP"


def test_the_jobs_sshd_is_bounded_before_authentication(user: User) -> None:
    # The job inherits the daemon's environment (sbatch --export=ALL): a small log cap.
    status = user.run(["islurmctl", "status"], env={CAPPED: "4096"})
    assert status.returncode == 0, status.stderr.decode()
    job_id, _ = _connect_job(user)
    rec = _record(user, job_id)
    node, port = str(rec["node"]), int(str(rec["port"]))
    config = next(Path("/tmp").glob(f"islurm-job{job_id}-*/sshd_config")).read_text()
    grace = re.search(r"^LoginGraceTime (\d+)", config, re.M)
    assert grace is not None and 0 < int(grace.group(1)) <= 30
    for _ in range(300):  # strangers' bare connects each make sshd log a line
        with socket.create_connection((node, port), timeout=5):
            pass
    log = Path(f"{user.home}/.local/state/islurm/log/job-{job_id}.log")
    deadline = time.monotonic() + 10
    while "further lines are counted" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    sshd_lines = [ln for ln in log.read_text().splitlines() if " sshd: " in ln]
    assert sum(len(ln) for ln in sshd_lines) < 4096 + 80 * len(sshd_lines)
    assert user.ssh("slurm-cpu", "true").returncode == 0  # the owner still gets in


def test_state_dirs_are_made_private_and_a_symlinked_one_refused(user: User) -> None:
    state = Path(f"{user.home}/.local/state/islurm")
    state.mkdir(parents=True, exist_ok=True)
    os.chown(state, user.uid, -1)
    state.chmod(0o755)  # as an older islurm left it
    _connect_job(user)
    for d in (state, state / "jobs", state / "log"):
        st = d.lstat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, user.uid), d
    assert user.islurmctl("cancel", "--all").returncode == 0
    user.stop_daemon()
    elsewhere = Path(user.home) / "elsewhere"
    elsewhere.mkdir(mode=0o700, exist_ok=True)
    os.chown(elsewhere, user.uid, -1)
    shutil.rmtree(state / "jobs")
    (state / "jobs").symlink_to(elsewhere)
    os.lchown(state / "jobs", user.uid, -1)
    started = time.monotonic()
    r = user.ssh("slurm-cpu", "true", timeout=60)
    assert r.returncode != 0
    assert "jobs" in r.stderr.decode() and "symlink" in r.stderr.decode(), r.stderr.decode()
    assert time.monotonic() - started < 10
    assert user.live_jobs() == []
