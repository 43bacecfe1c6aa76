"""The shim's byte pump: stdin -> node socket and node socket -> stdout (docs/PROTOCOL.md §2).

One poll loop drives both directions. A side that is a pipe (ssh hands a ProxyCommand two
pipes) moves with zero-copy ``os.splice``; anything else (socketpairs, ttys, files) with a
plain read/write loop. Every transfer is non-blocking: a *blocking* splice from a socket into
a pipe holds the pipe's lock while it waits and hangs ssh (engineering notes, "The shim").

(The shim's errors and stderr writers: report.py; reaching the node's sshd: node.py.)
Over 300 lines on purpose: the poll loop and the two flows it drives share state on the hot
path, and splitting them would add a call per transfer.
Stdlib only and import-light (`_socket`, never `socket`): the shim starts on every ssh.
"""

import _socket
import errno
import os
import select
import stat
import time

from islurm.proxyshim.exits import EXIT_NODE, EXIT_OK
from islurm.proxyshim.report import report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Watcher(Protocol):
        """What the pump watches beside the bytes: the lease on islurmd (`rpc.Lease`)."""

        def fileno(self) -> int:
            """The fd to poll for input, -1 for none right now."""

        def deadline(self) -> float | None:
            """The `time.monotonic()` at which `tick` wants to run, if any."""

        def on_readable(self) -> int | None:
            """Handle input (tolerating none); an exit code ends the session."""

        def tick(self) -> None:
            """Timed work: reconnecting to the daemon."""


F_SETPIPE_SZ = 1031  # Linux fcntl; unprivileged callers may go up to /proc/sys/fs/pipe-max-size
PIPE_SIZE = 1 << 20
SPLICE_LEN = 1 << 20
PLAIN_BUF = 1 << 18
BUDGET = 16  # transfers per direction per poll round, so one busy direction cannot starve the other

_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


def is_pipe(fd: int) -> bool:
    """Whether `fd` is a pipe or FIFO, the only kind of stdio splice can move to a socket."""
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _grow_pipe(fd: int) -> None:
    import fcntl

    try:  # noqa: SIM105 - contextlib costs start-up time
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over the user's pipe quota or pipe-max-size: the default 64 KiB still works


class _End:
    """How the plain loop reads or writes one fd without blocking the other direction."""

    def __init__(self, fd: int, sock: "_socket.socket | None", flags: int, owned: bool) -> None:
        self.fd = fd
        self.sock = sock
        self.flags = flags  # MSG_DONTWAIT on a borrowed socket: its O_NONBLOCK is shared state
        self.owned = owned
        # A socket never blocks here; another fd (tty, file) may: one transfer per poll then.
        self.nonblocking = sock is not None

    def read(self, buf: memoryview) -> int:
        if self.sock is not None:
            return self.sock.recv_into(buf, 0, self.flags)
        return os.readv(self.fd, [buf])

    def write(self, data: memoryview) -> int:
        if self.sock is not None:
            return self.sock.send(data, self.flags)
        return os.write(self.fd, data)

    def release(self) -> None:
        if self.sock is not None and not self.owned:
            self.sock.detach()  # stdin/stdout stay open: they are not ours to close


def _stdio_end(fd: int) -> _End:
    if _is_socket(fd):
        return _End(fd, _socket.socket(fileno=fd), _socket.MSG_DONTWAIT, owned=False)
    return _End(fd, None, 0, owned=False)


