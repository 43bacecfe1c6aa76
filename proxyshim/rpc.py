"""The shim's side of the islurmd RPC (docs/PROTOCOL.md §2).

Newline-delimited JSON-RPC on the daemon's Unix socket: `acquire` a session (starting islurmd
on demand), then keep the connection as the `Lease` while the pump runs.

Import-light on purpose: see jsonline.py. A little over 300 lines: it is also islurmctl's
client (one framing for both), and the acquire conversation reads best beside the connection.
"""

import _socket
import errno
import os
import select
import sys
import time

from islurm.config import protocol, rpccodes
from islurm.proxyshim.exits import EXIT_ACQUIRE, EXIT_DAEMON
from islurm.proxyshim.jsonline import ProtocolError, dumps
from islurm.proxyshim.jsonline import message as _message
from islurm.proxyshim.report import ShimError, inform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from islurm.proxyshim.spawn import Startup

MAX_LINE = 64 * 1024
RESPONSE_TIMEOUT = 30.0  # session.acquire answers at once; only the notifications take long
TIMEOUT_GRACE = 30.0  # past the requested --timeout, a daemon that said nothing is hung
START_TIMEOUT = 10.0  # for a daemon started on demand to listen
RECONNECT_EVERY = 1.0  # lease lost mid-session: one non-blocking attempt a second
RESPAWN_EVERY = 10.0  # ... and at most one daemon start per this many seconds
DAEMON_SHUTTING_DOWN = rpccodes.SHUTTING_DOWN

ABSENT_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED)  # nobody listens: start the daemon


# -- the connection ---------------------------------------------------------------------------


class DaemonGone(Exception):
    """The daemon closed the connection."""


class DaemonStopping(DaemonGone):
    """The daemon said it is shutting down (code 1008): ask the next one."""


class RefusedParam(Exception):
    """An older islurmd refused an optional param it does not know (`protocol` before 0.1,
    `take_socket` before spares): ask again without it (docs/PROTOCOL.md §2 "Versions")."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


OPTIONAL_PARAMS = ("protocol", "take_socket")  # what an older islurmd may not know


def refuses_param(error: object, name: str) -> bool:
    return (
        isinstance(error, dict)
        and error.get("code") == rpccodes.INVALID_PARAMS
        and f"'{name}'" in str(error.get("data"))
    )


def refuses_protocol(error: object) -> bool:
    return refuses_param(error, "protocol")


class Conn:
    """One connection to islurmd: requests out, bounded lines in."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._next_id = 1
        self._poller: select.poll | None = None
        self.fds: list[int] | None = None  # a list: descriptors are taken (SCM_RIGHTS)

    def close(self) -> None:
        self.close_fds()
        self.sock.close()

    def close_fds(self) -> None:
        """Close the descriptors received and not taken; take no more."""
        for fd in self.fds or ():
            os.close(fd)
        self.fds = None

    def send(self, method: str, params: dict[str, object]) -> int:
        """Send a request; return its id."""
        req_id = self._next_id
        self._next_id += 1
        line = dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        self.sock.sendall(line.encode("ascii") + b"\n")
        return req_id

    def fill(self) -> bool:
        """Read what is there (tolerating nothing); False once the daemon has closed."""
        try:
            data = self.sock.recv(MAX_LINE) if self.fds is None else self._recv_fds()
        except BlockingIOError:
            return True
        except OSError:
            return False
        self._buf += data
        return bool(data)

    def _recv_fds(self) -> bytes:
        """recv, keeping the descriptors that come with the bytes (islurmd sends one, with
        the first byte of the `session.ready` that says so)."""
        data, ancillary, _flags, _ = self.sock.recvmsg(
            MAX_LINE, _socket.CMSG_SPACE(4), _socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                for i in range(0, len(payload) - len(payload) % 4, 4):
                    fd = int.from_bytes(payload[i : i + 4], sys.byteorder)
                    if self.fds is None:
                        os.close(fd)
                    else:
                        self.fds.append(fd)
        return data

    def take_fd(self) -> int | None:
        """The descriptor received with the last message, if any; the rest are closed."""
        fds, self.fds = self.fds or [], None
        for fd in fds[:-1]:
            os.close(fd)
        return fds[-1] if fds else None

    def pop(self) -> dict[str, object] | None:
        """The next complete message received, if any."""
        while True:
            end = self._buf.find(b"\n")
            if end > MAX_LINE or (end < 0 and len(self._buf) > MAX_LINE):
                raise ProtocolError(f"islurmd sent a line longer than {MAX_LINE} bytes")
            if end < 0:
                return None
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if line.strip():
                return _message(line)

    def wait(self, deadline: float | None) -> dict[str, object] | None:
        """Block for the next message; None at `deadline`; DaemonGone at EOF."""
        while True:
            msg = self.pop()
            if msg is not None:
                return msg
            timeout = -1
            if deadline is not None:
                timeout = int((deadline - time.monotonic()) * 1000) + 1
                if timeout <= 0:
                    return None
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.sock.fileno(), select.POLLIN)
            if self._poller.poll(timeout) and not self.fill():
                raise DaemonGone


