"""Environment modules (Lmod or Environment Modules) loaded once at the job's start; every
session then gets the resulting environment through the job sshd's SetEnv line.

Stdlib only. The one place that runs the module system: a non-login bash that sources the
module system's init file, loads the modules, checks each one is loaded, and prints its
environment before and after (NUL-separated), from which the change is taken."""

from __future__ import annotations

import os
import subprocess

#: where Lmod and Environment Modules put their bash init (Debian, RHEL, source installs)
INIT_FILES = (
    "/etc/profile.d/lmod.sh",
    "/usr/share/lmod/lmod/init/bash",
    "/etc/profile.d/modules.sh",
    "/usr/share/modules/init/bash",
)
LOAD_TIMEOUT = 120.0
MARK = "--islurm-modules-loaded--"
#: bash's own bookkeeping and the identity sshd sets: never a module's doing
_SHELL_VARS = {"PWD", "OLDPWD", "SHLVL", "_", "BASH_ENV", "USER", "LOGNAME", "HOME"}

_SCRIPT = r"""
env -0
printf '%s\0' "$ISLURM_MODULE_MARK"
if ! type module >/dev/null 2>&1; then
  while IFS= read -r f; do
    if [ -r "$f" ]; then . "$f"; break; fi
  done <<< "$ISLURM_MODULE_INIT"
fi
if ! type module >/dev/null 2>&1; then
  echo "no module system found (looked for:" $ISLURM_MODULE_INIT")" >&2
  exit 3
fi
module load "$@" || exit 4
for m in "$@"; do
  module is-loaded "$m" || { echo "module $m is not loaded after 'module load'" >&2; exit 5; }
done
module list >&2 || true
declare -f > "$ISLURM_MODULE_FUNCTION" || true
env -0
"""


class ModuleError(RuntimeError):
    """A module did not load; carries the module system's own words."""


def environment_change(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Variables the load set or changed (bash functions and bash's own variables left out)."""
    return {
        k: v
        for k, v in after.items()
        if before.get(k) != v and k not in _SHELL_VARS and not k.startswith("BASH_FUNC_")
    }


def _environ(blob: bytes) -> dict[str, str]:
    out = {}
    for item in blob.split(b"\0"):
        key, eq, value = item.decode("utf-8", "replace").partition("=")
        if eq and key:
            out[key] = value
    return out


def load(
    modules: list[str], jobdir: str, init_files: tuple[str, ...] = INIT_FILES
) -> dict[str, str]:
    """Load `modules`; return what every session's environment gains, including BASH_ENV
    (a job-local file defining `module`, so that `ssh host 'module list'` works)."""
    if not modules:
        return {}
    function_file = os.path.join(jobdir, "module-function.sh")
    env = dict(os.environ)
    env.update(
        ISLURM_MODULE_INIT="\n".join(init_files),
        ISLURM_MODULE_MARK=MARK,
        ISLURM_MODULE_FUNCTION=function_file,
    )
    argv = ["bash", "--noprofile", "--norc", "-c", _SCRIPT, "islurm-modules", *modules]
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, timeout=LOAD_TIMEOUT, check=False, cwd=jobdir
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModuleError(f"module load {' '.join(modules)} failed: {exc}") from None
    # The module system's own words, on one line (its messages are laid out for a terminal)
    said = " ".join(proc.stderr.decode("utf-8", "replace").split())
    if proc.returncode != 0:
        raise ModuleError(f"module load {' '.join(modules)} failed: {said or proc.returncode}")
    before, _, after = proc.stdout.partition(b"\0" + MARK.encode() + b"\0")
    change = environment_change(_environ(before), _environ(after))
    for key in ("ISLURM_MODULE_INIT", "ISLURM_MODULE_MARK", "ISLURM_MODULE_FUNCTION"):
        change.pop(key, None)
    if os.path.exists(function_file) and os.path.getsize(function_file):
        change["BASH_ENV"] = function_file  # non-interactive shells (ssh host CMD) read it
    return change
