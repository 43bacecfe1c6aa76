"""The job's host key: made on the node, signed on the login node by islurmd.

The hook writes a signing request (the public key) beside its readiness record and waits for
the certificate islurmd writes back: the user's CA never reaches a compute node."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from islurm.config import records
from islurm.config.records import RecordError

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
    if not (isinstance(cert, str) and cert.startswith("ssh-ed25519-cert-v01@openssh.com ")):
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
