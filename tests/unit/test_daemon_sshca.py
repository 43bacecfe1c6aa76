"""The login node's SSH CA (daemon/sshca.py) with the real ssh-keygen, and the sign-on-request
flow between the hook (sessionhooks/hostkey.py) and islurmd (daemon/readiness.py, records.py):
the job's host key is signed here and the CA's private key never reaches a job."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
import trio

from islurm.config.records import RecordError
from islurm.daemon import readiness, sshca
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.states import JobState
from islurm.sessionhooks import hostkey
from tests.unit.fakes import (
    FakeSlurm,
    Notes,
    live_daemon,
    resolve,
    rows,
    running_line,
    write_record,
)

GUARD = 3600  # virtual seconds


def host_key(tmp_path: Path, name: str = "host") -> str:
    """A fresh ed25519 public key line, as the hook makes one on the node."""
    key = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "islurm-job-42@c1", "-f", str(key)],
        check=True,
    )
    return (tmp_path / f"{name}.pub").read_text().strip()


def inspect(tmp_path: Path, cert: str) -> str:
    """`ssh-keygen -L` of a certificate line."""
    path = tmp_path / "inspect-cert.pub"
    path.write_text(cert + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], check=True, capture_output=True, text=True
    )
    return out.stdout


def valid_to(listing: str) -> float:
    match = re.search(r"Valid: from \S+ to (\S+)", listing)
    assert match, listing
    return time.mktime(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))


@pytest.fixture
def ca(tmp_path: Path) -> str:
    ca_dir = str(tmp_path / "ca")
    sshca.ensure_ca(ca_dir)
    return ca_dir


@pytest.fixture
def no_keygen(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """ssh-keygen must not run: any run_process is recorded and fails."""
    runs: list[object] = []

    async def run_process(argv: object, **kw: object) -> object:
        runs.append(argv)
        raise AssertionError(f"ssh-keygen ran: {argv!r}")

    monkeypatch.setattr(trio, "run_process", run_process)
    return runs


# -- the CA -----------------------------------------------------------------------------------


async def test_sign_host_key_makes_a_host_certificate_for_the_job(tmp_path: Path, ca: str) -> None:
    until = time.time() + 4 * 3600
    cert = await sshca.sign_host_key(ca, host_key(tmp_path), "4242", until)
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    listing = inspect(tmp_path, cert)
    assert "host certificate" in listing
    assert 'Key ID: "islurm-job-4242"' in listing
    principals = listing.split("Principals:", 1)[1].split("Critical Options:", 1)[0].split()
    assert principals == ["islurm"]
    assert valid_to(listing) == pytest.approx(until + sshca.SKEW, abs=5)
    assert sorted(os.listdir(ca)) == ["ca", "ca.pub"]  # the signing dir is gone


@pytest.mark.parametrize(
    "key",
    [
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@host",
        "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=",
        "ssh-ed25519 AAAA",
        "ssh-ed25519 " + "A" * 68 + " comment\nwith a newline",
        "-O force-command=/bin/sh ssh-ed25519 " + "A" * 68,
        "",
        "garbage",
    ],
)
async def test_sign_refuses_what_is_not_an_ed25519_key(
    tmp_path: Path, ca: str, no_keygen: list[object], key: str
) -> None:
    with pytest.raises(sshca.CaError, match="not an ed25519 public key"):
        await sshca.sign_host_key(ca, key, "4242", None)
    assert no_keygen == []


@pytest.mark.parametrize("job_id", ["", "42;id", "-h", "42 ", "../42"])
async def test_sign_refuses_a_job_id_that_is_not_digits(
    tmp_path: Path, ca: str, no_keygen: list[object], job_id: str
) -> None:
    with pytest.raises(sshca.CaError, match="not a Slurm job id"):
        await sshca.sign_host_key(ca, "ssh-ed25519 " + "A" * 68, job_id, None)
    assert no_keygen == []


@pytest.mark.parametrize("until", [None, 999.0, 1000.0, 1000.0 + sshca.MAX_LIFETIME + 1, -5.0])
def test_validity_for_no_or_an_absurd_end_is_a_day(until: float | None) -> None:
    assert sshca.validity(until, 1000.0) == f"-300s:+{86400 + 300}s"


def test_validity_for_a_sane_end_covers_it_plus_skew() -> None:
    assert sshca.validity(1000.0 + 7200.5, 1000.0) == "-300s:+7500s"


def test_ensure_ca_creates_a_private_ca_and_is_idempotent(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    line = sshca.ensure_ca(str(ca_dir))
    assert line.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca").stat().st_mode) == 0o600
    assert sshca.ensure_ca(str(ca_dir)) == line  # the same CA, not a new one


def test_ensure_ca_refuses_a_dir_owned_by_another_uid(
    tmp_path: Path, ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 12345)
    with pytest.raises(sshca.CaError, match="owned by uid"):
        sshca.ensure_ca(ca)


def test_ensure_ca_refuses_a_key_owned_by_another_uid(tmp_path: Path, ca: str) -> None:
    os.chown(os.path.join(ca, "ca"), 65534, 65534)  # tests run as root
    with pytest.raises(sshca.CaError, match="not a regular file of yours"):
        sshca.ensure_ca(ca)


def test_ensure_ca_refuses_a_key_that_is_a_symlink(tmp_path: Path, ca: str) -> None:
    key = os.path.join(ca, "ca")
    os.rename(key, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", key)
    with pytest.raises(sshca.CaError, match="not a regular file of yours"):
        sshca.ensure_ca(ca)


def test_ensure_ca_makes_a_readable_key_private(tmp_path: Path, ca: str) -> None:
    key = os.path.join(ca, "ca")
    os.chmod(key, 0o644)
    sshca.ensure_ca(ca)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


# -- sign on request -------------------------------------------------------------------------


def jobs_dir(tmp_path: Path) -> str:
    path = tmp_path / "jobs"
    path.mkdir(exist_ok=True)
    return str(path)


async def test_a_request_is_answered_with_a_certificate_the_hook_reads_back(
    tmp_path: Path, ca: str
) -> None:
    jobs = jobs_dir(tmp_path)
    public = host_key(tmp_path)
    until = time.time() + 3600
    hostkey.request_signature(jobs, "4242", public, until)
    store = RecordStore(jobs)
    assert store.sign_request("4242") == (public, until)
    job = Job(job_id="4242", profile="cpu", state=JobState.RUNNING)
    await readiness.sign_if_asked(job, store, ca)
    assert job.hook_error is None
    cert = hostkey.certificate(jobs, "4242")
    assert cert is not None
    assert 'Key ID: "islurm-job-4242"' in inspect(tmp_path, cert)
    assert store.sign_request("4242") is None  # answered: not signed again
    # The hook installs it beside its host key, private, and never over something else.
    key_path = str(tmp_path / "host")
    installed = hostkey.install_certificate(key_path, cert)
    assert installed == key_path + "-cert.pub"
    assert Path(installed).read_text() == cert + "\n"
    assert stat.S_IMODE(os.stat(installed).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        hostkey.install_certificate(key_path, cert)


async def test_probe_signs_then_finds_the_record(
    tmp_path: Path, ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real time: ssh-keygen is a real process (a virtual clock would jump past its timeout)."""

    async def confirm(endpoint: Endpoint) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    monkeypatch.setattr(readiness, "confirm", confirm)
    monkeypatch.setattr(readiness, "ipv4_address", resolve)
    jobs = jobs_dir(tmp_path)
    store = RecordStore(jobs)
    job = Job(job_id="4242", profile="cpu", state=JobState.RUNNING, node="node-1")
    job.leases.add("L-1")
    hostkey.request_signature(jobs, "4242", host_key(tmp_path), None)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readiness.probe_until_ready, job, store, ca)
            while hostkey.certificate(jobs, "4242") is None:
                await trio.sleep(0.01)
            write_record(tmp_path, "4242")
    assert job.hook_error is None
    assert job.endpoint is not None
    assert job.endpoint.port == 22022


