"""Sessions in a container image without sshd: real rootless podman, real Slurm, real ssh."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import TEST_CONFIG, User
from tests.e2e.images import MARKER, debian_tarball, foreign_rootfs

PROJECTS = Path("/srv/islurm-e2e-projects")


@pytest.fixture
def container_user(user: User, tmp_path: Path) -> Iterator[User]:
    PROJECTS.mkdir(mode=0o755, exist_ok=True)
    image = PROJECTS / "debian.tar"
    shutil.copyfile(debian_tarball(), image)
    image.chmod(0o644)
    arm = foreign_rootfs(PROJECTS / f"arm-{os.getpid()}", user.name)
    shutil.rmtree(f"{user.home}/.cache/islurm", ignore_errors=True)
    config = TEST_CONFIG + (
        f'[containers]\nproject_roots = ["{PROJECTS}"]\ncache_limit = "2G"\n'
        f'images = {{ debian = "{image}" }}\n\n'
        '[profiles.cpu-container]\ndescription = "Debian 12 without sshd"\n'
        'sbatch = ["--partition=interactive", "--mem=512M", "--time=00:20:00"]\n'
        f'image = "{image}"\n\n'
        '[profiles.arm]\nsbatch = ["--partition=interactive", "--mem=256M", "--time=00:05:00"]\n'
        f'image = "{arm}"\n'
    )
    user.prepare(config, tmp_path)
    yield user
    shutil.rmtree(arm, ignore_errors=True)


def _leftovers(job_id: str) -> list[str]:
    """Processes and files of the job's container still on this machine."""
    tag = f"islurm-job{job_id}-"
    found = [d for d in glob.glob(f"/tmp/{tag}*")]
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            blob = Path(proc, "cmdline").read_bytes() + Path(proc, "environ").read_bytes()
            state = Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (tag.encode() in blob or f"islurm-job-{job_id}".encode() in blob):
            found.append(f"pid {proc.rsplit('/', 1)[1]}")
    return found


