"""An update is a new generation: fetch the tag, build its venv beside the current one, run
its self-test, and only then switch `current` by rename. A failure at any step (or a kill)
leaves `current` on a complete generation; the next run clears what was left half-built."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from islurm.config import installs
from islurm.daemon import version
from islurm.daemon.update import generations as gens
from islurm.daemon.update import state, venvs
from islurm.daemon.update.generations import Install
from islurm.daemon.update.git import Git, GitError
from islurm.daemon.update.policy import Policy
from islurm.daemon.update.versions import Tag, newer_than, pick, releases

DIE_AT_ENV = "ISLURM_UPDATE_DIE_AT"  # tests: SIGKILL ourselves just before this step
STEPS = ("tags", "fetch", "venv", "install", "selftest", "mark", "switch", "prune")

Say = Callable[[str], None]


class UpdateFailed(Exception):
    """An update step failed; `current` is untouched (or was already switched, see step)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.message = step, message


class Busy(UpdateFailed):
    pass


def _step(name: str, say: Say, text: str, **log: Any) -> None:
    if os.environ.get(DIE_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    say(text)
    state.log("step", step=name, **log)


@contextlib.contextmanager
def locked(root: str, building: str | None = None) -> Iterator[None]:
    """One update at a time per install (an flock, released by the kernel if we die)."""
    fd = os.open(os.path.join(root, "update.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy("lock", "another update of this install is running") from None
        # A run that was killed left a half-built generation: clear it (quota) before building.
        keep = (gens.link(root, installs.CURRENT), gens.link(root, installs.PREVIOUS), building)
        gens.prune(root, keep)
        yield
    finally:
        os.close(fd)


def current_version(install: Install) -> str:
    if install.root is not None:
        name = gens.link(install.root, installs.CURRENT)
        info = gens.marker(install.root, name) if name else None
        if info:
            return str(info.get("version"))
    return version.VERSION


def list_releases(policy: Policy, git: Git, to: str | None = None) -> list[Tag]:
    """The channel's release tags, oldest first (pre-releases only when asked for by name)."""
    return releases(git.tags(policy.remote), policy.tags, prereleases=to is not None)


def apply(
    install: Install,
    policy: Policy,
    to: str | None = None,
    say: Say = print,
    git: Git | None = None,
) -> str | None:
    """Build, test and switch to `to` (or the pinned or newest release); the version now
    current, or None when there was nothing newer. UpdateFailed says which step and why."""
    if not install.owned or install.root is None or install.python is None:
        raise UpdateFailed("install", f"not an install islurm manages: {install.instead()}")
    root, git = install.root, git or Git()
    with locked(root):
        current = current_version(install)
        _step("tags", say, f"looking for releases at {policy.remote}", current=current)
        try:
            tags = list_releases(policy, git, to)
        except GitError as exc:
            state.log("failed", step="tags", error=str(exc), **{"from": current})
            raise UpdateFailed("tags", str(exc)) from None
        target = pick(tags if (to or policy.pin) else newer_than(current, tags), to or policy.pin)
        if target is None:
            if to or policy.pin:
                why = f"no release {to or policy.pin} at {policy.remote}"
                state.log("failed", step="tags", error=why, **{"from": current})
                raise UpdateFailed("tags", why)
            say(f"islurm {current} is the newest release")
            return None
        if str(target.version) == current:
            say(f"islurm {current} is already installed")
            return None
        return _build_and_switch(install, policy, target, current, say, git)


def _build_and_switch(
    install: Install, policy: Policy, target: Tag, current: str, say: Say, git: Git
) -> str:
    root = install.root
    assert root is not None and install.python is not None
    name = gens.new_name(str(target.version))
    where = gens.gen_dir(root, name)
    step = "fetch"
    log = {"from": current, "to": str(target.version), "generation": name}
    try:
        os.makedirs(where, mode=0o700)
        _step(step, say, f"fetching {target.name} ({target.commit[:12]})", **log)
        commit = git.checkout(policy.remote, target.name, os.path.join(where, "src"))
        venv = os.path.join(where, "venv")
        step = "venv"
        _step(step, say, f"creating a venv with {install.python}", **log)
        venvs.create(install.python, venv)
        step = "install"
        _step(step, say, "installing islurm and its dependencies (pip)", **log)
        venvs.pip_install(venv, os.path.join(where, "src"))
        built = venvs.installed_version(venv)
        if built != str(target.version):
            raise UpdateFailed(
                step, f"tag {target.name} builds islurm {built}, not {target.version}"
            )
        shutil.rmtree(os.path.join(where, "src"))
        step = "selftest"
        _step(step, say, "running the new version's self-test", **log)
        venvs.selftest(venv)
        step = "mark"
        _step(step, say, "self-test passed", **log)
        gens.write_marker(root, name, {
            "version": built, "tag": target.name, "commit": commit, "python": install.python,
            "built": time.time(), "selftest": "passed",
        })  # fmt: skip
        step = "switch"
        _step(step, say, f"switching to islurm {built}", **log)
        old = gens.link(root, installs.CURRENT)
        if old is not None:
            gens.switch(root, installs.PREVIOUS, old)
        gens.switch(root, installs.CURRENT, name)
    except (UpdateFailed, GitError, venvs.BuildError, OSError, ValueError) as exc:
        gens.remove(root, name)
        why = exc if isinstance(exc, UpdateFailed) else UpdateFailed(step, str(exc))
        state.log("failed", step=why.step, error=str(exc), **log)
        raise why from None
    step = "prune"
    _step(step, say, "removing older generations", **log)
    gens.prune(root, (name, old))
    state.log("updated", **log)
    return built


def rollback(install: Install, say: Say = print) -> str:
    """Back to `previous` (the two links swap: a second rollback goes forward again)."""
    if not install.owned or install.root is None:
        raise UpdateFailed("rollback", f"not an install islurm manages: {install.instead()}")
    root = install.root
    with locked(root):
        prev, cur = gens.link(root, installs.PREVIOUS), gens.link(root, installs.CURRENT)
        info = gens.marker(root, prev) if prev else None
        if prev is None or info is None or cur is None:
            raise UpdateFailed("rollback", "no previous generation to go back to")
        _step("switch", say, f"switching back to islurm {info.get('version')}", rollback=prev)
        gens.switch(root, installs.CURRENT, prev)
        gens.switch(root, installs.PREVIOUS, cur)
        state.log("rolled_back", to=info.get("version"), generation=prev, left=cur)
        return str(info.get("version"))


def adopt(generation_dir: str, kind: str, prefix: str, python: str, say: Say = print) -> str:
    """`make install`: the generation built in place by the Makefile becomes current, after
    the same self-test an update runs; the install record and the commands are written."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(generation_dir)))
    name = os.path.basename(os.path.abspath(generation_dir))
    gens.write_record(root, kind, prefix, python)
    venv = os.path.join(generation_dir, "venv")
    say(venvs.selftest(venv).strip())
    built = venvs.installed_version(venv)
    gens.write_marker(root, name, {"version": built, "python": python, "built": time.time(),
                                   "selftest": "passed", "tag": None, "commit": None})  # fmt: skip
    with locked(root, building=name):
        old = gens.link(root, installs.CURRENT)
        if old is not None and old != name:
            gens.switch(root, installs.PREVIOUS, old)
        gens.switch(root, installs.CURRENT, name)
        gens.link_commands(root, prefix)
        gens.prune(root, (name, old))
    return built