def _peer_uid(sock: _socket.socket) -> int:
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: 3 ints
    return int.from_bytes(cred[4:8], sys.byteorder)


def open_socket(path: str, blocking: bool) -> tuple[_socket.socket, int]:
    """A socket and its connect() errno (0: connected to a daemon of ours)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        if blocking:
            sock.settimeout(START_TIMEOUT)  # a full backlog would block connect()
        else:
            sock.setblocking(False)
        err = sock.connect_ex(path)
        if err == 0:
            uid = _peer_uid(sock)
            if uid != os.getuid():
                raise ShimError(
                    EXIT_DAEMON, f"refusing {path}: it is served by uid {uid}, not by you"
                )
            if blocking:
                sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock, err


def attempt(path: str) -> Conn | None:
    """One connect: a Conn, None if nobody listens (start the daemon), else ShimError."""
    try:
        sock, err = open_socket(path, blocking=True)
    except OSError as exc:
        raise ShimError(EXIT_DAEMON, f"cannot connect to islurmd at {path}: {exc}") from None
    if err == 0:
        return Conn(sock)
    sock.close()
    if err not in ABSENT_ERRNOS:
        raise ShimError(EXIT_DAEMON, f"cannot connect to islurmd at {path}: {os.strerror(err)}")
    return None


def connect(path: str) -> Conn:
    """Connect to islurmd at `path`, starting it if nobody listens there."""
    ensure_socket_dir(path)
    conn = attempt(path)
    if conn is not None:
        return conn
    inform("starting islurmd\N{HORIZONTAL ELLIPSIS}")
    from islurm.proxyshim.spawn import spawn_daemon  # not on the happy path

    startup = spawn_daemon(path, wait=True)
    try:
        return _await_listening(path, startup)
    finally:
        startup.close()


def _await_listening(path: str, startup: "Startup") -> Conn:
    """Connect once the daemon just started listens; fail at once with its own error if it
    exited instead (EOF on its start-up stderr and nobody listening)."""
    give_up = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while True:
        ended = startup.wait(delay)  # returns early when the daemon listens or exits
        conn = attempt(path)
        if conn is not None:
            return conn
        if ended and startup.error():
            raise ShimError(EXIT_DAEMON, f"islurmd could not start: {startup.error()}")
        if time.monotonic() >= give_up:
            raise ShimError(
                EXIT_DAEMON,
                f"islurmd did not start listening on {path} within {START_TIMEOUT:g} s "
                f"(its log: {_log_path()})",
            )
        delay = min(delay * 1.5, 0.2)


def _log_path() -> str:
    from islurm.config import paths

    return os.path.join(paths.log_dir(), "islurmd.log")


def ensure_socket_dir(path: str) -> None:
    """The socket's directory: created 0700, refused unless it is the user's (PROTOCOL §1)."""
    from islurm.config import paths

    try:
        paths.ensure_private_dir(os.path.dirname(path) or ".")
    except OSError as exc:
        raise ShimError(EXIT_DAEMON, f"cannot use the socket directory: {exc}") from None


# -- acquiring a session ----------------------------------------------------------------------


class Ready:
    """Where the session's sshd listens (the params of session.ready)."""

    def __init__(
        self, job_id: str, node: str, host: str, port: int, lease: str, fd: int | None = None
    ) -> None:
        self.job_id = job_id
        self.node = node
        self.host = host
        self.port = port
        self.lease = lease
        self.fd = fd  # a connection to host:port that islurmd made ready (take_socket)


