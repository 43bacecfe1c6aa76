"""The one interface every container runtime adapter implements, and what they share.

A job runs ONE container, started by the session hook before sshd and removed when the job
ends; every ssh session enters it (`exec_argv`) through the ForceCommand wrapper (enter.py).
Stdlib only: this runs inside the job with whatever Python the login node's install has."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from islurm.sessionhooks.container.errors import ContainerError as ContainerError


@dataclass(frozen=True)
class ContainerSpec:
    """What the job's container is made of. Paths are host paths."""

    job_id: str
    image: str
    uid: int
    gid: int
    home: str
    workdir: str  # node-local 0700 dir for the runtime's state; removed when the job ends
    env: Mapping[str, str] = field(default_factory=dict)  # the job's SLURM_* and GPU vars
    binds: tuple[str, ...] = ()  # host dirs mounted at the same path (home is always)

    @property
    def name(self) -> str:
        return f"islurm-job-{self.job_id}"

    def bind_paths(self) -> list[str]:
        """Home first, then the configured binds that exist here, each once."""
        out: list[str] = []
        for path in (self.home, *self.binds):
            if path and path not in out and os.path.isdir(path):
                out.append(path)
        return out


#: Per-session variables the wrapper hands into the container (set by sshd for the session).
SESSION_VARS = (
    "TERM",
    "LANG",
    "LC_ALL",
    "SSH_CONNECTION",
    "SSH_CLIENT",
    "SSH_TTY",
    "SSH_AUTH_SOCK",
    "DISPLAY",
    "COLORTERM",
)


class Runtime(Protocol):
    """One container runtime. `prepare` and `start` run once per job, `exec_argv` is the argv
    prefix of every session (the command follows it), `stop` removes container and state."""

    name: str

    def binary(self) -> str:
        """The runtime's executable; ContainerError if it is not installed."""
        ...

    def prepare(self) -> None: ...

    def start(self) -> None: ...

    def exec_argv(self, tty: bool) -> list[str]: ...

    def environment(self) -> dict[str, str]:
        """Variables the runtime needs in the environment of every command it is run with."""
        ...

    def stop(self) -> None: ...


def find_binary(names: Sequence[str], what: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ContainerError(f"{what} is not installed on this node (looked for {', '.join(names)})")


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    """Run one runtime command; a failure carries the argv, exit code and stderr."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=full_env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ContainerError(f"{' '.join(argv[:3])} failed: {exc}") from None
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-3:]
        raise ContainerError(
            f"{' '.join(argv[:3])} exited {proc.returncode}: {' / '.join(err) or '(no output)'}"
        )
    return proc.stdout
