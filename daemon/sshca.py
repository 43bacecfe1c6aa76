"""The user's SSH CA on the login node: the one place that runs ssh-keygen with the CA key.

Only islurmd (and the CLI, for the public line) uses it: a job asks for its host key to be
signed (a request beside its readiness record) and never sees the CA's private key."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

import structlog
import trio

from islurm.config import paths
from islurm.config.sshconfig import CERT_PRINCIPAL

log = structlog.get_logger("islurm.ca")

SKEW = 300  # seconds of clock skew allowed either side of a certificate's validity
MAX_LIFETIME = 31 * 86400  # no job runs longer than this; a request asking more gets a day
DEFAULT_LIFETIME = 86400
SIGN_TIMEOUT = 10.0
#: the only host keys jobs make: one ed25519 public key line, comment optional
_PUBLIC_KEY = re.compile(r"ssh-ed25519 [A-Za-z0-9+/]{68}(?: [\x21-\x7e]{1,200})?")
_CERT = re.compile(r"ssh-ed25519-cert-v01@openssh\.com [A-Za-z0-9+/=]+(?: [\x21-\x7e]{1,200})?")


class CaError(RuntimeError):
    """The CA could not be created, read or used."""


def default_dir() -> str:
    return os.path.join(paths.config_dir(), "ca")


def _keygen(argv: list[str]) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaError(f"ssh-keygen failed: {exc}") from None
    if proc.returncode != 0:
        raise CaError(f"ssh-keygen exited {proc.returncode}: {proc.stderr.strip()}")


def ensure_ca(ca_dir: str) -> str:
    """The user's SSH CA (created on first use: dir 0700, key 0600); returns its public line.

    An existing CA must be the user's own: another owner, a symlink or a key others can read
    is refused (the key is what makes every job's host key trusted)."""
    try:
        paths.ensure_private_dir(ca_dir)
    except OSError as exc:
        raise CaError(f"cannot use the SSH CA directory: {exc}") from None
    key = os.path.join(ca_dir, "ca")
    if not os.path.lexists(key):
        _keygen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "islurm-user-ca", "-f", key])
    st = os.lstat(key)
    if not os.path.isfile(key) or os.path.islink(key) or st.st_uid != os.getuid():
        raise CaError(f"{key} is not a regular file of yours: delete {ca_dir} to make a new CA")
    if st.st_mode & 0o077:
        os.chmod(key, 0o600)
    try:
        with open(key + ".pub", encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaError(f"cannot read {key}.pub: {exc}") from None


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="ascii") as f:  # a few bytes on a local disk
        f.write(text)
    return path


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def valid_public_key(line: str) -> bool:
    return _PUBLIC_KEY.fullmatch(line.strip()) is not None


def validity(until: float | None, now: float) -> str:
    """ssh-keygen -V for a job that runs until `until` (epoch; None or absurd: a day)."""
    if until is None or not 0 < until - now <= MAX_LIFETIME:
        until = now + DEFAULT_LIFETIME
    return f"-{SKEW}s:+{int(until - now) + SKEW}s"


async def sign_host_key(ca_dir: str, public_key: str, job_id: str, until: float | None) -> str:
    """A host certificate for one job's key: principal `islurm`, key id naming the job, valid
    for the job's lifetime. Returns the certificate line."""
    if not job_id.isdigit():
        raise CaError(f"not a Slurm job id: {job_id!r}")
    if not valid_public_key(public_key):
        raise CaError("the job's host key request is not an ed25519 public key")
    key = os.path.join(ca_dir, "ca")
    with tempfile.TemporaryDirectory(prefix="sign-", dir=ca_dir) as tmp:
        pub = _write(os.path.join(tmp, "host.pub"), public_key.strip() + "\n")
        argv = [
            "ssh-keygen",
            "-q",
            "-s",
            key,
            "-h",
            "-I",
            f"islurm-job-{job_id}",
            "-n",
            CERT_PRINCIPAL,
            "-V",
            validity(until, time.time()),
            pub,
        ]
        try:
            with trio.fail_after(SIGN_TIMEOUT):
                proc = await trio.run_process(
                    argv, capture_stdout=True, capture_stderr=True, check=False
                )
        except (OSError, trio.TooSlowError) as exc:
            raise CaError(f"ssh-keygen -s failed: {exc}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise CaError(f"ssh-keygen -s exited {proc.returncode}: {err}")
        cert = _read(os.path.join(tmp, "host-cert.pub")).strip()
    if _CERT.fullmatch(cert) is None:
        raise CaError("ssh-keygen wrote an unexpected certificate")
    log.info("ca.signed", job_id=job_id, key_id=f"islurm-job-{job_id}", validity=argv[-2])
    return cert