async def test_no_ca_fails_the_job_with_a_clear_message(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    hostkey.request_signature(jobs, "4242", "ssh-ed25519 " + "A" * 68, None)
    job = Job(job_id="4242", profile="cpu", state=JobState.RUNNING)
    await readiness.sign_if_asked(job, RecordStore(jobs), None)
    assert job.hook_error == "islurmd has no SSH CA to sign the job's host key"
    assert not os.path.exists(os.path.join(jobs, "4242.cert"))


async def test_no_ca_fails_the_connect_with_the_job_id(
    tmp_path: Path, autojump_clock: object
) -> None:
    slurm = FakeSlurm().always("query", rows(running_line("4242")))
    async with live_daemon(tmp_path, slurm) as (daemon, state, _nursery):
        assert daemon.manager.jobs.hook.ca_dir is None
        hostkey.request_signature(str(state / "jobs"), "4242", "ssh-ed25519 " + "A" * 68, None)
        notes = Notes()
        with trio.fail_after(GUARD):
            await daemon.manager.acquire(daemon.manager.new_lease("cpu"), notes)
    [failed] = notes.of("session.failed")
    assert failed["code"] == 1007
    assert failed["message"] == "job 4242: islurmd has no SSH CA to sign the job's host key"


async def test_a_request_that_cannot_be_signed_fails_the_job(tmp_path: Path, ca: str) -> None:
    jobs = jobs_dir(tmp_path)
    hostkey.request_signature(jobs, "4242", "ssh-rsa AAAAB3NzaC1yc2E", None)
    job = Job(job_id="4242", profile="cpu", state=JobState.RUNNING)
    await readiness.sign_if_asked(job, RecordStore(jobs), ca)
    assert job.hook_error is not None
    assert job.hook_error.startswith("cannot sign the job's host key: ")


@pytest.mark.parametrize(
    "request_json",
    [
        {"job_id": "4243", "public_key": "ssh-ed25519 AAAA", "until": None},  # another job's
        {"job_id": "4242", "public_key": 5, "until": None},
        ["4242", "ssh-ed25519 AAAA"],
    ],
)
def test_a_request_not_for_this_job_is_no_request(tmp_path: Path, request_json: object) -> None:
    jobs = jobs_dir(tmp_path)
    Path(jobs, "4242.csr").write_text(json.dumps(request_json))
    assert RecordStore(jobs).sign_request("4242") is None


def test_a_bogus_until_is_passed_on_as_none(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    for until in (True, "tomorrow"):
        Path(jobs, "4242.csr").write_text(
            json.dumps({"job_id": "4242", "public_key": "k", "until": until})
        )
        assert RecordStore(jobs).sign_request("4242") == ("k", None)


# -- the hook's side -----------------------------------------------------------------------


class FakeTime:
    """A clock that moves only when slept on; the certificate appears at `arrives`."""

    def __init__(self, jobs: str, arrives: float) -> None:
        self.now = 0.0
        self.jobs, self.arrives = jobs, arrives
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.now >= self.arrives and not os.path.exists(os.path.join(self.jobs, "42.cert")):
            RecordStore(self.jobs).write_certificate("42", "ssh-ed25519-cert-v01@openssh.com AAAA")


def test_await_certificate_says_once_why_it_waits(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    fake = FakeTime(jobs, arrives=hostkey.TELL_AFTER * 3)
    said: list[str] = []
    cert = hostkey.await_certificate(jobs, "42", said.append, fake.clock, fake.sleep)
    assert cert == "ssh-ed25519-cert-v01@openssh.com AAAA"
    assert said == ["waiting for islurmd to sign the host key (it does while a connect waits)"]
    assert set(fake.sleeps) == {hostkey.FAST_POLL, hostkey.SLOW_POLL}
    fast = [s for s in fake.sleeps if s == hostkey.FAST_POLL]
    assert sum(fast) == pytest.approx(hostkey.FAST_WAIT, abs=hostkey.FAST_POLL * 2)


def test_await_certificate_quick_answer_says_nothing(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    fake = FakeTime(jobs, arrives=0.05)
    said: list[str] = []
    hostkey.await_certificate(jobs, "42", said.append, fake.clock, fake.sleep)
    assert said == []
    assert set(fake.sleeps) == {hostkey.FAST_POLL}


@pytest.mark.parametrize(
    "content",
    [
        {"job_id": "42", "certificate": "ssh-ed25519 AAAA not a cert"},
        {"job_id": "42", "certificate": 7},
        {"job_id": "42"},
        ["ssh-ed25519-cert-v01@openssh.com AAAA"],
    ],
)
def test_a_malformed_certificate_is_an_error(tmp_path: Path, content: object) -> None:
    jobs = jobs_dir(tmp_path)
    Path(jobs, "42.cert").write_text(json.dumps(content))
    with pytest.raises(RecordError):
        hostkey.certificate(jobs, "42")
    fake = FakeTime(jobs, arrives=1e9)
    with pytest.raises(RecordError):
        hostkey.await_certificate(jobs, "42", lambda _: None, fake.clock, fake.sleep)
