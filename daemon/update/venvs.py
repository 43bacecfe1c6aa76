"""The one interface to venv and pip, and to the programs of a generation (its self-test).

Every call is time-boxed; errors carry the argv, exit code and the tail of the output."""

from __future__ import annotations

import os
import subprocess

BUILD_TIMEOUT = 600.0  # pip may have to fetch and build the dependencies
SELFTEST_TIMEOUT = 60.0
PIP_QUIET = ["--disable-pip-version-check", "--no-input", "--quiet"]


class BuildError(Exception):
    def __init__(self, argv: list[str], message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.argv, self.code = argv, code


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(argv, f"{argv[0]}: no result within {timeout:g} s") from None
    except OSError as exc:
        raise BuildError(argv, f"cannot run {argv[0]}: {exc}") from None
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
        raise BuildError(argv, f"{' '.join(argv[:4])}… exit {r.returncode}: {tail}", r.returncode)
    return r.stdout


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
