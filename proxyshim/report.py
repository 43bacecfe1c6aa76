"""What the shim's modules share for failing and telling: `ShimError` (an exit code and a
message) and the stderr writers. Stdlib only and import-light: the shim starts on every ssh."""

import os

from islurm.config.text import terminal_safe


class ShimError(Exception):
    """A failure that ends the shim with `code` after printing `message`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _stderr(line: str) -> None:
    # Messages come from the daemon (and through it from sbatch): keep terminal controls out.
    data = (terminal_safe(line) + "\n").encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(2, data) :]
    except OSError:
        pass  # nobody to tell


def report(message: str) -> None:
    """A failure, on stderr: ``islurm-proxy: message``."""
    _stderr("islurm-proxy: " + message)


def inform(message: str) -> None:
    """Progress, on stderr: ``islurm: message``."""
    _stderr("islurm: " + message)
