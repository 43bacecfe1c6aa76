"""Issue 2 acceptance: `ssh slurm-cpu` through shim, daemon, sbatch and the job's sshd."""

from __future__ import annotations

import hashlib
import json
import os
import time

from tests.e2e.conftest import User

MiB = 1024 * 1024


def test_cold_connect_prints_the_compute_node_hostname(user: User) -> None:
    assert user.live_jobs() == []
    r = user.ssh("slurm-cpu", "hostname")
    assert r.returncode == 0, r.stderr.decode()
    jobs = user.live_jobs()
    assert len(jobs) == 1, jobs
    assert jobs[0]["name"] == "islurm-cpu" and jobs[0]["comment"] == "islurm:v1:cpu"
    assert r.stdout.decode().strip() == jobs[0]["node"] == "c1"
    assert b"islurm:" in r.stderr  # progress went to stderr, not into the SSH stream


def test_warm_connect_reuses_the_running_job(user: User) -> None:
    with user.popen(
        user.ssh_argv("slurm-cpu", "echo open; cat"), stdin=-1, stdout=-1, stderr=-1
    ) as first:
        try:
            assert first.stdout is not None and first.stdin is not None
            assert first.stdout.readline() == b"open\n"
            job_id = user.live_jobs()[0]["job_id"]
            second = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
            assert second.returncode == 0, second.stderr.decode()
            assert second.stdout.decode().strip() == job_id
            assert [j["job_id"] for j in user.jobs(all_states=True)] == [job_id]
            first.stdin.close()
            assert first.wait(timeout=30) == 0
        finally:
            if first.poll() is None:
                first.kill()


def test_one_gib_arrives_intact_both_ways(user: User) -> None:
    block = os.urandom(64 * MiB)
    repeats = 16  # 1 GiB
    expected = hashlib.sha256()
    for _ in range(repeats):
        expected.update(block)
    blob = f"{user.home}/blob.bin"
    with open(blob, "wb") as f:
        f.write(block)
    os.chown(blob, user.uid, -1)
    try:
        # Down: the node streams the block 16 times; we count and hash what arrives.
        command = f"for i in $(seq {repeats}); do cat {blob}; done"
        got, count = hashlib.sha256(), 0
        with user.popen(user.ssh_argv("slurm-cpu", command), stdout=-1, stdin=-3) as down:
            assert down.stdout is not None
            while chunk := down.stdout.read(4 * MiB):
                got.update(chunk)
                count += len(chunk)
            assert down.wait(timeout=120) == 0
        assert count == repeats * 64 * MiB
        assert got.hexdigest() == expected.hexdigest()
        # Up: we stream it in; the node hashes and counts what it received.
        with user.popen(
            user.ssh_argv("slurm-cpu", "tee >(wc -c >&2) | sha256sum"),
            stdin=-1,
            stdout=-1,
            stderr=-1,
        ) as up:
            assert up.stdin is not None
            for _ in range(repeats):
                up.stdin.write(block)
            up.stdin.close()
            up.stdin = None  # communicate() must not flush the closed pipe
            out, err = up.communicate(timeout=120)
        assert up.returncode == 0, err
        assert out.split()[0].decode() == expected.hexdigest()
        assert str(repeats * 64 * MiB).encode() in err
    finally:
        os.unlink(blob)


def test_list_then_cancel_by_profile_then_a_fresh_job(user: User) -> None:
    assert user.ssh("slurm-cpu", "true").returncode == 0
    first = user.live_jobs()[0]["job_id"]
    listed = user.islurmctl("list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert [(j["job_id"], j["profile"], j["state"], j["node"]) for j in jobs] == [
        (first, "cpu", "RUNNING", "c1")
    ]
    human = user.islurmctl("list").stdout.decode()
    assert first in human and "RUNNING" in human and "cpu" in human
    cancelled = user.islurmctl("cancel", "cpu")
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {first}" in cancelled.stdout.decode()
    user.wait_no_jobs()
    again = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
    assert again.returncode == 0, again.stderr.decode()
    second = again.stdout.decode().strip()
    assert second.isdigit() and second != first


def test_unknown_profile_fails_fast_without_a_job(user: User) -> None:
    t0 = time.monotonic()
    r = user.run(["islurm-proxy", "nope"], timeout=60)
    assert r.returncode != 0
    assert b"unknown profile 'nope'" in r.stderr
    assert r.stdout == b""
    assert time.monotonic() - t0 < 30
    via_ssh = user.run(
        [
            "ssh",
            "-F",
            user.ssh_config,
            "-o",
            "ProxyCommand=islurm-proxy nope",
            "-o",
            "BatchMode=yes",
            "slurm-cpu",
            "true",
        ],
        timeout=60,
    )
    assert via_ssh.returncode != 0 and b"unknown profile 'nope'" in via_ssh.stderr
    assert user.jobs(all_states=True) == []


def test_options_sbatch_rejects_surface_sbatch_message(user: User) -> None:
    r = user.ssh("slurm-bad", "true")
    assert r.returncode != 0
    assert b"invalid partition" in r.stderr.lower(), r.stderr
    assert user.jobs(all_states=True) == []
