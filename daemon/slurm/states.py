"""Slurm job states as islurm sees them. No I/O here."""

from __future__ import annotations

import enum


class JobState(enum.Enum):
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    REQUEUED = "REQUEUED"
    RESIZING = "RESIZING"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    #: not in squeue's answer any more (purged after MinJobAge, or never seen)
    GONE = "GONE"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> JobState:
        # squeue may append a qualifier such as "CANCELLED by 1000".
        word = text.strip().split(" ", 1)[0].upper()
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_waiting(self) -> bool:
        """The job may still become usable."""
        return self in _WAITING

    @property
    def is_running(self) -> bool:
        return self is JobState.RUNNING

    @property
    def is_ended(self) -> bool:
        return not (self in _WAITING or self is JobState.RUNNING or self is JobState.UNKNOWN)

    def describe_end(self) -> str:
        """What an ended state means, in words a user understands."""
        return _END_WORDS.get(self, f"ended ({self.value})")


_WAITING = {
    JobState.PENDING,
    JobState.CONFIGURING,
    JobState.REQUEUED,
    JobState.RESIZING,
    JobState.SUSPENDED,
    JobState.SIGNALING,
    JobState.STOPPED,  # stopped (SIGSTOP) jobs keep their allocation and may continue
}

_END_WORDS = {
    JobState.COMPLETED: "completed",
    JobState.COMPLETING: "is ending",
    JobState.CANCELLED: "was cancelled",
    JobState.FAILED: "failed",
    JobState.TIMEOUT: "reached its time limit",
    JobState.NODE_FAIL: "ended because its node failed",
    JobState.PREEMPTED: "was preempted",
    JobState.OUT_OF_MEMORY: "ran out of memory",
    JobState.BOOT_FAIL: "failed to boot its node",
    JobState.DEADLINE: "missed its deadline",
    JobState.GONE: "is gone from Slurm",
}
