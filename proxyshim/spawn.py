"""Starting islurmd on demand: fully detached, its start-up stderr piped back to the starter.

The daemon's stderr is a pipe to us until it listens (it then puts /dev/null there, told so by
$ISLURM_STARTUP_STDERR) or exits: EOF on the pipe comes at once either way, and a daemon that
could not start has written why (`islurmd: config.toml:1: ...`). Imported only when nobody
listens on the socket: not on the shim's happy path.
"""

import os
import select
import sys
import time

from islurm.proxyshim.exits import EXIT_DAEMON
from islurm.proxyshim.jsonline import loads
from islurm.proxyshim.report import ShimError

STARTUP_STDERR_ENV = "ISLURM_STARTUP_STDERR"  # "1": fd 2 is the starter's pipe until listening
KEEP_STDERR = 8192  # bytes of the daemon's start-up stderr kept (its tail)
SHOW_CHARS = 1000  # at most this much of it in the message


def daemon_argv() -> list[str]:
    """How to run islurmd, for the shim and for `islurmctl service install` alike:
    $ISLURM_DAEMON_CMD (a JSON list of strings), else the islurmd script beside this Python
    (symlinks kept: the venv is found through them), else this Python running the daemon
    module. ValueError if none of these can be told."""
    raw = os.environ.get("ISLURM_DAEMON_CMD")
    if raw:
        try:
            argv = loads(raw)
        except ValueError:
            argv = None
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ValueError("ISLURM_DAEMON_CMD must be a JSON list of strings")
        return argv
    if not sys.executable:
        raise ValueError("cannot tell which Python runs islurm (sys.executable is empty)")
    # Through an install's `current` link: after an update the new version starts.
    from islurm.config.installs import through_current

    python = through_current(os.path.abspath(sys.executable))
    script = os.path.join(os.path.dirname(python), "islurmd")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [python, "-m", "islurm.daemon.main"]


class Startup:
    """A daemon being started: what it writes on stderr until it listens or exits."""

    def __init__(self, fd: int) -> None:
        self._fd = fd  # -1: not watched
        self._said = bytearray()
        self._poller: select.poll | None = None

    @property
    def ended(self) -> bool:
        """The daemon listens, or has exited (or is not watched)."""
        return self._fd < 0

    def wait(self, timeout: float) -> bool:
        """Read its stderr for up to `timeout` s, returning early at EOF; True once ended."""
        if self._fd < 0:
            time.sleep(timeout)  # nothing left to watch: keep the caller's pace
            return True
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self._fd, select.POLLIN)
        while self._poller.poll(max(int(timeout * 1000), 0)):
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                data = b""
            if not data:
                self.close()
                return True
            self._said += data
            del self._said[:-KEEP_STDERR]
            timeout = 0  # drain what is there, then report
        return False

    def error(self) -> str:
        """The last line the daemon wrote (its fatal error), control characters stripped."""
        text = self._said.decode("utf-8", "replace")
        lines = [_printable(line).strip() for line in text.splitlines()]
        last = next((line for line in reversed(lines) if line), "")
        last = last.removeprefix("islurmd: ")
        if len(last) > SHOW_CHARS:
            last = last[: SHOW_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
        return last

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _printable(text: str) -> str:
    return "".join("?" if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)


def spawn_daemon(path: str, wait: bool) -> Startup:
    """Start islurmd for socket `path` fully detached (double fork, new session, stdin and
    stdout on /dev/null); it learns `path` from $ISLURM_SOCKET, as --socket may have named it.

    With `wait`, block until it has exec'd (ShimError if it could not) and return its
    start-up stderr to watch; without, its stderr is /dev/null too. Several shims may race
    here: the daemon takes a lock and the losers exit.
    """
    try:
        argv = daemon_argv()
    except ValueError as exc:
        raise ShimError(EXIT_DAEMON, str(exc)) from None
    # A close-on-exec pipe: EOF means the exec worked, bytes are the error that stopped it.
    status_r, status_w = os.pipe()
    err_r, err_w = os.pipe() if wait else (-1, -1)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            _become_daemon(argv, path, status_w, err_w)
        os.close(status_w)
        status_w = -1
        if err_w >= 0:
            os.close(err_w)  # the daemon's copy alone holds the pipe open now
            err_w = -1
        os.waitpid(pid, 0)  # the intermediate child exits at once
        failure = os.read(status_r, 512) if wait else b""
    except OSError as exc:
        for fd in (err_r, err_w):
            if fd >= 0:
                os.close(fd)
        raise ShimError(EXIT_DAEMON, f"cannot start islurmd: {exc}") from None
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
    startup = Startup(err_r)
    if failure:
        startup.close()
        raise ShimError(
            EXIT_DAEMON,
            f"cannot start islurmd ({argv[0]}): {failure.decode('utf-8', 'replace')}",
        )
    return startup


def _become_daemon(  # pragma: no cover - the child never returns
    argv: list[str], path: str, status_w: int, err_w: int
) -> None:
    try:
        os.environ["ISLURM_SOCKET"] = path
        os.environ.pop("JOURNAL_STREAM", None)  # its stderr is not the journal's stream
        if err_w >= 0:
            os.environ[STARTUP_STDERR_ENV] = "1"
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never the shim's stdout: that is the SSH stream
            os.dup2(null, fd)
        if err_w >= 0:
            os.dup2(err_w, 2)  # the start-up pipe; inheritable, unlike err_w itself
        if null > 2:
            os.close(null)
        else:
            os.set_inheritable(null, True)
        _close_inherited(keep=status_w)
        os.chdir("/")
        signals = __import__("_signal")  # `signal` imports enum: slow
        signals.signal(signals.SIGPIPE, signals.SIG_DFL)  # Python ignores it; exec keeps that
        os.execvp(argv[0], argv)  # noqa: S606 - an argv list, no shell
    except BaseException as exc:
        try:
            os.write(status_w, str(exc).encode("utf-8", "replace") or b"failed")
        finally:
            os._exit(127)


def _close_inherited(keep: int) -> None:  # pragma: no cover - in children
    # Python opens its own fds close-on-exec; this is for what the shim inherited from ssh.
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != keep:
            try:  # noqa: SIM105 - contextlib costs start-up time
                os.close(fd)
            except OSError:
                pass