class _Flow:
    """One direction: `src` to `dst`, by splice or by a buffered copy.

    `src_ready`/`dst_ready` say whether an attempt may succeed; false means "poll first". A
    splice that would block does not say which side is the cause, so `src_seen`/`dst_seen`
    keep fresh evidence from poll to pin it on the other side.
    """

    def __init__(self, src: _End, dst: _End, zero_copy: bool) -> None:
        self.src = src
        self.dst = dst
        self.zero_copy = zero_copy
        # Optimistic where a try cannot block; a tty must be polled first or a read would hang.
        self.src_ready = zero_copy or src.nonblocking
        self.dst_ready = zero_copy or dst.nonblocking
        self.src_seen = self.dst_seen = False
        self.done = False
        self.error: OSError | None = None
        self.failed_on_dst = False  # the error came from writing (stdout's reader gone, say)
        self.buf = memoryview(bytearray(0 if zero_copy else PLAIN_BUF))
        self.start = self.end = 0  # pending bytes of the copy loop: buf[start:end]

    def can_move(self) -> bool:
        if self.done:
            return False
        if self.zero_copy:
            return self.src_ready and self.dst_ready
        if self.start < self.end:
            return self.dst_ready
        return self.src_ready

    def interest(self, wanted: dict[int, int]) -> None:
        if self.done:
            return
        pending = self.start < self.end
        if not self.src_ready and (self.zero_copy or not pending):
            wanted[self.src.fd] = wanted.get(self.src.fd, 0) | select.POLLIN
        if not self.dst_ready and (self.zero_copy or pending):
            wanted[self.dst.fd] = wanted.get(self.dst.fd, 0) | select.POLLOUT

    def on_poll(self, fd: int, revents: int) -> None:
        if fd == self.src.fd and revents & _READABLE:
            self.src_ready = self.src_seen = True
        if fd == self.dst.fd and revents & _WRITABLE:
            self.dst_ready = self.dst_seen = True

    def step(self) -> bool:
        """Move bytes until a side would block, the stream ends or the budget is spent; say
        whether this direction is done."""
        for _ in range(BUDGET):
            if not self.can_move():
                break
            if self.zero_copy:
                self._splice()
            else:
                self._copy()
        return self.done

    def _fail(self, exc: OSError, on_dst: bool) -> None:
        self.error = exc
        self.failed_on_dst = on_dst
        self.done = True

    def _splice(self) -> None:
        try:
            n = os.splice(self.src.fd, self.dst.fd, SPLICE_LEN, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            if self.src_seen and not self.dst_seen:
                self.dst_ready = False  # the source has data: the destination is full
            elif self.dst_seen and not self.src_seen:
                self.src_ready = False  # the destination has room: the source is empty
            elif not self.src_seen:
                self.src_ready = False  # no evidence: an empty source is the usual cause
            else:
                self.src_ready = self.dst_ready = False  # both looked ready: ask poll again
            self.src_seen = self.dst_seen = False
            return
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS):
                # This kernel or filesystem cannot splice these fds: copy instead.
                self.zero_copy = False
                self.buf = memoryview(bytearray(PLAIN_BUF))
                return
            # Reading never raises EPIPE; a pipe end only ever fails that way.
            self._fail(exc, on_dst=exc.errno == errno.EPIPE)
            return
        self.src_seen = self.dst_seen = False
        if n == 0:
            self.done = True  # end of stream
        elif n < SPLICE_LEN:
            self.src_ready = False  # probably drained; poll says so at once if not

    def _copy(self) -> None:
        if self.start < self.end:
            n = self._transfer(self.dst.write, self.buf[self.start : self.end], to_dst=True)
            if n is None:
                return
            self.start += n
            if not self.dst.nonblocking:
                self.dst_ready = False
            return
        n = self._transfer(self.src.read, self.buf, to_dst=False)
        if n is None:
            return
        if n == 0:
            self.done = True  # end of stream; nothing was pending
            return
        self.start, self.end = 0, n
        if not self.src.nonblocking:
            self.src_ready = False

    def _transfer(
        self, op: "Callable[[memoryview], int]", buf: memoryview, to_dst: bool
    ) -> int | None:
        """One non-blocking read or write: its count; None when it would block or failed."""
        try:
            return op(buf)
        except BlockingIOError:
            if to_dst:
                self.dst_ready = False
            else:
                self.src_ready = False
            return None
        except OSError as exc:
            self._fail(exc, on_dst=to_dst)
            return None


