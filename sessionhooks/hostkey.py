"""The job's host key and its certificate, signed on the login node by islurmd (the user's CA
never reaches a compute node).

Usually islurmd made and signed the key before the job started (`<id>.hostkey`): the hook
takes it and removes it from the shared dir. Otherwise (islurmd died in between, or the
certificate would expire before the job ends) the hook makes a key and writes a signing
request beside its readiness record, and waits for the certificate islurmd writes back."""

from __future__ import annotations

import os
import time

from islurm.config import records
from islurm.config.records import RecordError
from islurm.sessionhooks import sshd

TYPE_CHECKING = False  # `typing` and `collections.abc` are not loaded at a job's start
if TYPE_CHECKING:
    from collections.abc import Callable

PREMADE_WAIT = 2.0  # seconds for islurmd's key to land (it writes it right after sbatch)
PRIVATE_KEY_HEAD = "-----BEGIN OPENSSH PRIVATE KEY-----"
CERT_TYPE = "ssh-ed25519-cert-v01@openssh.com "
FAST_WAIT = 2.0  # seconds of quick polling: islurmd answers within milliseconds when asked
FAST_POLL, SLOW_POLL = 0.005, 0.05
TELL_AFTER = 10.0  # say in the job's log why the hook still waits


def request_signature(directory: str, job_id: str, public_key: str, until: float | None) -> None:
    records.write_json(
        records.path(directory, job_id, records.SIGN_REQUEST),
        {"job_id": job_id, "public_key": public_key, "until": until},
    )


def certificate(directory: str, job_id: str) -> str | None:
    """The certificate islurmd wrote for this job, if it is there (and well-formed)."""
    data = records.read_json(records.path(directory, job_id, records.CERTIFICATE))
    if data is None:
        return None
    cert = data.get("certificate") if isinstance(data, dict) else None
    if not (isinstance(cert, str) and cert.startswith(CERT_TYPE)):
        raise RecordError(f"job {job_id}: islurmd's certificate is not an ed25519 certificate")
    return cert


def await_certificate(
    directory: str,
    job_id: str,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Wait for islurmd's certificate. islurmd signs while someone waits to connect; with
    nobody waiting there is nothing to serve, so this waits as long as the job lives."""
    start = clock()
    told = False
    while True:
        cert = certificate(directory, job_id)
        if cert is not None:
            return cert
        waited = clock() - start
        if waited >= TELL_AFTER and not told:
            say("waiting for islurmd to sign the host key (it does while a connect waits)")
            told = True
        sleep(FAST_POLL if waited < FAST_WAIT else SLOW_POLL)


def install_certificate(key_path: str, cert: str) -> str:
    """Write the certificate beside the node-local host key for sshd; returns its path."""
    path = key_path + "-cert.pub"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(cert + "\n")
    return path


def take_premade(
    directory: str,
    job_id: str,
    end: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str] | None:
    """The key islurmd made for this job ({private_key, public_key, certificate}), removed
    from the shared dir at once; None if it did not come or would expire before `end`."""
    path = records.path(directory, job_id, records.HOST_KEY)
    deadline = clock() + PREMADE_WAIT
    while (data := records.read_json(path)) is None:
        if clock() >= deadline:
            return None
        sleep(FAST_POLL)
    try:  # noqa: SIM105 - contextlib is one import more at every job start
        os.unlink(path)
    except FileNotFoundError:
        pass
    if not isinstance(data, dict) or data.get("job_id") != job_id:
        raise RecordError(f"job {job_id}: islurmd's host key file is not for this job")
    key, pub, cert = data.get("private_key"), data.get("public_key"), data.get("certificate")
    if not (
        isinstance(key, str)
        and key.startswith(PRIVATE_KEY_HEAD)
        and isinstance(pub, str)
        and pub.startswith("ssh-ed25519 ")
        and isinstance(cert, str)
        and cert.startswith(CERT_TYPE)
    ):
        raise RecordError(f"job {job_id}: islurmd's host key file is not a signed ed25519 key")
    until = data.get("until")
    if isinstance(until, int | float) and end is not None and until < end:
        return None  # it pended longer than islurmd allowed for: ask for a fresh certificate
    return {"private_key": key, "public_key": pub, "certificate": cert}


def host_key(
    directory: str,
    job_id: str,
    key_path: str,
    comment: str,
    end: float | None,
    premade: bool,
    say: Callable[[str], None],
) -> tuple[str, str]:
    """(public key line, certificate path) of the job's sshd host key at `key_path`."""
    if premade:
        got = take_premade(directory, job_id, end)
        if got is not None:
            _write_private(key_path, got["private_key"])
            return got["public_key"], install_certificate(key_path, got["certificate"])
        say("islurmd's signed host key did not come or expires too soon: asking for a signature")
    public = sshd.generate_host_key(key_path, comment)
    request_signature(directory, job_id, public, end)
    return public, install_certificate(key_path, await_certificate(directory, job_id, say))


def _write_private(path: str, key: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key if key.endswith("\n") else key + "\n")
