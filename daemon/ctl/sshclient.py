"""The one interface to the OpenSSH client on the login node: replace islurmctl with ssh."""

from __future__ import annotations

import os
import shutil
import sys


def exec_ssh(argv: list[str]) -> None:
    """Replace this process with ssh (argv[0] looked up on PATH). Returns only on failure."""
    path = shutil.which(argv[0])
    if path is None:
        raise FileNotFoundError(f"{argv[0]} not found on PATH")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, argv)  # noqa: S606 - argv list, no shell
