"""The checker loop on a virtual clock: one check per interval, failed ones included, never
more often however often it is nudged, remembered across restarts; nothing with mode off;
auto mode applies; a switched `current` makes the daemon hand over."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from islurm.config import installs
from islurm.config.settings import Settings, UpdateSettings, load_settings
from islurm.daemon.update import generations as gens
from islurm.daemon.update import state
from islurm.daemon.update.checker import UpdateChecker
from islurm.daemon.update.policy import Policy

EPOCH = 1_800_000_000.0  # the wall clock at virtual time 0
NOT_OURS = gens.Install("pip")


def _settings(mode: str, interval: float = 100.0) -> Settings:
    update = UpdateSettings(mode=mode, channel="file:///srv/islurm.git", interval=interval)
    return dataclasses.replace(load_settings(None), update=update)


@pytest.fixture(autouse=True)
def no_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISLURM_SITE_CONFIG", str(tmp_path / "no-site.toml"))
    monkeypatch.setenv("ISLURM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("ISLURM_STATE_DIR", str(tmp_path / "state"))


class Recorder:
    """Stands in for the check: records when it ran and remembers it as the real one does;
    every other check times out (None), which must count as a check all the same."""

    def __init__(self, checker: UpdateChecker, newer: list[str] | None = None) -> None:
        self.checker, self.newer, self.times = checker, newer or [], list[float]()
        checker.run_check = self.check

    async def check(self, policy: Policy) -> dict[str, Any] | None:
        self.times.append(trio.current_time())
        await trio.sleep(1)  # a check takes time
        if len(self.times) % 2 == 0:
            return None
        outcome = {"ok": True, "newer": self.newer}
        state.save_check(outcome, self.checker.state_dir, self.checker.clock())
        return outcome


def _checker(tmp_path: Path, settings: Settings, install: gens.Install = NOT_OURS) -> UpdateChecker:
    async def handover() -> None:
        raise AssertionError("no handover expected")

    return UpdateChecker(
        lambda: settings,
        str(tmp_path / "state"),
        handover,
        clock=lambda: EPOCH + trio.current_time(),
        install=install,
    )


async def _run_for(checker: UpdateChecker, seconds: float, nudge_every: float = 0) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            await trio.sleep(nudge_every or seconds)
            checker.look()  # what islurmctl update's SIGUSR1 does
        nursery.cancel_scope.cancel()


async def test_one_check_per_interval_never_more_often(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    checker = _checker(tmp_path, _settings("check-only", interval=100))
    rec = Recorder(checker)
    await _run_for(checker, 950, nudge_every=7)
    assert len(rec.times) == 10, rec.times
    gaps = [b - a for a, b in zip(rec.times, rec.times[1:], strict=False)]
    assert all(gap >= 100 for gap in gaps), gaps  # a failed check (None) waits too


async def test_the_last_check_is_remembered_across_restarts(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    settings = _settings("check-only", interval=100)
    first = _checker(tmp_path, settings)
    rec = Recorder(first)
    await _run_for(first, 40)
    assert rec.times == [0]
    second = _checker(tmp_path, settings)  # the daemon restarted 40 s later
    rec2 = Recorder(second)
    await _run_for(second, 100, nudge_every=5)
    # Not at its start (40): the interval counts from the end of the last check (1).
    assert rec2.times == [101]


async def test_mode_off_never_checks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    checker = _checker(tmp_path, _settings("off", interval=10))
    rec = Recorder(checker)
    await _run_for(checker, 1000, nudge_every=3)
    assert rec.times == []
    assert state.load(str(tmp_path / "state")) == {}


async def test_auto_applies_a_newer_release_once_per_check(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    root = tmp_path / "share" / "islurm"
    root.mkdir(parents=True)
    owned = gens.Install("make", str(root), str(tmp_path), "/usr/bin/python3", None)
    checker = _checker(tmp_path, _settings("auto", interval=100), owned)
    rec = Recorder(checker, newer=["v0.2.0"])
    applied: list[float] = []

    async def apply() -> None:
        applied.append(trio.current_time())

    checker.run_apply = apply
    await _run_for(checker, 250)
    assert rec.times == [0, 101, 202] and applied == [1, 203]  # not after the timed-out one

    rec.times.clear()
    applied.clear()
    checker.settings = lambda: _settings("check-only", interval=100)
    await _run_for(checker, 250)
    assert rec.times and applied == []  # check-only: report, never apply


def _two_generations(tmp_path: Path) -> Path:
    """An install root with generations 0.1.0-a (current) and 0.2.0-b."""
    root = tmp_path / "share" / "islurm"
    for name in ("0.1.0-a", "0.2.0-b"):
        (root / "generations" / name).mkdir(parents=True)
        gens.write_marker(str(root), name, {"version": name[:5]})
    gens.switch(str(root), installs.CURRENT, "0.1.0-a")
    return root


async def test_a_daemon_not_started_as_current_never_hands_over(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The updater's self-test runs the new generation's islurmd before the switch."""
    root = _two_generations(tmp_path)
    new = gens.Install("make", str(root), str(tmp_path), "/usr/bin/python3", "0.2.0-b")
    checker = _checker(tmp_path, _settings("off"), new)

    async def handover() -> None:
        raise AssertionError("the self-test's daemon handed over")

    checker.handover = handover
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        checker.look()
        await trio.sleep(130)  # two LINK_POLLs
        assert not checker.switched()
        nursery.cancel_scope.cancel()


async def test_a_switched_current_hands_over(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    root = _two_generations(tmp_path)
    mine = gens.Install("make", str(root), str(tmp_path), "/usr/bin/python3", "0.1.0-a")
    checker = _checker(tmp_path, _settings("off"), mine)
    handed: list[float] = []

    async def handover() -> None:
        handed.append(trio.current_time())

    checker.handover = handover
    async with trio.open_nursery() as nursery:
        await nursery.start(checker.run)
        await trio.sleep(5)
        assert handed == []
        gens.switch(str(root), installs.CURRENT, "0.2.0-b")  # islurmctl update switched
        checker.look()  # and sent SIGUSR1
        await trio.sleep(1)
        assert handed == [5]
        nursery.cancel_scope.cancel()
