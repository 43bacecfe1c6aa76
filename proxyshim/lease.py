"""The lease: the shim's RPC connection kept open while bytes flow (docs/PROTOCOL.md §2).

Watched inside the pump's poll loop; it never stalls the bytes."""

import time

from islurm.config.protocol import PROTOCOL
from islurm.proxyshim.exits import EXIT_ENDED
from islurm.proxyshim.jsonline import ProtocolError
from islurm.proxyshim.report import ShimError, report
from islurm.proxyshim.rpc import (
    ABSENT_ERRNOS,
    DAEMON_SHUTTING_DOWN,
    RECONNECT_EVERY,
    RESPAWN_EVERY,
    Conn,
    DaemonGone,
    as_text,
    ensure_socket_dir,
    error_text,
    open_socket,
    refuses_protocol,
)


class Lease:
    """The RPC connection held while the pump runs (it is the lease on the job).

    Reports `session.ended`; when islurmd goes away it re-attaches in the background, one
    non-blocking attempt a second, starting the daemon if needed. Never stalls the bytes.
    """

    def __init__(self, conn: Conn | None, path: str, job_id: str, profile: str) -> None:
        self._conn = conn
        self._path = path
        self._job_id = job_id
        self._profile = profile
        self._attach_id: int | None = None
        self._retry_at: float | None = None
        self._spawned_at = -RESPAWN_EVERY
        self._gave_up = False
        self._protocol: int | None = PROTOCOL  # None: the daemon predates protocol versions
        if conn is None:
            self._retry_at = time.monotonic()
        else:
            conn.sock.setblocking(False)

    def fileno(self) -> int:
        return self._conn.sock.fileno() if self._conn is not None else -1

    def deadline(self) -> float | None:
        return self._retry_at

    def on_readable(self) -> int | None:
        conn = self._conn
        if conn is None:
            return None
        alive = conn.fill()
        try:
            while (msg := conn.pop()) is not None:
                code = self._handle(msg)
                if code is not None:
                    return code
                if self._conn is not conn:
                    return None
        except ProtocolError:
            alive = False
        if not alive:
            self._drop()
        return None

    def _handle(self, msg: dict[str, object]) -> int | None:
        if msg.get("method") == "session.ended":
            params = msg.get("params")
            text = as_text(params.get("message")) if isinstance(params, dict) else ""
            report(text or f"job {self._job_id} ended")
            return EXIT_ENDED
        if self._attach_id is not None and msg.get("id") == self._attach_id:
            self._attach_id = None
            error = msg.get("error")
            if error is not None:
                code = error.get("code") if isinstance(error, dict) else None
                if refuses_protocol(error) and self._protocol is not None:
                    self._protocol = None  # an islurmd 0.1: attach again, without it
                elif code != DAEMON_SHUTTING_DOWN:
                    # The daemon does not know the job: retrying will not change its mind.
                    report(f"cannot re-take the lease on job {self._job_id}: {error_text(error)}")
                    self._gave_up = True
                self._drop()
        return None

    def explain_end(self, wait: float) -> int | None:
        """After the node hung up: ask islurmd to look at Slurm now (session.check) and wait
        briefly for `session.ended`; its exit code, or None if the job is still fine."""
        conn = self._conn
        if conn is None:
            return None
        try:
            conn.sock.setblocking(True)
            conn.send("session.check", {"job_id": self._job_id})
            deadline = time.monotonic() + wait
            while (msg := conn.wait(deadline)) is not None:
                code = self._handle(msg)
                if code is not None:
                    return code
        except (OSError, DaemonGone, ProtocolError):
            return None
        return None

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._attach_id = None
        self._retry_at = None if self._gave_up else time.monotonic() + RECONNECT_EVERY

    def tick(self) -> None:
        now = time.monotonic()
        self._retry_at = now + RECONNECT_EVERY
        try:
            sock, err = open_socket(self._path, blocking=False)
        except (OSError, ShimError):
            return
        if err == 0:
            conn = Conn(sock)
            try:
                params: dict[str, object] = {"job_id": self._job_id, "profile": self._profile}
                if self._protocol is not None:
                    params["protocol"] = self._protocol
                attach_id = conn.send("session.attach", params)
            except OSError:
                conn.close()
                return
            self._conn, self._attach_id, self._retry_at = conn, attach_id, None
            return
        sock.close()
        if err in ABSENT_ERRNOS and now - self._spawned_at >= RESPAWN_EVERY:
            self._spawned_at = now
            try:
                ensure_socket_dir(self._path)
                from islurm.proxyshim.spawn import spawn_daemon  # rarely needed

                spawn_daemon(self._path, wait=False)
            except ShimError:
                pass
