"""islurm-proxy --via LOGIN PROFILE: the laptop's end of the laptop route (hop.py).

ssh runs this as ProxyCommand with ProxyUseFdpass. It opens one ssh connection to the login
node with a SOCKS listener on a private Unix socket (-D) and the login node's shim as the
remote command; that shim answers with the job's endpoint, and the connection to it is opened
by the login node's sshd through the SOCKS socket, exactly as `ssh -J` has it opened. Once the
job's sshd has sent its banner, the socket goes to our ssh and we exit: what stays is that
`ssh -D`, which carries the session as `ssh -J`'s inner ssh would, and ends with it.

The job and endpoint reached are remembered: the next connect tries them first with a plain
`ssh -W` (shortcut.py) and takes this full route only when they no longer answer.

Stdlib only, import-light (`_socket`, os.posix_spawnp; no `subprocess`, `socket`, `tempfile`).
"""

import _socket
import errno
import os
import time

from islurm.proxyshim import hop, node, report, shortcut
from islurm.proxyshim.exits import CODES, EXIT_DAEMON, EXIT_NODE, EXIT_OK
from islurm.proxyshim.report import ShimError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

LISTEN_WAIT = 5.0  # seconds for ssh's SOCKS socket to appear once the endpoint line came


class Route:
    """Our `ssh -D` to the login node, its private socket dir and its stdio pipes."""

    def __init__(self, options: list[str], dest: str, command: str, where: str) -> None:
        self.dir = os.path.join(where, f"islurm-via-{os.getpid()}-{os.urandom(6).hex()}")
        os.mkdir(self.dir, 0o700)  # fails on anything already there: never someone else's
        self.socks = os.path.join(self.dir, "socks")
        to_r, self.to_ssh = os.pipe()  # close-on-exec; the spawn's dup2 makes 0 and 1 ssh's
        self.from_ssh, from_w = os.pipe()
        argv = ["ssh", *options, "-D", self.socks, dest, command]
        try:
            self.pid = os.posix_spawnp(
                argv[0],
                argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, to_r, 0), (os.POSIX_SPAWN_DUP2, from_w, 1)],
            )
        except OSError as exc:
            self.pid = 0
            self.close()
            raise ShimError(EXIT_DAEMON, f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        finally:
            os.close(to_r)
            os.close(from_w)
        self.buf = b""
        self.job_id: str | None = None  # the job line's, before the endpoint line

    def endpoint(self) -> tuple[str, int] | None:
        """The next endpoint line from the login node; None once ssh's stdout ended. Other
        output before it (a login script's noise) is skipped, up to hop.MAX_NOISE bytes; the
        job line before it sets `job_id`."""
        skipped = 0
        self.job_id = None
        while skipped <= hop.MAX_NOISE:
            line, nl, rest = self.buf.partition(b"\n")
            if nl:
                self.buf = rest
                if len(line) < hop.MAX_LINE:
                    try:
                        found = hop.parse_endpoint(line)
                    except ValueError as exc:
                        raise ShimError(EXIT_DAEMON, str(exc)) from None
                    if found is not None:
                        return found
                    self.job_id = hop.parse_job(line) or self.job_id
                skipped += len(line) + 1
                continue  # the next line may be in the buffer already
            if len(self.buf) > hop.MAX_LINE:
                skipped += len(self.buf)
                self.buf = b""
            chunk = os.read(self.from_ssh, 4096)
            if not chunk:
                return None
            self.buf += chunk
        raise ShimError(EXIT_DAEMON, "the login node printed no endpoint, only noise")

    def tell(self, answer: bytes) -> None:
        try:
            os.write(self.to_ssh, answer)
        except OSError as exc:
            raise ShimError(EXIT_NODE, f"ssh to the login node went away: {exc}") from None

    def status(self) -> int:
        """ssh's exit status (it ended: its stdout did)."""
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """Remove the socket dir; our ends of the pipes are closed by exit."""
        for path, remove in ((self.socks, os.unlink), (self.dir, os.rmdir)):
            try:
                remove(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                report.report(f"cannot remove {path}: {exc.strerror or exc}")

    def stop(self) -> None:
        """On failure: end our ssh (by pid) and reap it."""
        if self.pid:
            try:
                os.kill(self.pid, 15)
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def _socks_connect(path: str, host: str, port: int) -> _socket.socket:
    """A SOCKS5 CONNECT through ssh's -D socket (no auth: the socket is ours alone)."""
    deadline = time.monotonic() + LISTEN_WAIT
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED):
                raise ShimError(EXIT_NODE, f"cannot use ssh's SOCKS socket: {exc}") from None
            if time.monotonic() > deadline:
                raise ShimError(EXIT_NODE, "ssh to the login node opened no SOCKS socket") from None
            time.sleep(0.002)
    name = host.encode("ascii")
    try:
        sock.sendall(b"\x05\x01\x00")
        if _recv(sock, 2) != b"\x05\x00":
            raise ShimError(EXIT_NODE, "ssh's SOCKS socket refused us")
        sock.sendall(b"\x05\x01\x00\x03" + bytes((len(name),)) + name + port.to_bytes(2, "big"))
        head = _recv(sock, 4)
        if head[1] != 0:
            raise ShimError(EXIT_NODE, f"the login node cannot connect to {host} port {port}")
        # The bound address (ssh sends 0.0.0.0:0), read to leave only the node's bytes.
        if head[3] == 1:
            _recv(sock, 4 + 2)
        elif head[3] == 4:
            _recv(sock, 16 + 2)
        else:
            _recv(sock, _recv(sock, 1)[0] + 2)
    except BaseException:
        sock.close()
        raise
    return sock


def _recv(sock: _socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except OSError as exc:
            raise ShimError(EXIT_NODE, f"ssh's SOCKS socket failed: {exc}") from None
        if not chunk:
            raise ShimError(EXIT_NODE, "the login node closed the connection to the node")
        data += chunk
    return data


def _where() -> str:
    """Where the private dir goes (short: a socket path has ~100 bytes). /tmp is safe for it:
    the dir's name is random and mkdir fails on anything already there."""
    tmp = "/tmp"  # noqa: S108 - see above
    for base in (os.environ.get("XDG_RUNTIME_DIR"), os.environ.get("TMPDIR"), tmp):
        if base and os.path.isdir(base) and len(base) < 60:
            return base
    return tmp


#: ssh's options for the route: never a prompt (ssh's own stdin is ours), never a shared
#: connection (a ControlMaster would outlive the session and so hold its job)
SSH_OPTIONS = ["-T", "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none"]


def run(dest: str, command: str, ssh_config: str | None = None) -> int:
    """Connect through `dest` (the login node as ssh names it), whose shell runs `command`
    (hop.remote_command): by the remembered endpoint if it still answers (shortcut.py), else
    by the full route. Returns only on failure; a success ends the process at handover."""
    options = SSH_OPTIONS + (["-F", ssh_config] if ssh_config else [])
    signals = __import__("_signal")  # `signal` would import enum: slow
    stoppers: list[Callable[[], None]] = []

    def leave(signum: int, _frame: object) -> None:
        for stop in stoppers:  # ssh left while we wait (or ^C): our ssh goes with it
            stop()
        os._exit(128 + signum)

    for signum in (signals.SIGHUP, signals.SIGINT, signals.SIGTERM):
        signals.signal(signum, leave)
    route_key = shortcut.key(dest, command, ssh_config)
    known = shortcut.recall(route_key)
    if known is not None:
        short = shortcut.Shortcut(options, dest, known)
        stoppers.append(short.stop)
        if short.banner_names(known.job_id):
            _hand_over(short.sock)
        short.stop()
        stoppers.clear()
        shortcut.forget(route_key)
        report.inform(f"job {known.job_id} is not at {known.host}:{known.port} any more")
    return _full(options, dest, command, route_key, stoppers)


def _hand_over(sock: _socket.socket) -> "NoReturn":
    node.hand_over(sock)
    # ssh waits for us to exit before it goes on: skip the interpreter's teardown. Our ssh
    # stays (reparented): it carries the session and ends with it.
    os._exit(EXIT_OK)


def _full(
    options: list[str],
    dest: str,
    command: str,
    route_key: str,
    stoppers: "list[Callable[[], None]]",
) -> int:
    """The full route (hop.py): ask the login node, connect through its sshd."""
    route = Route(options, dest, command, _where())
    stoppers += (route.stop, route.close)
    try:
        for _ in range(hop.STALE_RETRIES):
            found = route.endpoint()
            if found is None:
                route.close()
                code = route.status()
                if code in CODES and code != EXIT_OK:
                    return code  # the login node's shim said why on stderr
                report.report(f"ssh to the login node ended (exit {code}) before a session")
                return EXIT_DAEMON
            host, port = found
            try:
                sock = _socks_connect(route.socks, host, port)
                node.await_banner(sock)
            except ShimError as exc:
                report.inform(f"{exc.message}; telling the login node")
                route.tell(hop.UNREACHABLE)
                continue
            route.close()
            route.tell(hop.OK)
            if route.job_id is not None:  # a login node of an older islurm sends no job line
                why = shortcut.remember(route_key, shortcut.Remembered(route.job_id, host, port))
                if why is not None:
                    report.inform(f"cannot remember the route for the next connect: {why}")
            _hand_over(sock)
        route.close()
        return route.status() or EXIT_NODE  # the login side gave up and said why
    except BaseException:
        route.stop()
        route.close()
        raise
