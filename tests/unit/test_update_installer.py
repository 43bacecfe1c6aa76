"""installer.apply against a scripted git and a scripted venv/pip: every failing step leaves
`current` where it was, removes what it built and says why in the update log; pruning keeps
a generation a process still runs from."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from islurm.config import installs
from islurm.daemon.update import generations as gens
from islurm.daemon.update import installer, venvs
from islurm.daemon.update.git import Git, GitError
from islurm.daemon.update.policy import Policy

REMOTE = "file:///srv/islurm.git"
POLICY = Policy("check-only", REMOTE, "v*", 3600.0, None, "mode check-only (your config)")
LS = {"v0.1.0": "a" * 40, "v0.2.0": "b" * 40}


class FakeGit(Git):
    """Replays the tags it was given; a checkout makes the directory; nothing else allowed."""

    def __init__(self, tags: dict[str, str], fail: GitError | None = None) -> None:
        super().__init__(program="/nonexistent/git")
        self.given, self.fail, self.calls = tags, fail, list[str]()

    def tags(self, remote: str) -> dict[str, str]:
        assert remote == REMOTE
        self.calls.append("tags")
        return self.given

    def checkout(self, remote: str, tag: str, dest: str) -> str:
        self.calls.append(f"checkout {tag}")
        if self.fail is not None:
            raise self.fail
        os.makedirs(dest)
        return self.given[tag]


@dataclass
class FakeBuild:
    """venv and pip as scripted: `fail` names the call that fails and how."""

    fail: dict[str, Exception] = field(default_factory=dict)
    version: str = "0.2.0"
    calls: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def create(self, python: str, dest: str) -> None:
        self._call("create")
        os.makedirs(os.path.join(dest, "bin"))

    def pip_install(self, venv: str, source: str, timeout: float = 0) -> None:
        assert os.path.isdir(source)
        self._call("pip_install")

    def installed_version(self, venv: str) -> str:
        self._call("installed_version")
        return self.version

    def selftest(self, venv: str, timeout: float = 0) -> str:
        self._call("selftest")
        return "ok"


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[gens.Install]:
    """A `make install` at 0.1.0: one complete generation, `current` pointing at it."""
    monkeypatch.setenv("ISLURM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv(installer.DIE_AT_ENV, raising=False)
    root = tmp_path / "share" / "islurm"
    (root / "generations" / "0.1.0-a" / "venv").mkdir(parents=True)
    gens.write_record(str(root), "make", str(tmp_path), "/usr/bin/python3")
    gens.write_marker(str(root), "0.1.0-a", {"version": "0.1.0"})
    gens.switch(str(root), installs.CURRENT, "0.1.0-a")
    yield gens.Install("make", str(root), str(tmp_path), "/usr/bin/python3", "0.1.0-a")


@pytest.fixture
def build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    fake = FakeBuild()
    for name in ("create", "pip_install", "installed_version", "selftest"):
        monkeypatch.setattr(venvs, name, getattr(fake, name))
    return fake


def _log(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "state" / "log" / "update.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_an_update_builds_tests_and_switches_in_order(
    install: gens.Install, build: FakeBuild, tmp_path: Path
) -> None:
    said: list[str] = []
    assert installer.apply(install, POLICY, None, said.append, FakeGit(LS)) == "0.2.0"
    root = install.root or ""
    new = gens.link(root, installs.CURRENT)
    assert new is not None and new.startswith("0.2.0-")
    assert gens.link(root, installs.PREVIOUS) == "0.1.0-a"
    assert (gens.marker(root, new) or {})["commit"] == "b" * 40
    assert build.calls == ["create", "pip_install", "installed_version", "selftest"]
    steps = [e["step"] for e in _log(tmp_path) if e["event"] == "step"]
    assert steps == list(installer.STEPS)
    assert _log(tmp_path)[-1]["event"] == "updated"
    assert not os.path.exists(os.path.join(gens.gen_dir(root, new), "src"))  # no quota wasted
    assert any("switching to islurm 0.2.0" in s for s in said)


def _disk_full(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _switch_fails_for_current(real: Callable[[str, str, str], None]) -> Callable[..., None]:
    def switch(root: str, which: str, name: str) -> None:
        if which == installs.CURRENT:
            _disk_full()
        real(root, which, name)

    return switch


@pytest.mark.parametrize(
    ("step", "setup", "why"),
    [
        ("tags", "no-such-release", "no release 9.9.9"),
        ("fetch", "fetch", "could not read from remote"),
        ("venv", "create", "ensurepip is not available"),
        ("install", "pip_install", "No matching distribution found for trio"),
        ("install", "wrong-version", "builds islurm 0.1.9, not 0.2.0"),
        ("selftest", "selftest", "self-test failed: ImportError"),
        ("mark", "mark", "No space left on device"),
        ("switch", "switch", "No space left on device"),
    ],
)
def test_a_failing_step_leaves_current_and_says_why(
    install: gens.Install,
    build: FakeBuild,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    setup: str,
    why: str,
) -> None:
    git = FakeGit(LS)
    to = "0.2.0"
    if setup == "no-such-release":
        to = "9.9.9"
    elif setup == "fetch":
        git.fail = GitError(["git", "clone"], f"exit 128: fatal: {why}", 128)
    elif setup == "wrong-version":
        build.version = "0.1.9"
    elif setup == "mark":
        monkeypatch.setattr(gens, "write_marker", _disk_full)
    elif setup == "switch":
        monkeypatch.setattr(gens, "switch", _switch_fails_for_current(gens.switch))
    else:
        build.fail[setup] = venvs.BuildError([setup], f"{setup}: exit 1: {why}", 1)
    root = install.root or ""
    with pytest.raises(installer.UpdateFailed, match=why) as caught:
        installer.apply(install, POLICY, to, lambda _: None, git)
    assert caught.value.step == step
    assert os.readlink(os.path.join(root, installs.CURRENT)) == "generations/0.1.0-a"
    assert gens.names(root) == ["0.1.0-a"]  # what it built is gone (quota)
    failed = [e for e in _log(tmp_path) if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["step"] == step and why in str(failed[0]["error"])
    assert installer.current_version(install) == "0.1.0"


def test_nothing_newer_builds_nothing(install: gens.Install, build: FakeBuild) -> None:
    said: list[str] = []
    only_old = {"v0.1.0": "a" * 40}
    assert installer.apply(install, POLICY, None, said.append, FakeGit(only_old)) is None
    assert said[-1] == "islurm 0.1.0 is the newest release" and build.calls == []


def test_an_install_not_ours_is_refused_before_any_network(build: FakeBuild) -> None:
    git = FakeGit(LS)
    with pytest.raises(installer.UpdateFailed, match="pipx upgrade islurm"):
        installer.apply(gens.Install("pipx"), POLICY, None, lambda _: None, git)
    assert git.calls == []


def test_prune_keeps_a_generation_a_process_still_runs_from(tmp_path: Path) -> None:
    root = tmp_path / "share" / "islurm"
    root.mkdir(parents=True)
    gens.write_record(str(root), "make", str(tmp_path), "/usr/bin/python3")
    for name in ("0.1.0-a", "0.2.0-b", "0.3.0-c", "0.4.0-d", "0.5.0-e"):
        (root / "generations" / name / "venv" / "bin").mkdir(parents=True)
    shim = root / "generations" / "0.1.0-a" / "venv" / "bin" / "python"
    # A shim started from 0.1.0 (its #! line names the generation's python: the kernel puts
    # that first in its command line), and a process whose working directory is in 0.2.0.
    procs = [
        subprocess.Popen(["/bin/sh", "-c", "sleep 30; :", str(shim)]),
        subprocess.Popen(["sleep", "30"], cwd=root / "generations" / "0.2.0-b"),
    ]
    try:
        assert gens.in_use(str(root)) >= {"0.1.0-a", "0.2.0-b"}
        removed = gens.prune(str(root), ("0.5.0-e", "0.4.0-d"))
        assert removed == ["0.3.0-c"]
        assert gens.names(str(root)) == ["0.1.0-a", "0.2.0-b", "0.4.0-d", "0.5.0-e"]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(gens.prune(str(root), ("0.5.0-e", "0.4.0-d"))) == ["0.1.0-a", "0.2.0-b"]
