"""The one interface to git: list a remote's tags, fetch one tag's tree. Time-boxed, argv
lists, never a prompt; errors carry argv, exit code and output."""

from __future__ import annotations

import os
import subprocess

from islurm.daemon.update import command
from islurm.daemon.update.command import CommandError
from islurm.daemon.update.versions import parse_ls_remote

NETWORK_TIMEOUT = 10.0  # seconds of network per git call: a check never hangs on a remote


class GitError(CommandError):
    def __init__(self, argv: list[str], message: str, code: int | None = None) -> None:
        super().__init__(argv, f"{' '.join(argv[:3])}…: {message}", code)


def _last_line(r: subprocess.CompletedProcess[str]) -> str:
    tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"exit {r.returncode}: {tail}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false", LC_ALL="C")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=5")
    return env


class Git:
    def __init__(self, timeout: float = NETWORK_TIMEOUT, program: str = "git") -> None:
        self.timeout, self.program = timeout, program

    def _run(self, args: list[str], timeout: float) -> str:
        return command.run([self.program, *args], timeout, GitError, _last_line, _env())

    def tags(self, remote: str) -> dict[str, str]:
        """{tag: commit} of `remote` (one ls-remote: no clone, no fetch of objects)."""
        return parse_ls_remote(self._run(["ls-remote", "--tags", "--", remote], self.timeout))

    def checkout(self, remote: str, tag: str, dest: str) -> str:
        """A shallow checkout of `tag` in the new directory `dest`; the commit it is at."""
        self._run(
            ["-c", "advice.detachedHead=false", "clone", "--quiet", "--depth", "1",
             "--branch", tag, "--", remote, dest],
            self.timeout * 6,
        )  # fmt: skip
        return self._run(["-C", dest, "rev-parse", "HEAD"], self.timeout).strip()
