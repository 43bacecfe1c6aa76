"""The daemon's side of the job files in the shared state dir (contract: config/records.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog

from islurm.config import records as contract
from islurm.config.records import Record, RecordError

log = structlog.get_logger("islurm.records")


@dataclass(frozen=True)
class Endpoint:
    """A job's sshd as the daemon hands it out: `host` is the IPv4 address to connect to."""

    job_id: str
    node: str
    host: str
    port: int
    pid: int
    host_key: str

    def matches(self, rec: Record | None) -> bool:
        """Whether `rec` is still the record this endpoint was made from."""
        return (
            rec is not None
            and rec.node == self.node
            and rec.port == self.port
            and rec.pid == self.pid
            and rec.host_key == self.host_key
        )


class RecordStore:
    """Reads and removes the hook's records and answers its signing requests."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, job_id: str, suffix: str) -> str:
        return contract.path(self.directory, job_id, suffix)

    def _read(self, job_id: str, suffix: str) -> object | None:
        try:
            return contract.read_json(self._path(job_id, suffix))
        except RecordError as exc:
            log.warning("records.refused", job_id=job_id, error=str(exc))
            return None

    def exists(self, job_id: str) -> bool:
        """Cheap check (stats) used while a connect waits: a record or an error is there."""
        return os.path.exists(self._path(job_id, contract.RECORD)) or os.path.exists(
            self._path(job_id, contract.ERROR)
        )

    def read(self, job_id: str) -> Record | None:
        """The job's readiness record, or None while there is no valid one."""
        return contract.record_from_json(self._read(job_id, contract.RECORD), job_id)

    def read_error(self, job_id: str) -> str | None:
        """The hook's error message if it could not start sshd."""
        if not os.path.lexists(self._path(job_id, contract.ERROR)):
            return None
        data = self._read(job_id, contract.ERROR)
        message = data.get("message") if isinstance(data, dict) else None
        return str(message) if message else "the session hook failed (unreadable error record)"

    def sign_request(self, job_id: str) -> tuple[str, float | None] | None:
        """(public key, valid until) of a job waiting for its host certificate, else None."""
        if not os.path.lexists(self._path(job_id, contract.SIGN_REQUEST)) or os.path.lexists(
            self._path(job_id, contract.CERTIFICATE)
        ):
            return None
        data = self._read(job_id, contract.SIGN_REQUEST)
        if not isinstance(data, dict) or data.get("job_id") != job_id:
            return None
        key, until = data.get("public_key"), data.get("until")
        if not isinstance(key, str):
            return None
        ok_until = isinstance(until, int | float) and not isinstance(until, bool)
        return key, float(until) if ok_until else None  # type: ignore[arg-type]

    def sessions(self, job_id: str) -> tuple[int, float | None]:
        """(authenticated ssh sessions the job reports, the job's epoch of the last change):
        sessions without a relay (ProxyUseFdpass) hold no lease, so the job says how many."""
        data = self._read(job_id, contract.SESSIONS)
        if not isinstance(data, dict):
            return 0, None
        n, at = data.get("sessions"), data.get("at")
        count = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 0
        when = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
        return count, when

    def write_certificate(self, job_id: str, cert: str) -> None:
        contract.write_json(
            self._path(job_id, contract.CERTIFICATE), {"job_id": job_id, "certificate": cert}
        )

    def remove(self, job_id: str) -> None:
        contract.remove(self.directory, job_id)
