"""Spare connections to a job's sshd, for the next connect.

Under ProxyUseFdpass ssh waits for the shim to exit before it says anything, and a relay's ssh
waits for the sshd's banner (sshd forks and re-executes itself per connection: ~12 ms here),
so that banner sat on every connect's route. After a
connect that takes its socket from islurmd (`"take_socket": true`, docs/PROTOCOL.md §2),
islurmd opens one more connection to that job's sshd, waits until the banner, tagged with the
job's id (config/jobbanner.py), has arrived, and keeps it for SPARE_TTL seconds: the next
such connect within that time gets it with `session.ready`, over the Unix socket (SCM_RIGHTS).

Bounds: one spare per job; made only after a connect asked for one and never renewed by
itself, so an idle user costs nothing (no timer, no connection); closed unused after
SPARE_TTL, well inside the sshd's LoginGraceTime (20 s, sessionhooks/sshd.py), so ssh still
has ten seconds or more to authenticate on one handed at its last moment. A spare is handed
only for the endpoint the connect was given (record and job checked by the manager as for
any connect) and only if its sshd has not hung up. A TCP connection stays with the process
that accepted it: a spare proves its endpoint at least as well as a fresh connect would, and
ssh's check of the host certificate still decides."""

from __future__ import annotations

import select
import socket

import structlog
import trio

from islurm.config import jobbanner
from islurm.daemon.records import Endpoint

log = structlog.get_logger("islurm.spares")

SPARE_TTL = 10.0  # seconds a spare is handed out (the job's sshd: LoginGraceTime 20)
BANNER_WAIT = 3.0  # seconds for a new spare's banner
BANNER_MAX = 255  # an SSH banner line, CR LF included (RFC 4253 4.2)
_HUNG_UP = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class _Spare:
    def __init__(self, sock: trio.socket.SocketType, endpoint: Endpoint, made: float) -> None:
        self.sock, self.endpoint, self.made = sock, endpoint, made


def hung_up(sock: trio.socket.SocketType) -> bool:
    """Whether the peer closed (its banner may still be queued: a peek would not tell)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return any(events & _HUNG_UP for _, events in poller.poll(0))


class Spares:
    """At most one ready connection per job, kept for SPARE_TTL seconds."""

    def __init__(self, ttl: float = SPARE_TTL) -> None:
        self.ttl = ttl
        self._kept: dict[str, _Spare] = {}
        self._filling: set[str] = set()
        self.made = 0  # spares whose banner arrived (for status and tests)
        self.handed = 0

    def __len__(self) -> int:
        return len(self._kept)

    def vouches(self, endpoint: Endpoint) -> bool:
        """Whether the job's spare, for `endpoint`, within its TTL and still open, shows its
        sshd alive (it answered, and its connection stands): no TCP check needed."""
        spare = self._kept.get(endpoint.job_id)
        return (
            spare is not None
            and spare.endpoint == endpoint
            and trio.current_time() - spare.made < self.ttl
            and not hung_up(spare.sock)
        )

    def take(self, endpoint: Endpoint) -> trio.socket.SocketType | None:
        """The job's spare, if it is for `endpoint`, younger than the TTL and still open;
        the caller owns it (and closes it once sent)."""
        spare = self._kept.pop(endpoint.job_id, None)
        if spare is None:
            return None
        age = trio.current_time() - spare.made
        if spare.endpoint != endpoint or age >= self.ttl or hung_up(spare.sock):
            log.info("spare.dropped", job_id=endpoint.job_id, age=round(age, 3))
            spare.sock.close()
            return None
        self.handed += 1
        return spare.sock

    def drop(self, job_id: str) -> None:
        spare = self._kept.pop(job_id, None)
        if spare is not None:
            spare.sock.close()

    def close(self) -> None:
        for job_id in list(self._kept):
            self.drop(job_id)

    async def fill(self, endpoint: Endpoint) -> None:
        """Make the job's spare if it has none (nothing if one is on its way), keep it for the
        TTL, then close it if nobody took it. Failures are logged, never raised: a connect
        without a spare takes the usual route."""
        job_id = endpoint.job_id
        if job_id in self._kept or job_id in self._filling:
            return
        self._filling.add(job_id)
        try:
            sock = await _open(endpoint)
        except (OSError, trio.TooSlowError, ValueError) as exc:
            log.info("spare.failed", job_id=job_id, error=str(exc) or type(exc).__name__)
            return
        finally:
            self._filling.discard(job_id)
        spare = _Spare(sock, endpoint, trio.current_time())
        self._kept[job_id] = spare
        self.made += 1
        try:
            await trio.sleep(self.ttl)
        finally:
            if self._kept.get(job_id) is spare:
                self.drop(job_id)


async def _open(endpoint: Endpoint) -> trio.socket.SocketType:
    """A connection to the endpoint whose banner, naming its job, has arrived (left queued
    for ssh); raises OSError, TooSlowError or ValueError (not that job's sshd)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.fail_after(BANNER_WAIT):
            await sock.connect((endpoint.host, endpoint.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                head = await sock.recv(BANNER_MAX, socket.MSG_PEEK)
                if b"\n" in head or len(head) >= BANNER_MAX or not head:
                    break
                await trio.sleep(0.001)  # part of the line: the rest is on its way
        if not jobbanner.names(head, endpoint.job_id):
            raise ValueError(f"no sshd of job {endpoint.job_id} there: {head[:40]!r}")
    except BaseException:
        sock.close()
        raise
    return sock
