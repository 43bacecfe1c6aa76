"""When to warn a job's terminals that its time limit is near. Pure: no clock, no I/O."""

from __future__ import annotations


def format_left(seconds: float) -> str:
    if seconds >= 110:  # a "2 minutes" warning fires a moment after 120 s left
        return f"{round(seconds / 60)} minutes"
    return f"{max(0, round(seconds))} seconds"


class WalltimeWarnings:
    def __init__(self, leads: list[float], end_time: float | None) -> None:
        self.pending = sorted({lead for lead in leads if lead > 0}, reverse=True)
        self.end_time = end_time

    def next_due(self) -> float | None:
        if self.end_time is None or not self.pending:
            return None
        return self.end_time - self.pending[0]

    def fire(self, now: float) -> float | None:
        """Seconds left, if a warning is due now; overdue leads collapse into one warning."""
        if self.end_time is None:
            return None
        due = [lead for lead in self.pending if self.end_time - lead <= now]
        if not due:
            return None
        self.pending = [lead for lead in self.pending if lead not in due]
        return self.end_time - now
