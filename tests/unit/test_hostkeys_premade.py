"""Host keys made and signed on the login node before the job starts (daemon/hostkeys.py),
taken by the hook (sessionhooks/hostkey.py take_premade / host_key)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from islurm.config import records
from islurm.config.records import RecordError
from islurm.daemon import hostkeys, sshca
from islurm.sessionhooks import hostkey


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    ca = tmp_path / "ca"
    sshca.ensure_ca(str(ca))
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    return str(ca), str(jobs)


async def test_a_premade_key_is_signed_for_its_job_and_taken_once(
    dirs: tuple[str, str], tmp_path: Path
) -> None:
    ca, jobs = dirs
    key = await hostkeys.make(jobs)
    assert key is not None
    assert await hostkeys.install(key, ca, jobs, "4242", lifetime=3600)
    assert not os.path.exists(key.directory)  # the temporary copy is gone
    path = records.path(jobs, "4242", records.HOST_KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    node_key = str(tmp_path / "node" / "ssh_host_ed25519_key")
    os.makedirs(os.path.dirname(node_key), mode=0o700)
    said: list[str] = []
    public, cert = hostkey.host_key(
        jobs, "4242", node_key, "c", time.time() + 60, True, said.append
    )
    assert said == []
    assert public == key.public_key
    assert not os.path.exists(path)  # the private key left the shared dir
    assert stat.S_IMODE(os.stat(node_key).st_mode) == 0o600
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", node_key], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == public.split()[:2]  # the private key matches its public key
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", cert], capture_output=True, text=True, check=True
    ).stdout
    assert 'Key ID: "islurm-job-4242"' in listing and "host certificate" in listing


async def test_a_key_that_expires_before_the_job_ends_is_not_used(
    dirs: tuple[str, str],
) -> None:
    ca, jobs = dirs
    key = await hostkeys.make(jobs)
    assert key is not None
    assert await hostkeys.install(key, ca, jobs, "7", lifetime=60)
    # the job pended long: it now ends two hours from now, past the certificate
    assert hostkey.take_premade(jobs, "7", time.time() + 7200) is None
    assert not os.path.exists(records.path(jobs, "7", records.HOST_KEY))


def test_no_premade_key_is_given_up_on_after_the_wait(tmp_path: Path) -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    assert hostkey.take_premade(str(tmp_path), "9", None, lambda: now[0], sleep) is None
    assert hostkey.PREMADE_WAIT <= now[0] < hostkey.PREMADE_WAIT + 0.1


def test_a_key_file_for_another_job_is_refused(tmp_path: Path) -> None:
    records.write_json(
        records.path(str(tmp_path), "9", records.HOST_KEY),
        {"job_id": "10", "private_key": "x", "public_key": "y", "certificate": "z"},
    )
    with pytest.raises(RecordError, match="not for this job"):
        hostkey.take_premade(str(tmp_path), "9", None)


async def test_without_a_ca_nothing_is_installed(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    key = await hostkeys.make(str(jobs))
    assert key is not None
    ok = await hostkeys.install(key, str(tmp_path / "no-ca"), str(jobs), "5", None)
    assert ok is False
    assert os.listdir(jobs) == []  # nothing half-written, the temporary key removed
