"""What `islurmctl check` and `islurmctl update` print and exit with, the work behind them
replaced: a git that must not be called, or one that replays tags; a scripted installer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from islurm.daemon import version
from islurm.daemon.ctl import main as ctl_main
from islurm.daemon.ctl import update as ctl_update
from islurm.daemon.update import generations as gens
from islurm.daemon.update import installer
from islurm.daemon.update.git import Git
from islurm.daemon.update.policy import Policy

REMOTE = "file:///srv/islurm.git"
LS = {"v0.1.0": "a" * 40, "v0.2.0": "b" * 40, "v0.3.0": "c" * 40, "nightly": "d" * 40}


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """islurmctl's main() points structlog at the (captured, soon closed) stderr."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with no daemon, no site file and no laptop setup; git fails the test if run."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ISLURM_LAPTOP", "0")
    monkeypatch.setenv("ISLURM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("ISLURM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ISLURM_SITE_CONFIG", str(tmp_path / "no-site.toml"))
    monkeypatch.setenv("ISLURM_SOCKET", str(tmp_path / "run" / "islurmd.sock"))

    def no_network(self: Git, args: list[str], timeout: float) -> str:
        raise AssertionError(f"git was run: {args}")

    monkeypatch.setattr(Git, "_run", no_network)
    return tmp_path


def _config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)


def _replay_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    def tags(self: Git, remote: str) -> dict[str, str]:
        assert remote == REMOTE
        return LS

    monkeypatch.setattr(Git, "tags", tags)


def test_mode_off_in_the_users_config_makes_no_access_and_says_why(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(home, f'[update]\nmode = "off"\nchannel = "{REMOTE}"\n')
    assert ctl_main.main(["check"]) == 0
    out = capsys.readouterr().out
    assert out == f"islurm {version.VERSION}: no check made (mode off (your config))\n"
    assert ctl_main.main(["check", "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert (said["ok"], said["mode"], said["reason"]) == (False, "off", "mode off (your config)")
    assert ctl_main.main(["update"]) == 1
    assert "not updating: mode off (your config)" in capsys.readouterr().err
    assert not (home / "state" / "update.json").exists()  # nothing checked, nothing remembered


def test_no_channel_says_how_to_set_one(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _config(home, '[update]\nmode = "check-only"\n')
    assert ctl_main.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "no check made" in out and "no channel is configured" in out
    assert f"[update] in {home / 'config.toml'}" in out and "no-site.toml" in out


def test_check_lists_the_newer_releases_and_what_to_run(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(home, f'[update]\nmode = "check-only"\nchannel = "{REMOTE}"\n')
    _replay_tags(monkeypatch)
    monkeypatch.setattr(version, "VERSION", "0.1.0")
    assert ctl_main.main(["check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["current: 0.1.0", "latest:  0.3.0", "newer:   v0.2.0 v0.3.0"]
    assert lines[3].startswith("to update this pip install: pip install --upgrade islurm")
    assert lines[4] == "mode:    mode check-only (your config)"
    remembered = json.loads((home / "state" / "update.json").read_text())["check"]
    assert remembered["newer"] == ["v0.2.0", "v0.3.0"] and remembered["ok"] is True


def _owned(home: Path) -> gens.Install:
    root = home / "share" / "islurm"
    root.mkdir(parents=True)
    return gens.Install("make", str(root), str(home), "/usr/bin/python3", None)


def test_update_shows_progress_then_the_new_version(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(home, f'[update]\nmode = "check-only"\nchannel = "{REMOTE}"\n')
    monkeypatch.setattr(gens, "detect", lambda: _owned(home))

    def apply(install: gens.Install, policy: Policy, to: str | None, say: installer.Say) -> str:
        assert (policy.remote, to) == (REMOTE, "0.2.0")
        say("fetching v0.2.0")
        return "0.2.0"

    monkeypatch.setattr(installer, "apply", apply)
    assert ctl_main.main(["update", "--to", "0.2.0"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "update: fetching v0.2.0",
        "update: islurm 0.2.0 is current; islurmd hands over as soon as no connect waits",
    ]


def test_a_failed_update_names_the_step_and_the_version_that_stays(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(home, f'[update]\nmode = "auto"\nchannel = "{REMOTE}"\n')
    monkeypatch.setattr(gens, "detect", lambda: _owned(home))
    monkeypatch.setattr(version, "VERSION", "0.1.0")

    def apply(install: gens.Install, policy: Policy, to: str | None, say: installer.Say) -> str:
        raise installer.UpdateFailed("selftest", "islurmd: self-test failed: ImportError: x")

    monkeypatch.setattr(installer, "apply", apply)
    assert ctl_main.main(["update"]) == 1
    assert capsys.readouterr().err == (
        "islurmctl: update failed at selftest: islurmd: self-test failed: ImportError: x; "
        "islurm 0.1.0 stays in use\n"
    )
    log = (home / "state" / "log" / "update.log").read_text().splitlines()
    assert json.loads(log[-1])["event"] == "gave_up"


def test_update_of_an_install_not_ours_says_what_to_run(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _config(home, f'[update]\nmode = "auto"\nchannel = "{REMOTE}"\n')
    monkeypatch.setattr(gens, "detect", lambda: gens.Install("pipx"))
    assert ctl_main.main(["update"]) == 1
    assert "not an install islurm manages: pipx upgrade islurm" in capsys.readouterr().err


def test_status_lines() -> None:
    assert ctl_update.status_lines(None) == ["  update:    (this islurmd predates self-update)"]
    info = {"reason": "mode auto (your config)", "install": "make", "owned": True,
            "last_check": {"ok": True, "latest": "0.2.0", "newer": ["v0.2.0"]}}  # fmt: skip
    assert ctl_update.status_lines(info) == [
        "  update:    mode auto (your config); make install",
        "  checked:   latest 0.2.0, newer: v0.2.0",
    ]
    info = {"reason": "r", "install": "pipx", "owned": False,
            "last_check": {"ok": False, "error": "no answer within 15 s", "time": 0}}  # fmt: skip
    lines = ctl_update.status_lines(info)
    assert lines[0].endswith("pipx install (not updated by islurm)")
    assert lines[1] == "  checked:   check failed: no answer within 15 s"
