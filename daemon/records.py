"""The readiness records jobs write to the shared state dir (docs/PROTOCOL.md §3)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

RECORD_VERSION = 1


@dataclass(frozen=True)
class Endpoint:
    job_id: str
    node: str
    host: str
    port: int
    pid: int
    host_key: str


class RecordStore:
    """Reads and removes records; only the hook writes them."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, job_id: str, suffix: str) -> str:
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        return os.path.join(self.directory, f"{job_id}{suffix}")

    def exists(self, job_id: str) -> bool:
        """Cheap check (one stat) used while a connect waits."""
        return os.path.exists(self._path(job_id, ".json")) or os.path.exists(
            self._path(job_id, ".error")
        )

    def read(self, job_id: str) -> Endpoint | None:
        """The job's endpoint, or None while there is no (complete) record."""
        try:
            with open(self._path(job_id, ".json"), encoding="utf-8") as f:
                data = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return endpoint_from_record(data, job_id)

    def read_error(self, job_id: str) -> str | None:
        """The hook's error message if it could not start sshd."""
        try:
            with open(self._path(job_id, ".error"), encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "the session hook failed (unreadable error record)"
        message = data.get("message") if isinstance(data, dict) else None
        return str(message) if message else "the session hook failed"

    def remove(self, job_id: str) -> None:
        for suffix in (".json", ".error"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(job_id, suffix))

    def job_ids(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        ids = {n.split(".", 1)[0] for n in names if n.endswith((".json", ".error"))}
        return sorted(i for i in ids if i.isdigit())


def endpoint_from_record(data: object, job_id: str) -> Endpoint | None:
    """Validate a record's fields; a record of another version or job is ignored."""
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return None
    try:
        endpoint = Endpoint(
            job_id=str(data["job_id"]),
            node=str(data["node"]),
            host=str(data["host"]),
            port=int(data["port"]),
            pid=int(data["pid"]),
            host_key=str(data.get("host_key", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if endpoint.job_id != job_id or not 0 < endpoint.port < 65536:
        return None
    return endpoint