def acquire(
    path: str,
    profile: str,
    timeout: float | None = None,
    unreachable: "Ready | None" = None,
    image: str | None = None,
    fdpass: bool = False,
    take_socket: bool = False,
) -> tuple[Conn, Ready]:
    """Ask islurmd for a ready session; keep the returned connection open: it is the lease.
    `unreachable`: the endpoint islurmd gave before, which did not answer (it drops it);
    `image`: run the session in this image instead of the profile's; `take_socket`: islurmd
    may send a connection to the endpoint, its banner arrived, in `Ready.fd`."""
    params: dict[str, object] = {
        "profile": profile,
        "client_pid": os.getpid(),
        "protocol": protocol.PROTOCOL,
    }
    if image is not None:
        params["image"] = image
    if fdpass:  # ssh will hold the socket: the job's own session count keeps it alive
        params["fdpass"] = True
    if take_socket:
        params["take_socket"] = True
    if timeout is not None:
        params["timeout"] = timeout
    if unreachable is not None:
        params["unreachable"] = {
            "job_id": unreachable.job_id,
            "host": unreachable.host,
            "port": unreachable.port,
        }
    gone = 0
    while gone < 2:
        conn = connect(path)
        if "take_socket" in params:
            conn.fds = []
        try:
            return conn, _await_ready(conn, conn.send("session.acquire", params), timeout)
        except RefusedParam as exc:
            conn.close()
            if params.pop(exc.name, None) is None:
                raise ShimError(EXIT_DAEMON, "islurmd refused the request's params") from None
        except DaemonGone as exc:
            conn.close()
            gone += 1
            if gone == 1:
                inform(
                    "islurmd is shutting down; asking the next one"
                    if isinstance(exc, DaemonStopping)
                    else "islurmd closed the connection; asking again"
                )
        except OSError as exc:
            conn.close()
            raise ShimError(EXIT_DAEMON, f"lost the connection to islurmd: {exc}") from None
        except ProtocolError as exc:
            conn.close()
            raise ShimError(EXIT_DAEMON, str(exc)) from None
        except BaseException:
            conn.close()
            raise
    raise ShimError(
        EXIT_DAEMON,
        f"islurmd closed the connection before the session was ready, twice (its log: "
        f"{_log_path()})",
    )


def as_text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _await_ready(conn: Conn, req_id: int, timeout: float | None) -> Ready:
    start = time.monotonic()
    answer_by = start + RESPONSE_TIMEOUT
    ready_by = None if timeout is None else start + timeout + TIMEOUT_GRACE
    answered = False
    shown = ""
    while True:
        deadline = ready_by if answered else min(answer_by, ready_by or answer_by)
        msg = conn.wait(deadline)
        if msg is None:
            if not answered:
                raise ShimError(
                    EXIT_DAEMON, f"islurmd did not answer within {RESPONSE_TIMEOUT:g} s"
                )
            raise ShimError(
                EXIT_DAEMON,
                f"islurmd sent neither session.ready nor a failure within {timeout:g} s "
                f"(+{TIMEOUT_GRACE:g} s of grace)",
            )
        method = msg.get("method")
        if method is None:
            if msg.get("id") != req_id:
                continue
            error = msg.get("error")
            if isinstance(error, dict) and error.get("code") == DAEMON_SHUTTING_DOWN:
                raise DaemonStopping
            for name in OPTIONAL_PARAMS:
                if refuses_param(error, name):
                    raise RefusedParam(name)
            if error is not None:
                raise ShimError(EXIT_ACQUIRE, error_text(error))
            answered = True
            continue
        params = msg.get("params")
        if not isinstance(params, dict):
            params = {}
        if method == "session.progress":
            text = as_text(params.get("message"))
            if text and text != shown:
                inform(text)
                shown = text
        elif method == "session.ready":
            ready = _ready(params)
            if params.get("socket") is True:
                ready.fd = conn.take_fd()
            conn.close_fds()
            return ready
        elif method == "session.failed" and params.get("code") == DAEMON_SHUTTING_DOWN:
            raise DaemonStopping
        elif method in ("session.failed", "session.ended"):
            raise ShimError(EXIT_ACQUIRE, as_text(params.get("message")) or "the session failed")
        # Anything else is a notification from a newer daemon: ignore it.


def error_text(error: object) -> str:
    if isinstance(error, dict):
        text = as_text(error.get("message"))
        if text:
            return text
        return f"islurmd refused: error {error.get('code')}"
    return "islurmd refused the request"


def _ready(params: dict[str, object]) -> Ready:
    job_id, host, port = params.get("job_id"), params.get("host"), params.get("port")
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if not (
        isinstance(job_id, str)
        and job_id
        and isinstance(host, str)
        and host
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 < port < 65536
    ):
        raise ShimError(EXIT_ACQUIRE, f"islurmd sent an invalid session.ready: {dumps(params)}")
    return Ready(
        job_id, as_text(params.get("node")) or host, host, port, as_text(params.get("lease"))
    )
