"""Host keys made on the login node before a job starts, so that the job only starts sshd.

Before sbatch: a fresh ed25519 key (ssh-keygen, in a private temporary dir). After sbatch, when
the job id is known: its certificate (key id naming the job), and both into the job's
`<id>.hostkey` file (0600, in the 0700 jobs dir), which the hook takes and removes at start.
A job that finds none (islurmd died in between, or the key expired while the job pended)
asks for a signature instead (readiness.sign_if_asked)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import structlog
import trio

from islurm.config import records
from islurm.daemon import sshca

log = structlog.get_logger("islurm.hostkeys")

KEYGEN_TIMEOUT = 10.0


@dataclass(frozen=True)
class PendingKey:
    """A key made for a submission whose job id is not known yet."""

    directory: str  # private temporary dir holding it
    private_key: str
    public_key: str


async def make(jobs_dir: str) -> PendingKey | None:
    """A fresh host key, or None (then the job asks for a signature itself)."""
    tmp = tempfile.mkdtemp(prefix=".key-", dir=jobs_dir)  # 0700
    path = os.path.join(tmp, "key")
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "islurm-job", "-f", path]
    try:
        with trio.fail_after(KEYGEN_TIMEOUT):
            proc = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
        if proc.returncode != 0:
            raise OSError(proc.stderr.decode("utf-8", "replace").strip())
        private, public = _read(path), _read(path + ".pub").strip()
    except (OSError, trio.TooSlowError) as exc:
        log.warning("hostkeys.keygen_failed", error=str(exc))
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    return PendingKey(tmp, private, public)


def discard(key: PendingKey | None) -> None:
    if key is not None:
        shutil.rmtree(key.directory, ignore_errors=True)


async def install(
    key: PendingKey, ca_dir: str, jobs_dir: str, job_id: str, lifetime: float | None
) -> bool:
    """Sign `key` for `job_id` and hand it to the job; False if that failed (the job then asks
    for a signature itself). `lifetime`: seconds the job may pend and run, None: unknown."""
    until = None if lifetime is None else time.time() + lifetime
    try:
        cert = await sshca.sign_host_key(ca_dir, key.public_key, job_id, until)
        records.write_json(
            records.path(jobs_dir, job_id, records.HOST_KEY),
            {
                "job_id": job_id,
                "private_key": key.private_key,
                "public_key": key.public_key,
                "certificate": cert,
                "until": until,
            },
        )
    except (sshca.CaError, OSError) as exc:
        log.warning("hostkeys.install_failed", job_id=job_id, error=str(exc))
        return False
    finally:
        discard(key)
    return True


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:  # a few hundred bytes on a local disk
        return f.read()
