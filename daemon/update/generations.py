"""Generations of a managed install (layout: config/installs.py): the install record, the
markers, the atomic switch of `current`/`previous`, pruning. Filesystem only, no commands."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from islurm.config import installs
from islurm.config.files import write_text_atomic

COMMANDS = ("islurmd", "islurm-proxy", "islurmctl")
KEEP = 2  # generations kept: current and previous (rollback)
OWNED_KINDS = ("make", "setup")  # installs self-update may change


@dataclass(frozen=True)
class Install:
    """How the running islurm was installed."""

    kind: str  # make | setup (ours) | site | pipx | pip (not ours)
    root: str | None = None  # <prefix>/share/islurm for managed installs
    prefix: str | None = None
    python: str | None = None  # the base interpreter generations are built with
    generation: str | None = None  # the one this process runs from

    @property
    def owned(self) -> bool:
        # An install we cannot write (a site's, or root's) is reported on, never changed.
        return self.root is not None and self.kind in OWNED_KINDS and os.access(self.root, os.W_OK)

    def instead(self) -> str:
        """What to run instead of `islurmctl update` for an install that is not ours."""
        if self.root is not None and self.kind in OWNED_KINDS:
            return f"{self.root} is not writable by you: ask its owner to run islurmctl update"
        return {
            "site": "this is your site's install: ask your administrators to upgrade it",
            "pipx": "pipx upgrade islurm",
        }.get(self.kind, "pip install --upgrade islurm (in the environment islurm runs from)")


def detect(executable: str | None = None) -> Install:
    """The install the running Python belongs to."""
    exe = executable or sys.executable
    found = installs.split_generation(exe)
    if found is None:
        kind = "pipx" if f"{os.sep}pipx{os.sep}venvs{os.sep}" in exe else "pip"
        return Install(kind)
    root, name, _ = found
    record = read_json(os.path.join(root, installs.RECORD)) or {}
    return Install(
        kind=str(record.get("kind", "site")),
        root=root,
        prefix=str(record.get("prefix") or os.path.dirname(os.path.dirname(root))),
        python=str(record.get("python") or sys.executable),
        generation=name,
    )


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def gen_dir(root: str, name: str) -> str:
    return os.path.join(root, installs.GENERATIONS, name)


def marker(root: str, name: str) -> dict[str, Any] | None:
    """A generation's marker: present only once it was built completely and passed its
    self-test; a directory without one is never switched to."""
    return read_json(os.path.join(gen_dir(root, name), installs.MARKER))


def write_marker(root: str, name: str, info: dict[str, Any]) -> None:
    path = os.path.join(gen_dir(root, name), installs.MARKER)
    write_text_atomic(path, json.dumps(info, indent=1, sort_keys=True) + "\n", 0o600)
    _fsync_dir(gen_dir(root, name))


def link(root: str, which: str) -> str | None:
    """The generation name `current` / `previous` points at (None if unset)."""
    try:
        target = os.readlink(os.path.join(root, which))
    except OSError:
        return None
    return os.path.basename(target.rstrip(os.sep))


def switch(root: str, which: str, name: str) -> None:
    """Point `which` at generation `name` by rename(2): readers see the old or the new link,
    never none. Refuses a generation without its marker."""
    if marker(root, name) is None:
        raise ValueError(f"generation {name} is incomplete (no {installs.MARKER}): not switched")
    tmp = os.path.join(root, f".{which}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.join(installs.GENERATIONS, name), tmp)
    os.replace(tmp, os.path.join(root, which))
    _fsync_dir(root)


def names(root: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(root, installs.GENERATIONS)))
    except FileNotFoundError:
        return []


def new_name(version: str) -> str:
    """A fresh generation name: the version and the build time (UTC), sortable."""
    return f"{version}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def in_use(root: str, proc: str = "/proc") -> set[str]:
    """The generations some process runs from: its executable, working directory or a word
    of its command line lies inside one. (A venv's python is a symlink to the base
    interpreter, so /proc/PID/exe rarely names it; the command line does: a script's #! line
    is its generation's own python, and the kernel puts that first.)"""
    bases = {os.path.join(p, installs.GENERATIONS) + os.sep for p in (root, os.path.realpath(root))}
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        words: list[str] = []
        with contextlib.suppress(OSError), open(os.path.join(proc, pid, "cmdline"), "rb") as f:
            words = f.read().decode(errors="replace").split("\0")
        for link_name in ("exe", "cwd"):
            with contextlib.suppress(OSError):  # another user's process: EACCES
                words.append(os.readlink(os.path.join(proc, pid, link_name)) + os.sep)
        for word in words:
            for base in bases:
                if word.startswith(base):
                    found.add(word[len(base) :].split(os.sep, 1)[0])
    found.discard("")
    return found


def prune(root: str, keep: tuple[str | None, ...]) -> list[str]:
    """Remove every generation but `keep` (current and previous) and those a process still
    runs from (a shim of an open session, a daemon not yet handed over: removing its files
    would break it); incomplete ones included. Called with the update lock held, so nothing
    is being built meanwhile. A generation kept for being in use goes at a later prune."""
    removed = []
    stale = [name for name in names(root) if name not in keep]
    busy = in_use(root) if stale else set()
    for name in stale:
        if name not in busy:
            shutil.rmtree(gen_dir(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def remove(root: str, name: str) -> None:
    shutil.rmtree(gen_dir(root, name), ignore_errors=True)


def link_commands(root: str, prefix: str) -> None:
    """<prefix>/bin/<command> -> <root>/current/venv/bin/<command>, each by rename."""
    bindir = os.path.join(prefix, "bin")
    os.makedirs(bindir, exist_ok=True)
    for cmd in COMMANDS:
        tmp = os.path.join(bindir, f".{cmd}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.join(root, installs.CURRENT, "venv", "bin", cmd), tmp)
        os.replace(tmp, os.path.join(bindir, cmd))
    # islurm 0.1's layout had the venv at <root>/venv; keep that path working for its users.
    legacy = os.path.join(root, "venv")
    if os.path.isdir(legacy) and not os.path.islink(legacy):
        shutil.rmtree(legacy, ignore_errors=True)
    if not os.path.lexists(legacy):
        os.symlink(os.path.join(installs.CURRENT, "venv"), legacy)


def write_record(root: str, kind: str, prefix: str, python: str) -> None:
    record = {"format": 1, "kind": kind, "prefix": prefix, "python": python}
    write_text_atomic(
        os.path.join(root, installs.RECORD), json.dumps(record, indent=1) + "\n", 0o644
    )


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
