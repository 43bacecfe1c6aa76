"""Running one external program for the updater, time-boxed, without a terminal (git.py and
venvs.py are the interfaces; this is what they share). Errors carry argv and exit code."""

from __future__ import annotations

import subprocess
from collections.abc import Callable


class CommandError(Exception):
    def __init__(self, argv: list[str], message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.argv, self.code = argv, code


def run(
    argv: list[str],
    timeout: float,
    error: type[CommandError],
    failed: Callable[[subprocess.CompletedProcess[str]], str],
    env: dict[str, str] | None = None,
) -> str:
    """The program's stdout; `error(argv, message, code)` when it could not run, did not
    finish within `timeout`, or failed (`failed` words the message from its output)."""
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
        raise error(argv, f"{argv[0]}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise error(argv, f"cannot run {argv[0]}: {exc}") from None
    if r.returncode != 0:
        raise error(argv, failed(r), r.returncode)
    return r.stdout
