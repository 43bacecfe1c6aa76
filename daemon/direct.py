"""Sessions handed to ssh (ProxyUseFdpass): no relay carries their bytes, so their lease is held
by the ssh process itself, and the user is told on ssh's stderr why the job ended under it.

At `session.acquire` with ``fdpass`` the shim is alive and its parent is the ssh that runs it
(ssh execs the ProxyCommand): a pidfd pins that ssh (no pid-reuse race: the parent is read
again after the pidfd is open), and ssh's stderr (the shim's fd 2) is kept if it is a terminal.
When the shim says `session.handed` and exits, the lease stays bound to the job until the pidfd
says ssh exited: idle reaping never cancels a job someone is connected to, and no process of
ours stays in the byte path."""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import trio

from islurm.config.text import terminal_safe

log = structlog.get_logger("islurm.sessions")


ERR_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC


class NoClient(Exception):
    """The shim's ssh cannot be pinned (the shim left, or its parent is not the user's)."""


@dataclass(eq=False)
class SshClient:
    """The ssh process a handed-over session belongs to."""

    pid: int
    pidfd: int
    errfd: int | None  # ssh's stderr when it is a terminal (else reopened while ssh runs)
    start: str = ""  # its start time (/proc/PID/stat), which a restarted islurmd checks

    def close(self) -> None:
        for fd in (self.pidfd, self.errfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.errfd = None
        self.pidfd = -1

    async def exited(self) -> None:
        """Return when the ssh process has exited (its pidfd turns readable)."""
        await trio.lowlevel.wait_readable(self.pidfd)

    def running(self) -> bool:
        """Whether that ssh still runs (its pidfd is not readable yet)."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return not poller.poll(0)

    def tell(self, message: str) -> None:
        """One line on ssh's stderr, never blocking. A terminal is kept from the start (the
        line may come after ssh left; the terminal may be raw or cooked: CR LF); anything else
        (an editor's pipe) is reached only while ssh still runs, so that its reader's EOF is
        never held back by us."""
        fd, opened = self.errfd, False
        if fd is None:
            if not self.running():
                return
            try:
                fd, opened = os.open(f"/proc/{self.pid}/fd/2", ERR_FLAGS), True
            except OSError:
                return
        try:
            if opened and not self.running():
                return  # the pid may name another process by now
            end = "\r\n" if os.isatty(fd) else "\n"
            os.write(fd, ("islurm: " + terminal_safe(message) + end).encode("utf-8", "replace"))
        except OSError as exc:
            log.debug("direct.tell_failed", pid=self.pid, error=str(exc))
        finally:
            if opened:
                os.close(fd)


def _parent(pid: int, proc: str) -> tuple[int, int]:
    """(parent pid, owner uid) of `pid`, from /proc."""
    with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["PPid"].split()[0]), int(fields["Uid"].split()[0])


def client_of(shim_pid: int, proc: str = "/proc") -> SshClient:
    """Pin the parent of the (live, same-user) shim `shim_pid`: its ssh."""
    try:
        ppid, _ = _parent(shim_pid, proc)
        if ppid <= 1:
            raise NoClient(f"the shim (pid {shim_pid}) has no parent to hold the session")
        pidfd = os.pidfd_open(ppid)
    except (OSError, KeyError, ValueError) as exc:
        raise NoClient(f"cannot find the ssh of pid {shim_pid}: {exc}") from None
    try:
        again, _ = _parent(shim_pid, proc)  # still our shim's parent: the pidfd is that ssh
        _, owner = _parent(ppid, proc)
    except (OSError, KeyError, ValueError) as exc:
        os.close(pidfd)
        raise NoClient(f"the shim (pid {shim_pid}) or its ssh left: {exc}") from None
    if again != ppid or owner != os.getuid():
        os.close(pidfd)
        raise NoClient(f"the parent of pid {shim_pid} changed or is another user's")
    return SshClient(
        pid=ppid,
        pidfd=pidfd,
        errfd=_terminal(f"{proc}/{shim_pid}/fd/2"),
        start=_start_time(ppid, proc),
    )


def _terminal(path: str) -> int | None:
    """The stderr at `path` opened for writing if it is a terminal (a pipe's reader would wait
    for our end to close: it is reopened only to say something while ssh runs)."""
    try:
        fd = os.open(path, ERR_FLAGS)
    except OSError:
        return None  # a socket or a closed stderr: the session ends without our word
    if not os.isatty(fd):
        os.close(fd)
        return None
    return fd


def comm(pid: int, proc: str = "/proc") -> str:
    """The process's name (/proc/PID/comm); "" if it is gone."""
    try:
        with open(f"{proc}/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int, proc: str = "/proc") -> str:
    """Field 22 of /proc/PID/stat (after the parenthesised name, which may hold spaces)."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def repin(pid: int, start: str, proc: str = "/proc") -> SshClient | None:
    """A restarted islurmd takes back the ssh a session was handed to, if it is still that
    process (same start time) and ours; None otherwise."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    client = SshClient(pid=pid, pidfd=pidfd, errfd=None, start=start)
    try:
        _, owner = _parent(pid, proc)
        same = bool(start) and _start_time(pid, proc) == start and owner == os.getuid()
    except (OSError, KeyError, ValueError):
        same = False
    if not same or not client.running():
        client.close()
        return None
    client.errfd = _terminal(f"{proc}/{pid}/fd/2")
    return client


#: after ssh left with the job's record still standing: how long the hook may take to remove
#: it on TERM (its first act) before the exit counts as the user's own logout
RECORD_LAG = 1.0
RECORD_CHECKS = 10
#: after the record vanished: how long to wait for Slurm to say the job ended
END_WAIT = 6.0


async def hold(
    client: SshClient,
    live: Callable[[], bool],
    changed: Callable[[], Awaitable[None]],
    stands: Callable[[], bool],
    kick: Callable[[], None],
) -> bool:
    """Hold until ssh exits or the job ends; True when the job ended under the session (then
    the caller tells ssh's stderr why), False after a plain logout.

    `live`/`changed`: the job still runs / wait for its next change; `stands`: its readiness
    record is still the one the session used (the hook removes it first thing on TERM); `kick`:
    ask Slurm now (once, when the record vanished; never on a plain logout)."""
    ssh_left = False
    async with trio.open_nursery() as nursery:

        async def watch_ssh() -> None:
            nonlocal ssh_left
            await client.exited()
            ssh_left = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_ssh)
        while live():
            await changed()
        nursery.cancel_scope.cancel()
    if not ssh_left or not live():
        return not live()
    if client.errfd is None:
        return False  # ssh left and no terminal of its stays to be told: a Slurm call saved
    # ssh left while the job looked alive: the user logged out, or the node hung up because
    # the job is ending (then its record goes within moments).
    for _ in range(RECORD_CHECKS):  # a file the hook removes: no event to wait on
        if not stands():
            break
        await trio.sleep(RECORD_LAG / RECORD_CHECKS)
    if stands():
        return False
    kick()
    with trio.move_on_after(END_WAIT):
        while live():
            await changed()
    return not live()
