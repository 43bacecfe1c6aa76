"""The one interface to OpenSSH on the compute node: ssh-keygen and the job's sshd.

(The user's CA lives on the login node only: daemon/sshca.py.) Its start-up path imports
neither `subprocess` nor `dataclasses` (15 ms of every job start): sshd is started with
posix_spawn; ssh-keygen and `sshd -t`, which a job start rarely needs, load subprocess then."""

from __future__ import annotations

import os
import time

from islurm.config import jsonlite
from islurm.config.files import write_text_atomic
from islurm.config.sshwords import config_word

TYPE_CHECKING = False  # `typing` and `collections.abc` are not loaded at a job's start
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Mapping, Sequence
else:  # the C module: `signal` loads `enum` (no stubs for _signal)
    import _signal

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class SshdError(RuntimeError):
    pass


def find_sshd() -> str:
    for path in (os.environ.get("ISLURM_SSHD", ""), *SSHD_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    import shutil

    path = shutil.which("sshd") or ""
    if path and os.access(path, os.X_OK):
        return path
    raise SshdError("no sshd binary found (install openssh-server on the compute nodes)")


def generate_host_key(path: str, comment: str) -> str:
    """A fresh ed25519 host key at `path` (0600); returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub", encoding="ascii") as f:
        return f.read().strip()


def run(argv: Sequence[str]) -> str:
    import subprocess

    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SshdError(f"{argv[0]} failed: {exc}") from None
    if proc.returncode != 0:
        raise SshdError(f"{' '.join(argv[:2])} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _config_value(value: str) -> str:
    """A value for sshd_config: sshd splits its lines as ssh does (misc.c argv_split, OpenSSH
    >= 8.7), and expands no tokens in the keywords we write with it."""
    return config_word(value, expands=False)


# -- what this sshd understands ------------------------------------------------------------------

#: OpenSSH >= 9.8: slow down sources that fail to authenticate. The login node, where every
#: legitimate connection comes from, must be exempted by the caller (the daemon's banner probe
#: counts as a connection that never authenticated).
PER_SOURCE_PENALTIES = "PerSourcePenalties authfail:5s noauth:1s grace-exceeded:20s"
_FEATURES_FILE = "sshd-features.json"


def per_source_penalties_supported(binary: str, cache_dir: str) -> bool:
    """Whether `binary` accepts PerSourcePenalties. Asked once per sshd build (`sshd -t` on a
    one-line config: an unknown keyword is reported while parsing, before host keys or the
    privilege separation directory are looked at), then answered from a small cache file in
    `cache_dir` keyed by the binary's path, size and mtime: no process at later job starts."""
    try:
        st = os.stat(binary)
    except OSError:
        return False
    key = f"{os.path.realpath(binary)}|{st.st_size}|{st.st_mtime_ns}"
    cache = os.path.join(cache_dir, _FEATURES_FILE)
    try:
        with open(cache, encoding="utf-8") as f:
            known = jsonlite.loads(f.read())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), bool):
        return bool(known[key])
    supported = _probe_keyword(binary, PER_SOURCE_PENALTIES)
    known[key] = supported
    import contextlib  # here, not at the top: this runs once per sshd build, not per job

    # Unwritable: asked again at the next job start; never a reason to fail this one.
    with contextlib.suppress(OSError):
        write_text_atomic(cache, jsonlite.dumps(known, sort_keys=True) + "\n", mode=0o600)
    return supported


