"""The layout of an install islurm manages itself (stdlib only: the shim uses it):

    <root>/install.json                 how it was installed (the install record)
    <root>/generations/<name>/venv      one complete venv per generation
    <root>/generations/<name>/generation.json   written last, after its self-test passed
    <root>/current -> generations/<name>   switched by rename(2); `previous` likewise
    <prefix>/bin/<command> -> <root>/current/venv/bin/<command>

with <root> = <prefix>/share/islurm. Programs refer to themselves through `current`, so the
next start after a switch (a shim starting islurmd, ssh running the shim) runs the new one."""

from __future__ import annotations

import os

RECORD = "install.json"
GENERATIONS = "generations"
MARKER = "generation.json"
CURRENT = "current"
PREVIOUS = "previous"


def split_generation(path: str) -> tuple[str, str, str] | None:
    """(root, generation name, rest) when `path` lies inside <root>/generations/<name>/."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == GENERATIONS:
            root = os.sep.join(parts[:i]) or os.sep
            if os.path.isfile(os.path.join(root, RECORD)):
                return root, parts[i + 1], os.sep.join(parts[i + 2 :])
    return None


def through_current(path: str) -> str:
    """`path` inside a managed generation, as seen through the `current` link (so it keeps
    working after an update); any other path as it is."""
    found = split_generation(path)
    if found is None:
        return path
    root, _, rest = found
    stable = os.path.join(root, CURRENT, rest)
    return stable if os.path.exists(stable) else path


def shim_command() -> tuple[str, ...]:
    """The fastest way to start this install's shim: no site import, straight to its file;
    through `current` in a managed install, so ssh runs the updated shim after an update."""
    import sys

    import islurm.proxyshim.launch as shim

    return (
        through_current(os.path.abspath(sys.executable)),
        "-I",
        "-S",
        through_current(os.path.abspath(shim.__file__)),
    )
