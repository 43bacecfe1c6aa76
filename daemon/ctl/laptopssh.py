"""The one interface to the OpenSSH client on the laptop: commands on the login node, `ssh -G`,
`ssh-keygen`, and a connect through an islurm host. Remote commands are argv lists; ssh joins
them for the remote shell, so each word is quoted here (sh syntax: bash, zsh, dash)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from islurm.config.sshsetup import Target


class SshError(Exception):
    """An ssh command failed; carries the argv, exit code and stderr."""

    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        self.argv, self.code, self.stderr = argv, code, stderr.strip()
        last = self.stderr.splitlines()[-1] if self.stderr else "(no message)"
        # The remote command may be a whole program (remote_agent): name its first words only.
        shown = " ".join(w if len(w) < 60 else w[:20] + "..." for w in argv)[:200]
        super().__init__(f"`{shown}` exited {code}: {last}")


def remote_words(argv: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in argv)


@dataclass(frozen=True)
class Login:
    """ssh to the login node with the user's own settings for it, plus our key when given."""

    target: Target
    key: Path | None = None
    interactive: bool = False  # may ssh ask (a password, a host key) on the terminal?

    def argv(self, remote: list[str], tty: bool = False) -> list[str]:
        argv = ["ssh", "-t" if tty else "-T"]
        if not self.interactive:
            argv += ["-o", "BatchMode=yes"]
        if self.key is not None:
            argv += ["-i", str(self.key)]
        return [*argv, self.target.destination, remote_words(remote)]

    def run(
        self, remote: list[str], data: bytes | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[bytes]:
        """Run and capture stdout; stderr goes to ours when a person may need to answer ssh,
        else it is captured for the error."""
        argv = self.argv(remote)
        r = subprocess.run(
            argv,
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if self.interactive else subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
        if r.returncode != 0:
            raise SshError(argv, r.returncode, (r.stderr or b"").decode(errors="replace"))
        return r

    def json(self, remote: list[str], data: bytes | None = None) -> Any:
        out = self.run(remote, data).stdout.decode(errors="replace").strip().splitlines()
        try:
            return json.loads(out[-1])
        except (IndexError, ValueError):
            raise SshError(self.argv(remote), 0, f"not JSON: {out[-3:]!r}") from None

    def passthrough(self, remote: list[str], tty: bool = False) -> int:
        """Run with our stdin, stdout and stderr: its output is the command's output here."""
        return subprocess.run(self.argv(remote, tty), check=False).returncode


def resolve(host: str) -> str:
    """`ssh -G HOST`: the options ssh would use, after every config file."""
    argv = ["ssh", "-G", host]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        raise SshError(argv, r.returncode, r.stderr)
    return r.stdout


#: what the laptop route's ssh must do (proxyshim/via.py): ProxyUseFdpass and a SOCKS
#: listener on a Unix socket; `ssh -G` names an option it does not know
PROBE_SOCKET = "/nonexistent/islurm/socks"


def direct_route(login: str) -> tuple[str, ...]:
    """The laptop's shim command for the route where the login node's sshd opens the
    connection to the job (no relay on the login node), if this laptop's ssh can take it;
    () where it cannot (Windows' OpenSSH has no ProxyUseFdpass): the login node relays."""
    if os.name == "nt":
        return ()
    argv = ["ssh", "-G", "-o", "ProxyUseFdpass=yes", "-D", PROBE_SOCKET, login]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0 or f"dynamicforward {PROBE_SOCKET}" not in r.stdout.splitlines():
        return ()
    from islurm.config.installs import shim_command

    return shim_command()


def keygen(path: Path, comment: str) -> None:
    """A new ed25519 key without a passphrase (ssh-keygen writes it 0600)."""
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise SshError(argv, r.returncode, r.stderr)


def connect(host: str, timeout: float) -> tuple[str, float]:
    """`ssh HOST hostname` as the user will: its stderr (islurm's progress while the job
    waits in the queue) shown as it comes. The node's name and the seconds it took."""
    argv = ["ssh", "-T", "-o", "BatchMode=yes", host, "hostname"]
    t0 = time.monotonic()
    r = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,
        timeout=timeout,
        check=False,
    )
    if r.returncode != 0:
        raise SshError(argv, r.returncode, "see the messages above")
    return r.stdout.decode(errors="replace").strip(), time.monotonic() - t0
