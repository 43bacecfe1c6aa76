"""The job's log (Slurm's --output): the hook's own lines and sshd's, the latter capped.
Stdlib only, import-light (the hook's start path)."""

from __future__ import annotations

import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from islurm.sessionhooks import sshd


def say(message: str) -> None:
    """A line for the job's log (Slurm's --output)."""
    print(
        f"islurm-hook[{os.getpid()}] {time.strftime('%H:%M:%S')} {message}",
        file=sys.stderr,
        flush=True,
    )


MAX_SSHD_LOG = 1 << 20  # bytes of sshd's lines copied into the job's log in the home dir


class CappedLog:
    """sshd's lines into the job's log up to a budget (anyone on the cluster can make sshd
    log); past it they are counted, not written."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.written = 0
        self.dropped = 0

    def line(self, text: str) -> None:
        size = len(text) + 1
        if self.written + size > self.budget:
            if not self.dropped:
                say(f"sshd log past {self.budget} bytes: further lines are counted, not written")
            self.dropped += 1
            return
        self.written += size
        say(f"sshd: {text}")

    def close(self) -> None:
        if self.dropped:
            say(f"{self.dropped} sshd log line(s) dropped")
            self.dropped = 0


def _log_cap() -> int:
    """MAX_SSHD_LOG, or $ISLURM_SSHD_LOG_CAP (bytes) where the job's environment sets it."""
    try:
        return max(0, int(os.environ.get("ISLURM_SSHD_LOG_CAP", MAX_SSHD_LOG)))
    except ValueError:
        return MAX_SSHD_LOG


SSHD_LOG = CappedLog(_log_cap())


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        return


def fixed(deadline: float) -> Callable[[], float]:
    """A deadline for LineReader.lines that does not move."""
    return lambda: deadline


class LineReader:
    """sshd's stderr, line by line, each line into the job's log."""

    #: wake_on_signals()' read end, once the hook's signal handlers are installed
    signal_fd = -1

    def __init__(self, proc: sshd.Sshd, watch_exit: bool = False) -> None:
        self.fd = proc.stderr_fd
        self.buf = b""
        self.eof = False
        # sshd's children inherit its stderr: a connection it accepted (islurmd's spare, an
        # open session) keeps the pipe open after sshd itself died. With `watch_exit` its
        # exit ends the lines too (a pidfd is readable once the process has exited).
        self.exit_fd = -1
        if watch_exit:
            try:  # noqa: SIM105 - contextlib costs the hook's start-up time
                self.exit_fd = os.pidfd_open(proc.pid)
            except (OSError, AttributeError):  # Linux < 5.3: seen at EOF, as before
                pass

    def close(self) -> None:
        if self.exit_fd >= 0:
            os.close(self.exit_fd)
            self.exit_fd = -1

    def _rest(self) -> Iterator[str]:
        """The end: a last line without its newline, if any."""
        if self.buf:
            yield self.buf.decode("utf-8", "replace")
            self.buf = b""
        self.eof = True

    def lines(self, until: Callable[[], float]) -> Iterator[str]:
        """Lines until EOF (then `eof` is True) or the monotonic deadline `until()`, asked
        again before each wait: handling a line may bring the caller's next task forward."""
        self.eof = False
        fds = [fd for fd in (self.fd, self.signal_fd, self.exit_fd) if fd >= 0]
        while True:
            timeout = max(0.0, until() - time.monotonic())
            ready, _, _ = select.select(fds, [], [], timeout)
            if self.signal_fd in ready:
                _drain(self.signal_fd)  # the handler runs now, between two bytecodes
                ready.remove(self.signal_fd)
                if not ready:
                    continue
            if not ready:
                return
            if self.fd not in ready:
                # Only the pidfd: sshd exited while its children hold the pipe. What it
                # wrote is read: while the pipe has data, the branch below is taken first.
                yield from self._rest()
                return
            chunk = os.read(self.fd, 65536)
            if not chunk:
                yield from self._rest()
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace")
