"""The laptop side: the state file `islurmctl setup` writes (which login node, what setup
made, the backups it took), and running islurmctl's commands on the login node over ssh.

islurmctl knows it runs on a laptop by that file: where it exists (and no --socket is given),
list, cancel, gpuswap, status and doctor go to the login node."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from islurm.config.sshsetup import REMOTE_CTL, Target

FORMAT = 1
FORWARDED = ("list", "cancel", "gpuswap", "status", "doctor")


def ssh_dir() -> Path:
    return Path.home() / ".ssh"


def our_dir() -> Path:
    return ssh_dir() / "islurm.d"


def key_path() -> Path:
    return ssh_dir() / "islurm"


def state_path() -> Path:
    return our_dir() / "setup.json"


def load_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_path().read_text())
    except FileNotFoundError:
        return None
    if state.get("format") != FORMAT:
        raise ValueError(f"{state_path()}: unknown format {state.get('format')!r}")
    return state


def render_state(state: dict[str, Any]) -> str:
    """Stable text: the same state gives the same bytes (a re-run changes nothing)."""
    return json.dumps({"format": FORMAT, **state}, indent=2, sort_keys=True) + "\n"


def sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def target_of(state: dict[str, Any]) -> Target:
    return Target(state["login"], state.get("user"))


def forwards(command: str | None, socket: str | None) -> bool:
    """ISLURM_LAPTOP=0 makes islurmctl act locally even where setup ran."""
    if os.environ.get("ISLURM_LAPTOP") == "0":
        return False
    return command in FORWARDED and socket is None and state_path().exists()


def forward(argv: list[str]) -> int:
    """Run `islurmctl ARGV` on the login node; its output and exit code are ours. ssh's own
    failure (255) is told apart."""
    from islurm.daemon.ctl.laptopssh import Login

    state = load_state()
    assert state is not None
    target = target_of(state)
    key = key_path() if key_path().exists() else None
    tty = sys.stdin.isatty() and sys.stdout.isatty() and "gpuswap" in argv
    code = Login(target, key).passthrough([REMOTE_CTL, *argv], tty=tty)
    if code == 255:
        print(
            f"islurmctl: ssh to {target.destination} failed (see above); "
            "`islurmctl doctor` checks each hop",
            file=sys.stderr,
        )
        return 3
    return code
