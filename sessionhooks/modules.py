"""Environment modules (Lmod or Environment Modules) loaded once at the job's start; every
session then gets the resulting environment through the job sshd's SetEnv line, and a job
file (`module-env.sh`: the variables and the `module` function) that re-applies it where a
shell's startup resets it. `module` (and `ml`) reach every bash as exported one-line
functions that source the file first (bash run by sshd for `ssh host CMD` reads ~/.bashrc,
not BASH_ENV); the variables come back through PROMPT_COMMAND before an interactive login
shell's first prompt, after /etc/profile (which
on Debian resets PATH) and the user's own files. A user's ~/.bashrc that sets PROMPT_COMMAND
without keeping the old value loses that last step (the module's PATH then needs `module
reload`).

Stdlib only. The one place that runs the module system: a non-login bash that sources the
module system's init file, loads the modules, checks each one is loaded, and prints its
environment before and after (NUL-separated), from which the change is taken."""

from __future__ import annotations

import os
import re
import shlex
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
#: the module system's own state: sessions need it even when the job's start already had it
#: (sshd starts every session from a clean environment)
_MODULE_STATE = re.compile(
    r"^(LMOD|_?_?LMOD|MODULE|__MODULES_|_LMFILES_|LOADEDMODULES|_ModuleTable)"
)
ENV_FILE = "module-env.sh"
#: the module system's commands, exported to every session as stubs that load the real ones
COMMANDS = ("module", "ml")

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
    """Variables the load set or changed, and the module system's state (bash functions and
    bash's own variables left out)."""
    return {
        k: v
        for k, v in after.items()
        if (before.get(k) != v or _MODULE_STATE.match(k))
        and k not in _SHELL_VARS
        and not k.startswith("BASH_FUNC_")
    }


def stub(name: str, path: str) -> str:
    """An exported bash function (one line, as sshd_config carries it) that defines the
    module system's functions from the job file, then runs the real `name`."""
    names = " ".join(COMMANDS)
    return f'() {{ unset -f {names}; . {shlex.quote(path)}; {name} "$@"; }}'


def env_file(change: dict[str, str], functions: str, path: str) -> str:
    """The job file every bash session sources: the module environment again, then the
    module system's functions (`module`, `ml`)."""
    lines = ["# islurm: the environment this job's modules set (sessionhooks/modules.py)"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(change.items())]
    ours = shlex.quote(f". {shlex.quote(path)}")
    lines += [
        functions,
        f'if [ "${{PROMPT_COMMAND-}}" = {ours} ]; then unset PROMPT_COMMAND; fi',
        "",
    ]
    return "\n".join(lines)


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
    try:
        with open(function_file, encoding="utf-8", errors="replace") as f:
            functions = f.read()
    except FileNotFoundError:
        functions = ""
    path = os.path.join(jobdir, ENV_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(env_file(change, functions, path))
    change["BASH_ENV"] = path  # non-interactive bash not started by sshd reads it first
    for name in COMMANDS:
        if re.search(rf"^{name} \(\)", functions, re.M):
            change[f"BASH_FUNC_{name}%%"] = stub(name, path)
    # an interactive shell runs it before its first prompt, after all its startup files
    change["PROMPT_COMMAND"] = f". {shlex.quote(path)}"
    return change