class Pump:
    """Moves bytes between stdin/stdout and the node socket until the node closes the stream."""

    def __init__(self, node: _socket.socket, stdin: int = 0, stdout: int = 1) -> None:
        node.setblocking(False)
        self.node = node
        self._poller = select.poll()
        self._registered: dict[int, int] = {}
        node_end = _End(node.fileno(), node, 0, owned=True)
        up_pipe, down_pipe = is_pipe(stdin), is_pipe(stdout)
        for fd, pipe in ((stdin, up_pipe), (stdout, down_pipe)):
            if pipe:
                _grow_pipe(fd)
        self._stdio = [
            _End(stdin, None, 0, owned=False) if up_pipe else _stdio_end(stdin),
            _End(stdout, None, 0, owned=False) if down_pipe else _stdio_end(stdout),
        ]
        self.up = _Flow(self._stdio[0], node_end, zero_copy=up_pipe)
        self.down = _Flow(node_end, self._stdio[1], zero_copy=down_pipe)
        self._half_closed = False

    @property
    def stdin_open(self) -> bool:
        """Whether ssh had still not closed our stdin when the pump stopped."""
        return not self._half_closed

    def modes(self) -> tuple[str, str]:
        """How stdin -> node and node -> stdout move: "splice" or "copy"."""
        return (
            "splice" if self.up.zero_copy else "copy",
            "splice" if self.down.zero_copy else "copy",
        )

    def run(self, watcher: "Watcher | None" = None) -> int:
        """Pump until the node closes the stream or stdout's reader goes (0), the connection to
        the node fails (5), or `watcher` returns an exit code (the job ended: 6)."""
        try:
            return self._loop(watcher)
        finally:
            for end in self._stdio:
                end.release()

    def _loop(self, watcher: "Watcher | None") -> int:
        if watcher is not None:
            ok, code = _call(watcher.on_readable)  # lines that came with session.ready
            if code is not None:
                return code
            if not ok:
                watcher = None
        while True:
            if not self.up.done and self.up.step():
                self._stdin_ended()
            if self.down.step():
                return self._down_result()
            wanted: dict[int, int] = {}
            self.up.interest(wanted)
            self.down.interest(wanted)
            wfd = -1
            timeout = -1
            if watcher is not None:
                wfd = watcher.fileno()
                if wfd >= 0:
                    wanted[wfd] = wanted.get(wfd, 0) | select.POLLIN
                due = watcher.deadline()
                if due is not None:
                    timeout = max(0, int((due - time.monotonic()) * 1000) + 1)
            if self.up.can_move() or self.down.can_move():
                timeout = 0
            self._sync(wanted)
            for fd, revents in self._poller.poll(timeout):
                if fd == wfd and watcher is not None:
                    ok, code = _call(watcher.on_readable)
                    if code is not None:
                        return code
                    if not ok:
                        watcher = None
                    continue
                self.up.on_poll(fd, revents)
                self.down.on_poll(fd, revents)
            if watcher is not None:
                due = watcher.deadline()
                if due is not None and time.monotonic() >= due:
                    ok, _ = _call(watcher.tick)
                    if not ok:
                        watcher = None

    def _stdin_ended(self) -> None:
        if self._half_closed:
            return
        self._half_closed = True
        try:  # noqa: SIM105 - contextlib costs start-up time
            self.node.shutdown(_socket.SHUT_WR)  # the node's sshd sees EOF and can still answer
        except OSError:
            pass

    def _down_result(self) -> int:
        exc = self.down.error
        if exc is None or self.down.failed_on_dst:
            return EXIT_OK  # the node closed the stream, or stdout's reader (ssh) went away
        report(f"connection to the node lost: {exc.strerror or exc}")
        return EXIT_NODE

    def _sync(self, wanted: dict[int, int]) -> None:
        current = self._registered
        if wanted == current:
            return
        for fd, mask in wanted.items():
            old = current.get(fd)
            if old is None:
                self._poller.register(fd, mask)
            elif old != mask:
                self._poller.modify(fd, mask)
        for fd in current.keys() - wanted.keys():
            self._poller.unregister(fd)
        self._registered = wanted


def _call(action: "Callable[[], int | None]") -> tuple[bool, int | None]:
    # The byte stream must outlive any trouble with the daemon, bugs in the watcher included.
    try:
        return True, action()
    except Exception as exc:
        report(f"lease watcher failed; the session goes on without it: {exc!r}")
        return False, None
