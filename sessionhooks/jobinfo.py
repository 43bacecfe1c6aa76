"""The hook's one question to Slurm: when does this job end? (squeue, machine-readable.)
Asked after the job's start, if at all: `subprocess` is imported then, not at start."""

from __future__ import annotations

import time


def parse_end_time(text: str) -> float | None:
    """Epoch seconds from squeue's %e (local time, ISO-like); None for N/A, Unknown, junk."""
    value = text.strip()
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def end_time(job_id: str) -> float | None:
    """The job's current end time (it moves if an admin extends the limit); None if unknown."""
    import subprocess

    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_end_time(proc.stdout) if proc.returncode == 0 else None
