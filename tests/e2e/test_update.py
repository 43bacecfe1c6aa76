"""Self-update for real: a local bare git repository with release tags (file URL) as the
channel, generations built with real venvs and pip, the real islurmd and shim, and an ssh
session through the cluster that stays open across the update and the rollback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from islurm.daemon.update.installer import STEPS
from tests.e2e.conftest import REPO, TEST_CONFIG, Cluster, User

BROKEN = 'raise ImportError("islurm 0.3.0 is broken on purpose")\n'


@dataclass(frozen=True)
class Channel:
    dir: Path
    remote: str  # file:// URL of the bare repository
    prefix: str  # the test user's own install (never the shared /opt one)

    @property
    def root(self) -> Path:
        return Path(self.prefix) / "share" / "islurm"

    def current(self) -> str:
        return os.readlink(self.root / "current")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _tag(work: Path, version: str, broken: bool = False) -> None:
    py = work / "pyproject.toml"
    py.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', py.read_text()))
    if broken:
        (work / "proxyshim" / "node.py").write_text(BROKEN)
    _git("commit", "-q", "--allow-empty", "-am", f"release {version}", cwd=work)
    _git("tag", "-a", f"v{version}", "-m", f"islurm {version}", cwd=work)


@pytest.fixture(scope="module")
def channel(cluster: Cluster) -> Iterator[Channel]:
    """v0.1.0 installed with `make install` by the test user in its own prefix; the remote
    also holds v0.2.0 and v0.3.0 (whose self-test fails)."""
    top = Path(tempfile.mkdtemp(prefix="isu-", dir="/tmp"))
    work, bare = top / "work", top / "remote.git"
    work.mkdir()
    subprocess.run(
        f"git -C {REPO} archive HEAD | tar -x -C {work}",
        shell=True,
        check=True,
        executable="/bin/bash",
    )
    _git("init", "-q", "-b", "main", cwd=work)
    _git("config", "user.email", "t@example.org", cwd=work)
    _git("config", "user.name", "test", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", "islurm", cwd=work)
    for version in ("0.1.0", "0.2.0"):
        _tag(work, version)
    _tag(work, "0.3.0", broken=True)
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=top)
    subprocess.run(["chown", "-R", cluster.user, str(top)], check=True)
    ch = Channel(top, f"file://{bare}", str(top / "prefix"))
    u = User(cluster.user, ch.prefix)
    src = top / "v010"
    r = u.run(["git", "clone", "-q", "--branch", "v0.1.0", ch.remote, str(src)], timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    r = u.run(
        ["make", "-C", str(src), "install", f"PREFIX={ch.prefix}", "PYTHON=/usr/bin/python3"],
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    yield ch
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def updater(user: User, channel: Channel, tmp_path: Path) -> User:
    u = User(user.name, channel.prefix)
    u.prepare(TEST_CONFIG.replace('mode = "off"', f'mode = "check-only"\nchannel = '
                                  f'"{channel.remote}"'), tmp_path)  # fmt: skip
    return u


def _status(u: User) -> dict[str, object]:
    r = u.islurmctl("status", "--json")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert isinstance(out, dict)
    return out


def _until_version(u: User, version: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(u)
        if status["version"] == version:
            return status
        assert time.monotonic() < deadline, f"islurmd still reports {status['version']}"
        time.sleep(0.5)


def _update_log(u: User) -> list[dict[str, object]]:
    text = Path(u.home, ".local/state/islurm/log/update.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


class Session:
    """An ssh session through the cluster running `cat`: a line in comes back out."""

    def __init__(self, u: User) -> None:
        self.proc = u.popen(
            u.ssh_argv("slurm-short", "cat"), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def echo(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().decode().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)  # also closes its pipes


def test_check_update_refuse_a_broken_tag_and_roll_back_with_a_session_open(
    updater: User, channel: Channel
) -> None:
    u = updater
    r = u.islurmctl("check")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "current: 0.1.0" in out and "latest:  0.3.0" in out and "v0.2.0 v0.3.0" in out
    session = Session(u)
    try:
        assert session.echo("before") == "before"
        old = _status(u)
        assert (old["version"], old["protocol"]) == ("0.1.0", 1)
        first = channel.current()

        r = u.islurmctl("update", "--to", "0.3.0", timeout=300)
        err = r.stderr.decode()
        assert r.returncode == 1 and "failed at selftest" in err and "0.1.0 stays" in err, err
        assert channel.current() == first
        assert _status(u)["pid"] == old["pid"]  # still running, not handed over
        failed = [e for e in _update_log(u) if e["event"] == "failed"]
        assert failed[-1]["step"] == "selftest" and "broken on purpose" in str(failed[-1])

        r = u.islurmctl("update", timeout=300)  # the newest is broken: ask for 0.2.0
        assert r.returncode == 1
        r = u.islurmctl("update", "--to", "0.2.0", timeout=300)
        assert r.returncode == 0, r.stderr.decode()
        assert "switching to islurm 0.2.0" in r.stdout.decode()
        new = _until_version(u, "0.2.0")
        assert new["pid"] != old["pid"]
        assert session.echo("after update") == "after update"
        assert len(os.listdir(channel.root / "generations")) == 2

        r = u.islurmctl("update", "--rollback", timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        assert channel.current() == first
        _until_version(u, "0.1.0")
        assert session.echo("after rollback") == "after rollback"
    finally:
        session.close()


def test_off_opt_out_or_site_make_no_access_to_the_remote(updater: User, channel: Channel) -> None:
    u = updater
    wrapper = channel.dir / "bin"
    wrapper.mkdir(exist_ok=True)
    calls = channel.dir / "git-calls.log"
    (wrapper / "git").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec /usr/bin/git "$@"\n')
    (wrapper / "git").chmod(0o755)
    site = channel.dir / "site.toml"
    site.write_text('[update]\nmode = "off"\n')
    own = channel.dir / "config-off.toml"  # the user's own config.toml saying off
    own.write_text(f'[update]\nmode = "off"\nchannel = "{channel.remote}"\n')
    subprocess.run(["chown", "-R", u.name, str(wrapper), str(site), str(own)], check=True)
    path = f"{wrapper}:{u.prefix}/bin:/usr/bin:/bin"
    noauto = Path(u.home, ".config/islurm/noauto")
    cases: list[tuple[dict[str, str], bool, str]] = [
        ({"ISLURM_SITE_CONFIG": str(site)}, False, "set by the site"),
        ({}, True, "opt-out file"),
        ({"ISLURM_CONFIG": str(own)}, False, "mode off (your config)"),
    ]
    try:
        for env, opted_out, why in cases:
            if opted_out:
                subprocess.run(["runuser", "-u", u.name, "--", "touch", str(noauto)], check=True)
            for cmd in (["check"], ["update"]):
                r = u.run(["islurmctl", *cmd], env={"PATH": path, **env})
                said = (r.stdout + r.stderr).decode()
                assert why in said, (env, cmd, said)
            noauto.unlink(missing_ok=True)
        assert not calls.exists(), calls.read_text()
    finally:
        noauto.unlink(missing_ok=True)
    r = u.run(["islurmctl", "check"], env={"PATH": path})  # the control: the wrapper sees git
    assert r.returncode == 0, r.stderr.decode()
    assert "ls-remote" in calls.read_text()


def _working(u: User, channel: Channel) -> str:
    """`current` is a complete generation whose commands run: its version."""
    name = os.path.basename(channel.current())
    marker = json.loads((channel.root / "generations" / name / "generation.json").read_text())
    r = u.run([str(channel.root / "current" / "venv" / "bin" / "islurmctl"), "--version"])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == marker["version"]
    return str(marker["version"])


def test_killed_at_each_step_current_stays_working_and_the_next_update_succeeds(
    updater: User, channel: Channel
) -> None:
    """SIGKILL (the installer's test hook) just before each step in turn, updating to the
    other version each time; every run after a kill clears what the killed one left."""
    u = updater
    start = _working(u, channel)
    other = "0.2.0" if start == "0.1.0" else "0.1.0"
    for i, step in enumerate(STEPS):
        before = channel.current()
        r = u.run(
            ["islurmctl", "update", "--to", other],
            env={"ISLURM_UPDATE_DIE_AT": step},
            timeout=300,
        )
        assert r.returncode in (-9, 128 + 9), (step, r.returncode, r.stderr.decode())
        if i > 0:  # it died right there: the previous step was its last word
            last = _update_log(u)[-1]
            assert (last["event"], last["step"]) == ("step", STEPS[i - 1]), (step, last)
        # prune comes after the switch: only a kill there leaves the new version current
        assert _working(u, channel) == (other if step == "prune" else start), step
        if step != "prune":
            assert channel.current() == before, step
    r = u.islurmctl("update", "--to", start, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert _working(u, channel) == start
    gens = os.listdir(channel.root / "generations")
    assert all((channel.root / "generations" / g / "generation.json").exists() for g in gens)
    assert len(gens) <= 3, gens  # current, previous, and at most one still in use


def test_auto_applies_a_new_tag_by_itself_within_one_interval(
    user: User, channel: Channel, tmp_path: Path
) -> None:
    u = User(user.name, channel.prefix)
    auto = f'mode = "auto"\ninterval = "10s"\nchannel = "{channel.remote}#v0.2.*"'
    u.prepare(TEST_CONFIG.replace('mode = "off"', auto), tmp_path)
    r = u.islurmctl("check")  # a check now: the daemon's next one is due in 10 s
    assert r.returncode == 0 and "newer:   v0.2.0" in r.stdout.decode(), r.stdout.decode()
    checked = time.time()
    assert _status(u)["version"] == "0.1.0"  # starts islurmd (0.1.0, auto)
    _until_version(u, "0.2.0", timeout=10 + 240)
    took = time.time() - checked
    log = _update_log(u)
    daemon_checks = [e for e in log if e["event"] == "check"][1:]
    assert daemon_checks and daemon_checks[0]["newer"] == ["v0.2.0"]
    stamp = datetime.strptime(str(daemon_checks[0]["time"]), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert stamp >= int(checked) + 10 - 1, "checked again before the interval was over"
    assert [e["to"] for e in log if e["event"] == "updated"] == ["0.2.0"]
    assert _working(u, channel) == "0.2.0"
    print(f"auto update: applied and handed over {took:.0f} s after the last check")
