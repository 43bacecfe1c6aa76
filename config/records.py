"""The job files in the shared state dir (docs/PROTOCOL.md §3): one definition for both sides.

The hook (compute node) writes a signing request, then the readiness record or an error; the
daemon (login node) writes the host certificate. Stdlib only: the hook imports this.

    jobs/<id>.json       readiness record: where the job's sshd listens      (hook writes)
    jobs/<id>.error      why the hook could not start sshd                   (hook writes)
    jobs/<id>.csr        the job's host public key, asking to be signed      (hook writes)
    jobs/<id>.cert       the host certificate signed by the user's CA        (daemon writes)
    jobs/<id>.hostkey    a host key made and signed before the job started   (daemon writes;
                         the hook takes it and removes it at start)
    jobs/<id>.sessions   how many authenticated ssh sessions the job's sshd has  (hook writes;
                         sessions without a relay hold no lease: idle reaping counts these)
"""

from __future__ import annotations

import errno
import os
import stat

from islurm.config import jsonlite
from islurm.config.files import write_text_atomic

RECORD_VERSION = 2
MAX_RECORD = 16 * 1024  # bytes; a bigger file is not ours
RECORD = ".json"
ERROR = ".error"
SIGN_REQUEST = ".csr"
CERTIFICATE = ".cert"
HOST_KEY = ".hostkey"
SESSIONS = ".sessions"
SUFFIXES = (RECORD, ERROR, SIGN_REQUEST, CERTIFICATE, HOST_KEY, SESSIONS)
#: the address family the job's sshd listens on; connects use exactly this family
LISTEN_FAMILY = "inet"
LISTEN_ADDRESS = "0.0.0.0"  # noqa: S104 - every IPv4 address of the node, nothing else


class RecordError(ValueError):
    """A job file that exists but is not a valid one of ours."""


class Record:
    """A readiness record: the job's sshd listens on node:port, IPv4, with this host key.
    Immutable. A plain class, not a dataclass: `dataclasses` costs the hook's start 10 ms."""

    __slots__ = ("family", "host_key", "job_id", "node", "pid", "port")
    job_id: str
    node: str
    port: int
    pid: int
    host_key: str
    family: str

    def __init__(
        self,
        job_id: str,
        node: str,
        port: int,
        pid: int,
        host_key: str,
        family: str = LISTEN_FAMILY,
    ) -> None:
        for name, value in zip(
            ("job_id", "node", "port", "pid", "host_key", "family"),
            (job_id, node, port, pid, host_key, family),
            strict=True,
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Record is immutable: cannot set {name}")

    def _fields(self) -> tuple[str, str, int, int, str, str]:
        return (self.job_id, self.node, self.port, self.pid, self.host_key, self.family)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        job_id, node, port, pid, host_key, family = self._fields()
        return (
            f"Record(job_id={job_id!r}, node={node!r}, port={port!r}, pid={pid!r}, "
            f"host_key={host_key!r}, family={family!r})"
        )

    def to_json(self, user: str, profile: str, started: float) -> dict[str, object]:
        return {
            "version": RECORD_VERSION,
            "job_id": self.job_id,
            "node": self.node,
            "family": self.family,
            "listen": LISTEN_ADDRESS,
            "port": self.port,
            "pid": self.pid,
            "host_key": self.host_key,
            "user": user,
            "profile": profile,
            "started": started,
        }


def path(directory: str, job_id: str, suffix: str) -> str:
    if not job_id.isdigit():
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return os.path.join(directory, job_id + suffix)


def read_json(file: str) -> object | None:
    """A job file's JSON: None if it does not exist; RecordError if it is not a small regular
    file of ours or not JSON. Never follows a symlink."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RecordError(f"{file} is a symlink") from None
        raise RecordError(f"cannot open {file}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError(f"{file} is not a regular file")
        if st.st_uid != os.getuid():
            raise RecordError(f"{file} is owned by uid {st.st_uid}, not by you")
        data = os.read(fd, MAX_RECORD + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_RECORD:
        raise RecordError(f"{file} is larger than {MAX_RECORD} bytes")
    try:
        parsed: object = jsonlite.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecordError(f"{file} is not JSON: {exc}") from None
    return parsed


def write_json(file: str, data: dict[str, object], durable: bool = True) -> None:
    write_text_atomic(file, jsonlite.dumps(data), 0o600, durable)


def record_from_json(data: object, job_id: str) -> Record | None:
    """Validate a readiness record; one of another version, job or family is ignored."""
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return None
    try:
        rec = Record(
            job_id=str(data["job_id"]),
            node=str(data["node"]),
            port=int(data["port"]),
            pid=int(data["pid"]),
            host_key=str(data["host_key"]),
            family=str(data["family"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if rec.job_id != job_id or not 0 < rec.port < 65536 or rec.family != LISTEN_FAMILY:
        return None
    if not rec.node or any(c.isspace() or ord(c) < 0x20 for c in rec.node):
        return None
    return rec


def remove(directory: str, job_id: str, suffixes: tuple[str, ...] = SUFFIXES) -> None:
    for suffix in suffixes:
        try:
            os.unlink(path(directory, job_id, suffix))
        except FileNotFoundError:  # contextlib: one import more at every job start
            continue
