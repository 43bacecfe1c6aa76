"""Port leases: each live job gets its own port from the configured range."""

from __future__ import annotations

import random


class PortPool:
    """Hands out ports no other live job of this daemon holds (on any node: the node is
    unknown at submit time). The hook still verifies the port by binding it."""

    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad port range {low}-{high}")
        self.low, self.high = low, high
        self._held: dict[int, str] = {}
        self._rng = rng or random.Random()  # noqa: S311 - spreading, not secrecy

    def lease(self, holder: str) -> int:
        size = self.high - self.low + 1
        if len(self._held) >= size:
            raise RuntimeError(f"all {size} ports of {self.low}-{self.high} are leased")
        # Random start spreads users over the range, so two users' daemons rarely pick alike.
        start = self._rng.randrange(size)
        for i in range(size):
            port = self.low + (start + i) % size
            if port not in self._held:
                self._held[port] = holder
                return port
        raise AssertionError("unreachable: a free port was counted")

    def adopt(self, port: int, holder: str) -> None:
        """Record a port a job already uses (found after a restart)."""
        self._held[port] = holder

    def rename(self, old: str, new: str) -> None:
        for port, holder in self._held.items():
            if holder == old:
                self._held[port] = new

    def release(self, holder: str) -> None:
        for port in [p for p, h in self._held.items() if h == holder]:
            del self._held[port]

    def held(self) -> dict[int, str]:
        return dict(self._held)