def _probe_keyword(binary: str, line: str) -> bool:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sshd_config", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        try:
            proc = subprocess.run(
                [binary, "-t", "-f", f.name], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    err = proc.stderr.lower()
    return "bad configuration option" not in err and "unsupported option" not in err


class SshdConfig:
    """What the job's sshd_config says. A plain class: `dataclasses` costs 10 ms a job start."""

    def __init__(
        self,
        port: int,
        host_key: str,
        user: str,
        host_cert: str | None = None,
        env: Mapping[str, str] | None = None,
        per_source_penalties: bool = False,  # per_source_penalties_supported(binary, ...)
        penalty_exempt: tuple[str, ...] = (),  # addresses/CIDRs of the login nodes
        force_command: str | None = None,  # the container wrapper every session goes through
        banner_tag: str | None = None,  # config/jobbanner.py: names the job in the SSH banner
    ) -> None:
        self.port = port
        self.host_key = host_key
        self.user = user
        self.host_cert = host_cert
        self.env = env
        self.per_source_penalties = per_source_penalties
        self.penalty_exempt = penalty_exempt
        self.force_command = force_command
        self.banner_tag = banner_tag

    def with_port(self, port: int) -> SshdConfig:
        """The same config listening on `port`."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, port=port)
        return other

    def render(self) -> str:
        lines = [
            "# islurm per-job sshd: this user only, public keys only.",
            f"Port {self.port}",
            "ListenAddress 0.0.0.0",
            f"HostKey {_config_value(self.host_key)}",
            "PidFile none",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "AuthenticationMethods publickey",
            "PermitRootLogin no",
            f"AllowUsers {_config_value(self.user)}",
            "StrictModes yes",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "PermitTunnel no",
            "PrintMotd no",
            "PrintLastLog no",
            "ClientAliveInterval 60",
            # The port is open to the whole cluster before authentication: an unauthenticated
            # connection may hold an sshd (charged to this job) for 20 s, not the default 120.
            "LoginGraceTime 20",
            # VS Code and parallel tools open many connections at once (32 in the e2e tests);
            # the default 10:30:100 would drop some of them before they authenticate.
            "MaxStartups 64:30:128",
            "MaxSessions 100",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        if self.force_command:
            # Shells, commands, sftp (SSH_ORIGINAL_COMMAND=internal-sftp) all enter the job's
            # container; forwarding needs no command and uses the host network it shares.
            lines.append(f"ForceCommand {_config_value(self.force_command)}")
        if self.host_cert:
            lines.append(f"HostCertificate {_config_value(self.host_cert)}")
        if self.banner_tag:
            lines.append(f"VersionAddendum {_config_value(self.banner_tag)}")
        if self.per_source_penalties:
            lines.append(PER_SOURCE_PENALTIES)
            if self.penalty_exempt:
                exempt = ",".join(self.penalty_exempt)
                lines.append(f"PerSourcePenaltyExemptList {_config_value(exempt)}")
        pairs = []
        for key, value in sorted((self.env or {}).items()):
            try:
                pairs.append(_config_value(f"{key}={value}"))
            except ValueError:
                continue  # a value sshd_config cannot carry is left out, not mangled
        if pairs:
            # sshd uses only the first SetEnv line: every variable goes on that one line.
            lines.append("SetEnv " + " ".join(pairs))
        return "\n".join(lines) + "\n"


#: sshd's exit code when its status was lost (it was reaped, but the code was not kept)
LOST = -255


class Sshd:
    """The job's sshd process: its pid, its stderr (a pipe the hook reads), and the few
    things subprocess.Popen would do for it."""

    def __init__(self, pid: int, stderr_fd: int) -> None:
        self.pid = pid
        self.stderr_fd = stderr_fd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self._lost()
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; TimeoutError if it still runs after `timeout` seconds."""
        if timeout is None:
            while self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    return self._lost()
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"sshd (pid {self.pid}) still runs after {timeout} s")
            time.sleep(0.01)
        return code

    def _lost(self) -> int:
        """sshd was reaped and its status lost: a signal's Stop raised as waitpid returned,
        before the status was kept. It has exited; its pid is never signalled again."""
        self.returncode = LOST
        return LOST

    def stop(self, grace: float = 3) -> None:
        """TERM, up to `grace` seconds, then KILL."""
        if self.poll() is None:
            self.terminate()
            try:
                self.wait(timeout=grace)
            except TimeoutError:
                self.kill()
                self.wait()

    def _signal(self, signum: int) -> None:
        if self.poll() is None:  # never signal a pid that was reaped (it may be reused)
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._signal(_signal.SIGTERM)

    def kill(self) -> None:
        self._signal(_signal.SIGKILL)


def start(sshd: str, config_path: str) -> Sshd:
    """sshd in the foreground (-D), logging to stderr (-e), which the hook reads for readiness.
    Its stdin and stdout are /dev/null; sshd closes every other descriptor it inherits."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            sshd,
            [sshd, "-D", "-e", "-f", config_path],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_end, 2),
            ],
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return Sshd(pid, read_end)
