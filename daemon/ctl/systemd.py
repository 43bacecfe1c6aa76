"""islurm's one interface to systemctl: `systemctl --user`, argv lists, bounded by a timeout."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

SYSTEMCTL_TIMEOUT = 30.0
PROBE_TIMEOUT = 5.0


class SystemdUnavailable(Exception):
    """`systemctl --user` cannot reach a user manager here; the message says why."""


@dataclass(frozen=True)
class SystemctlResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def detail(self) -> str:
        return self.stderr.strip() or self.stdout.strip() or f"exit code {self.returncode}"


def systemctl(*args: str, timeout: float = SYSTEMCTL_TIMEOUT) -> SystemctlResult:
    """Run `systemctl --user ARGS` (found on PATH); raise SystemdUnavailable if it cannot run."""
    exe = shutil.which("systemctl")
    if exe is None:
        raise SystemdUnavailable("systemctl is not installed (not on PATH)")
    argv = [exe, "--user", *args]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except subprocess.TimeoutExpired:
        raise SystemdUnavailable(
            f"`systemctl --user {' '.join(args)}` did not answer in {timeout:g} s"
        ) from None
    except OSError as exc:
        raise SystemdUnavailable(f"cannot run {exe}: {exc}") from None
    return SystemctlResult(argv, proc.returncode, proc.stdout, proc.stderr)


def probe() -> None:
    """Raise SystemdUnavailable unless a user manager answers (no systemd, no D-Bus, ...)."""
    result = systemctl("show-environment", timeout=PROBE_TIMEOUT)
    if result.returncode != 0:
        raise SystemdUnavailable(f"`systemctl --user show-environment`: {result.detail}")


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ... UNIT...` output: KEY=VALUE blocks, one per unit, by Id."""
    units: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units
