"""What self-update remembers (the last check, 0600 JSON in the state dir) and tells (the
update log: one JSON line per step with time, versions and outcome)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from islurm.config import paths
from islurm.config.files import write_text_atomic
from islurm.daemon.update.generations import read_json


def state_file(state: str | None = None) -> str:
    return os.path.join(paths.ensure_state_dirs(state), "update.json")


def log_file(state: str | None = None) -> str:
    return os.path.join(paths.log_dir(paths.ensure_state_dirs(state)), "update.log")


def load(state: str | None = None) -> dict[str, Any]:
    return read_json(state_file(state)) or {}


def save_check(outcome: dict[str, Any], state: str | None = None, now: float | None = None) -> None:
    """Remember a check's outcome (its time is when the next one is due)."""
    data = load(state)
    data["check"] = {"time": time.time() if now is None else now, **outcome}
    write_text_atomic(state_file(state), json.dumps(data, indent=1) + "\n", 0o600)


def due(interval: float, state: str | None = None, now: float | None = None) -> float:
    """Seconds until the next check is due (0: now)."""
    last = load(state).get("check", {}).get("time")
    if not isinstance(last, int | float):
        return 0.0
    return max(0.0, last + interval - (now if now is not None else time.time()))


def log(event: str, state: str | None = None, **fields: Any) -> None:
    """Append one line to the update log (created 0600)."""
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields})
    fd = os.open(log_file(state), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)
