"""The one interface to venv and pip, and to the programs of a generation (its self-test).

Every call is time-boxed; errors carry the argv, exit code and the tail of the output."""

from __future__ import annotations

import os
import subprocess

from islurm.daemon.update import command
from islurm.daemon.update.command import CommandError

BUILD_TIMEOUT = 600.0  # pip may have to fetch and build the dependencies
SELFTEST_TIMEOUT = 60.0
PIP_QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]


class BuildError(CommandError):
    pass


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    return command.run(argv, timeout, BuildError, _tail, env)


def _tail(r: subprocess.CompletedProcess[str]) -> str:
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
    return f"{' '.join(str(a) for a in r.args[:4])}… exit {r.returncode}: {tail}"


def create(python: str, dest: str) -> None:
    """A fresh venv at `dest` (its final place: venvs cannot move) from `python`."""
    _run([python, "-m", "venv", "--", dest], 120)


def pip_install(venv: str, source: str, timeout: float = BUILD_TIMEOUT) -> None:
    """Install the project at `source` and its dependencies into `venv` (pip honours the
    user's pip config and $PIP_* variables: index, cache, find-links)."""
    _run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", *PIP_QUIET, source],
         timeout)  # fmt: skip


def installed_version(venv: str) -> str:
    code = "import importlib.metadata as m; print(m.version('islurm'))"
    return _run([os.path.join(venv, "bin", "python"), "-I", "-c", code], 60).strip()


def selftest(venv: str, timeout: float = SELFTEST_TIMEOUT) -> str:
    """`islurmd --selftest` of the generation in `venv`: its report, BuildError if it failed."""
    return _run([os.path.join(venv, "bin", "islurmd"), "--selftest"], timeout)
