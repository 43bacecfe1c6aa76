"""islurm-proxy --via: the laptop's shortcut for a warm connect (the last step of hop.py).

After a full route (via.py) the laptop remembers the job and the endpoint it reached, per
login node and route: one small file in the cache dir (0600, in a dir of our own, 0700).
The next connect opens that endpoint as `ssh -J LOGIN` opens one, `ssh -W HOST:PORT LOGIN`,
on one end of a socketpair. Once the job's sshd banner has come through it and names the
remembered job (config/jobbanner.py), the other end goes to our ssh (ProxyUseFdpass) and we
exit; the `ssh -W` stays and carries the session, as ProxyJump's does. Nothing is asked of the
login node: no islurm process starts there and islurmd is not woken. The job holds itself:
it counts its own ssh sessions, which idle reaping reads for a job a laptop route reached
(daemon/handed.py marks it, daemon/watcher.py reads it).

An endpoint that gives no such banner (the job ended: its port is closed, or another job's
sshd took it) is forgotten and the full route taken in the same connect. What proves the
endpoint is, as on every route, ssh's check of the host certificate. A route is taken for
ROUTE_TTL after the full route found it, then the full route asks islurmd again: so a stranger
who took an ended job's port and copied its banner can fail our connects (ssh refuses the host
key) for that long at most.

Stdlib only, import-light (`_socket`, os.posix_spawnp; no `subprocess`, `socket`, `zlib`)."""

import _socket
import os
import select
import time

from islurm.config import jobbanner
from islurm.proxyshim.exits import EXIT_DAEMON
from islurm.proxyshim.report import ShimError

MAGIC = b"islurm-route 1"
MAX_FILE = 4096
BANNER_MAX = 255  # an SSH banner line, CR LF included (RFC 4253 4.2)
BANNER_WAIT = 10.0  # seconds for the banner through ssh -W (ssh to the login node included)
ROUTE_TTL = 3600.0  # seconds a route is taken after the full route found it (its file's mtime)


class Remembered:
    """Where a route's job was reached: job `job_id`'s sshd at host:port."""

    def __init__(self, job_id: str, host: str, port: int) -> None:
        self.job_id = job_id
        self.host = host
        self.port = port


def key(dest: str, command: str, ssh_config: str | None) -> str:
    """What names a route: the login node as ssh names it, the ssh config used for it and the
    login node's command (profile, image and timeout are in it)."""
    return "\t".join((dest, ssh_config or "", command))


def directory() -> str:
    from islurm.config import paths

    return os.path.join(paths.cache_dir(), "routes")


def _file(route: str) -> str:
    # A checksum names the file (FNV-1a, 64 bits: `zlib` or `hashlib` would cost start-up
    # time); the file holds the whole key, checked on reading.
    h = 0xCBF29CE484222325
    for byte in route.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(directory(), f"{h:016x}")


def _private(st: os.stat_result, mode: int) -> bool:
    return st.st_uid == os.getuid() and st.st_mode & 0o170000 == mode and not st.st_mode & 0o077


def recall(route: str) -> Remembered | None:
    """The remembered endpoint of `route`; None if there is none, none we can trust to be
    ours (a file or dir someone else owns or can write is ignored), or one older than
    ROUTE_TTL."""
    try:
        if not _private(os.lstat(directory()), 0o040000):
            return None
        fd = os.open(_file(route), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _private(st, 0o100000) or not 0 <= time.time() - st.st_mtime <= ROUTE_TTL:
            return None  # not ours, or time to ask islurmd again (from the future: likewise)
        data = os.read(fd, MAX_FILE)
    except OSError:
        return None
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if len(lines) < 3 or lines[0] != MAGIC or lines[1] != route.encode():
        return None
    words = lines[2].split()
    if len(words) != 3 or not words[0].isdigit() or not words[2].isdigit():
        return None
    port = int(words[2])
    if not 0 < port < 65536 or not 0 < len(words[1]) <= 255:
        return None
    try:
        return Remembered(words[0].decode("ascii"), words[1].decode("ascii"), port)
    except UnicodeDecodeError:
        return None


def remember(route: str, found: Remembered) -> str | None:
    """Keep `found` for the next connect of `route`; the reason when it cannot be kept."""
    if "\n" in route or not found.job_id.isdigit():
        return "the route's name cannot be kept"
    from islurm.config import paths
    from islurm.config.files import write_text_atomic

    text = f"{MAGIC.decode()}\n{route}\n{found.job_id} {found.host} {found.port}\n"
    try:
        paths.ensure_private_dir(directory())
        # Not durable: a crash loses it, and the next connect takes the full route.
        write_text_atomic(_file(route), text, mode=0o600, durable=False)
    except OSError as exc:
        return f"{exc.strerror or exc}"
    return None


def forget(route: str) -> None:
    try:  # noqa: SIM105 - contextlib costs start-up time
        os.unlink(_file(route))
    except OSError:
        pass


def forget_all() -> int:
    """Forget every remembered route (for `islurmctl setup`, which may change what the login
    node gives, and `uninstall`), and the cache dir if nothing else is in it. How many there
    were."""
    routes = directory()
    try:
        if not _private(os.lstat(routes), 0o040000):
            return 0  # not ours to empty (setup's ensure_private_dir would have said so)
        names = os.listdir(routes)
    except FileNotFoundError:
        return 0
    for name in names:
        try:  # noqa: SIM105 - contextlib costs start-up time
            os.unlink(os.path.join(routes, name))
        except FileNotFoundError:
            pass
    for d in (routes, os.path.dirname(routes)):
        try:
            os.rmdir(d)
        except OSError:  # not empty: images cached on a login node, say
            break
    return len(names)


class Shortcut:
    """`ssh -W HOST:PORT LOGIN` on a socketpair: our end is `sock`, ssh has the other."""

    def __init__(self, options: list[str], dest: str, found: Remembered) -> None:
        host = f"[{found.host}]" if ":" in found.host else found.host
        argv = ["ssh", *options, "-W", f"{host}:{found.port}", dest]
        self.sock, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        spawn = os.POSIX_SPAWN_DUP2
        try:
            self.pid = os.posix_spawnp(
                argv[0],
                argv,
                os.environ,
                file_actions=[(spawn, theirs.fileno(), 0), (spawn, theirs.fileno(), 1)],
            )
        except OSError as exc:
            self.pid = 0
            self.sock.close()
            raise ShimError(EXIT_DAEMON, f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        finally:
            theirs.close()

    def banner_names(self, job_id: str, timeout: float = BANNER_WAIT) -> bool:
        """Wait for the job's sshd banner to come through (it stays queued for ssh) and tell
        whether it names job `job_id`. False when ssh ends first (the login node could not
        connect: the port is closed) or nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(left * 1000) + 1):
                return False
            try:
                head = self.sock.recv(BANNER_MAX, _socket.MSG_PEEK)
            except OSError:
                return False
            if not head:
                return False
            if b"\n" in head or len(head) >= BANNER_MAX:
                return jobbanner.names(head, job_id)
            time.sleep(0.001)  # part of the line: the rest is on its way

    def stop(self) -> None:
        """The shortcut is not taken: end our ssh (by pid), reap it, close our end."""
        if self.pid:
            try:
                os.kill(self.pid, 15)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.pid = 0
        self.sock.close()