def _forwarded_banner(user: User, port: int, remote: int) -> bytes:
    """ssh -L through the session to a listener inside the container (perl, from the image)."""
    server = (
        "perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>q(127.0.0.1),"
        f"LocalPort=>{remote},Listen=>1,ReuseAddr=>1) or die; $c=$s->accept; "
        "print $c qq(hello from the container\\n); close $c'"
    )
    argv = ["ssh", "-F", user.ssh_config, "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    proc = user.popen(
        [*argv, "-L", f"{port}:127.0.0.1:{remote}", "slurm-cpu-container", server],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    data = s.recv(100)
                if data:
                    return data
            except OSError:
                pass
            if time.monotonic() > deadline:
                return b""
            time.sleep(0.3)
    finally:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_session_runs_in_an_image_without_sshd(container_user: User) -> None:
    u = container_user
    r = u.ssh(
        "slurm-cpu-container",
        "cat /etc/os-release; echo job=$SLURM_JOB_ID; command -v sshd || echo no-sshd; "
        f"cat /etc/{MARKER}; echo same > /tmp/islurm-e2e-mark; id -u",
    )
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    jobs = u.live_jobs()
    key = hashlib.sha256(str(PROJECTS / "debian.tar").encode()).hexdigest()[:12]
    assert len(jobs) == 1 and jobs[0]["name"] == f"islurm-cpu-container.{key}", jobs
    job_id = jobs[0]["job_id"]
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in out
    assert f"job={job_id}" in out and "no-sshd" in out and "built by tests" in out
    assert out.split()[-1] == str(u.uid)  # the user, not a remapped root
    assert "copying image" in r.stderr.decode()  # progress on the shim's stderr
    cached = glob.glob(f"{u.home}/.cache/islurm/images/*-debian.tar")
    assert len(cached) == 1

    # A second connect enters the same container: its private /tmp has the first one's file.
    again = u.ssh("slurm-cpu-container", "cat /tmp/islurm-e2e-mark; echo $PATH")
    assert again.stdout.decode().splitlines()[0] == "same", again.stderr.decode()
    assert not os.path.exists("/tmp/islurm-e2e-mark")  # not the node's /tmp
    assert "copying image" not in again.stderr.decode()

    # scp (sftp protocol) 64 MiB both ways.
    scratch = Path(tempfile.mkdtemp(prefix="islurm-e2e-scp-"))
    shutil.chown(scratch, u.name)
    blob = scratch / "blob"
    blob.write_bytes(os.urandom(64 << 20))
    blob.chmod(0o644)
    up = u.run(["scp", "-F", u.ssh_config, "-q", str(blob), "slurm-cpu-container:blob.up"])
    assert up.returncode == 0, up.stderr.decode()
    down = scratch / "down"
    got = u.run(["scp", "-F", u.ssh_config, "-q", "slurm-cpu-container:blob.up", str(down)])
    assert got.returncode == 0, got.stderr.decode()
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert hashlib.sha256(down.read_bytes()).hexdigest() == want
    inside = u.ssh("slurm-cpu-container", "sha256sum blob.up; rm blob.up")
    assert inside.stdout.decode().split()[0] == want
    shutil.rmtree(scratch)

    # ssh -L through the session to a listener inside the container.
    assert _forwarded_banner(u, 39000 + os.getpid() % 500, 38000 + os.getpid() % 500) == (
        b"hello from the container\n"
    )

    # Cancel: no container process and no temporary state left.
    assert _leftovers(job_id), "the running job's container should be visible"
    c = u.islurmctl("cancel", "cpu-container")
    assert c.returncode == 0, c.stderr.decode()
    u.wait_no_jobs()
    deadline = time.monotonic() + 20
    while _leftovers(job_id) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _leftovers(job_id) == []


def test_a_foreign_architecture_image_is_refused(container_user: User) -> None:
    u = container_user
    r = u.ssh("slurm-arm", "true", timeout=120)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "built for aarch64" in err and os.uname().machine in err, err
    u.wait_no_jobs(timeout=30)


def test_concurrent_connects_copy_once_and_a_per_connect_image(container_user: User) -> None:
    u = container_user
    t0 = time.monotonic()
    procs = [
        u.popen(
            u.ssh_argv("slurm-cpu-container", "cat /etc/" + MARKER),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    results = [(p.communicate(timeout=240), p.returncode) for p in procs]
    for (out, err), code in results:
        assert code == 0 and b"built by tests" in out, err.decode()
    copying = sum(err.decode().count("copying image") for (_, err), _ in results)
    assert copying >= 1 and len(u.live_jobs()) == 1, u.live_jobs()
    log = Path(u.home, ".local/state/islurm/log/islurmd.log").read_text()
    assert log.count("image.fetched") == 1, "the image was copied more than once"
    assert len(glob.glob(f"{u.home}/.cache/islurm/images/*-debian.tar")) == 1
    listed = u.islurmctl("cache", "list", "--json")
    assert [i["source"] for i in json.loads(listed.stdout)["images"]] == [
        str(PROJECTS / "debian.tar")
    ]
    print(f"8 concurrent uncached connects: {time.monotonic() - t0:.1f} s")

    # Profile cpu runs on the node; the same profile with --image (host slurm-cpu+debian)
    # gets its own job, in that image, and neither is handed the other's job.
    bare = u.ssh("slurm-cpu", f"test -e /etc/{MARKER} && echo in-image || echo on-node")
    boxed = u.ssh("slurm-cpu+debian", f"cat /etc/{MARKER}; echo job=$SLURM_JOB_ID")
    assert bare.stdout.decode().split() == ["on-node"], bare.stderr.decode()
    assert b"built by tests" in boxed.stdout, boxed.stderr.decode()
    names = sorted(j["name"] for j in u.live_jobs())
    key = hashlib.sha256(str(PROJECTS / "debian.tar").encode()).hexdigest()[:12]
    assert names == ["islurm-cpu", f"islurm-cpu-container.{key}", f"islurm-cpu.{key}"]
    listing = json.loads(u.islurmctl("list", "--json").stdout)
    shown = {j["profile"] + "/" + j["image_key"]: j["container"] for j in listing}
    assert shown[f"cpu/{key}"] == str(PROJECTS / "debian.tar") and shown["cpu/"] == ""

    doctor = u.islurmctl("doctor", "--quick", "--profile", "cpu-container", "--profile", "arm")
    text = doctor.stdout.decode()
    assert "ok    container cpu-container: runtime: podman" in text, text
    assert "ok    container cpu-container: image" in text
    assert "FAIL  container arm: image" in text and "built for aarch64" in text
    assert "login node" in text
    u.islurmctl("cancel", "--all")
    u.wait_no_jobs()
