"""The one interface to OpenSSH on the compute node: ssh-keygen and the job's sshd.

(The user's CA lives on the login node only: daemon/sshca.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


class SshdError(RuntimeError):
    pass


def find_sshd() -> str:
    for path in (os.environ.get("ISLURM_SSHD", ""), *SSHD_CANDIDATES, shutil.which("sshd") or ""):
        if path and os.access(path, os.X_OK):
            return path
    raise SshdError("no sshd binary found (install openssh-server on the compute nodes)")


def generate_host_key(path: str, comment: str) -> str:
    """A fresh ed25519 host key at `path` (0600); returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub", encoding="ascii") as f:
        return f.read().strip()


def run(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SshdError(f"{argv[0]} failed: {exc}") from None
    if proc.returncode != 0:
        raise SshdError(f"{' '.join(argv[:2])} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _config_value(value: str) -> str:
    """Quote a value for sshd_config (double quotes; sshd has no escape for a quote inside)."""
    if any(c in value for c in '"\n\r\x00'):
        raise ValueError(f"cannot put {value!r} in sshd_config")
    return f'"{value}"' if (not value or any(c in value for c in " \t#")) else value


@dataclass(frozen=True)
class SshdConfig:
    port: int
    host_key: str
    user: str
    host_cert: str | None = None
    env: Mapping[str, str] | None = None

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
            f"AllowUsers {self.user}",
            "StrictModes yes",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "X11Forwarding no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "PermitTunnel no",
            "PrintMotd no",
            "PrintLastLog no",
            "ClientAliveInterval 60",
            # VS Code and parallel tools open many connections at once; the default 10:30:100
            # would drop some of them before they authenticate.
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "LogLevel INFO",
            "Subsystem sftp internal-sftp",
        ]
        if self.host_cert:
            lines.append(f"HostCertificate {_config_value(self.host_cert)}")
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


def start(sshd: str, config_path: str) -> subprocess.Popen[bytes]:
    """sshd in the foreground (-D), logging to stderr (-e), which the hook reads for readiness."""
    return subprocess.Popen(
        [sshd, "-D", "-e", "-f", config_path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
