"""Modules per profile: the hook's real bash against a stand-in module system (a `module`
shell function in an init file), and the environment change it hands to sshd."""

from __future__ import annotations

from pathlib import Path

import pytest

from islurm.sessionhooks import modules
from islurm.sessionhooks.sshd import SshdConfig

# A module system in 10 lines: `module load X` sets X_LOADED and extends PATH; an unknown
# module fails with its own words, as Lmod and Environment Modules do.
FAKE_INIT = r"""
module() {
  case "$1" in
    load) shift
      for m in "$@"; do
        case "$m" in
          good/*) export GOOD_LOADED="$m" PATH="/opt/good/bin:$PATH" LOADEDMODULES="$m" ;;
          *) echo "ERROR: Unable to locate a modulefile for '$m'" >&2; return 1 ;;
        esac
      done ;;
    is-loaded) [ "$LOADEDMODULES" = "$2" ] ;;
    list) echo "Currently Loaded Modulefiles: $LOADEDMODULES" >&2 ;;
  esac
}
"""


@pytest.fixture
def init(tmp_path: Path) -> tuple[str, ...]:
    path = tmp_path / "init with space;$(x).sh"
    path.write_text(FAKE_INIT)
    return ("/nonexistent/init", str(path))


def test_loaded_modules_change_the_sessions_environment(
    tmp_path: Path, init: tuple[str, ...]
) -> None:
    change = modules.load(["good/1.0"], str(tmp_path), init)
    assert change["GOOD_LOADED"] == "good/1.0"
    assert change["PATH"].startswith("/opt/good/bin:")
    assert change["BASH_ENV"] == str(tmp_path / "module-env.sh")
    assert change["PROMPT_COMMAND"] == f". {tmp_path}/module-env.sh"
    script = Path(change["BASH_ENV"]).read_text()
    assert "module()" in script.replace(" ()", "()") and "export GOOD_LOADED=good/1.0" in script
    assert not [k for k in change if k.startswith("ISLURM_MODULE")]
    assert [k for k in change if k.startswith("BASH_FUNC_")] == ["BASH_FUNC_module%%"]
    assert "SHLVL" not in change and "PWD" not in change
    line = SshdConfig(port=1, host_key="/k", user="u", env=change).render().splitlines()[-1]
    assert line.startswith("SetEnv ") and "GOOD_LOADED=good/1.0" in line


def test_a_module_that_does_not_load_fails_with_the_module_systems_words(
    tmp_path: Path, init: tuple[str, ...]
) -> None:
    with pytest.raises(modules.ModuleError) as caught:
        modules.load(["good/1.0", "cuda/99"], str(tmp_path), init)
    assert str(caught.value) == (
        "module load good/1.0 cuda/99 failed: ERROR: Unable to locate a modulefile for 'cuda/99'"
    )


def test_no_module_system_is_said_and_no_modules_asks_nothing(tmp_path: Path) -> None:
    assert modules.load([], str(tmp_path), ("/nonexistent",)) == {}
    with pytest.raises(modules.ModuleError, match="no module system found"):
        modules.load(["good/1.0"], str(tmp_path), ("/nonexistent/a", "/nonexistent/b"))


def test_environment_change_keeps_what_the_load_did_and_the_module_systems_state() -> None:
    before = {"A": "1", "PATH": "/bin", "SHLVL": "1", "LMOD_CMD": "/l", "MODULEPATH": "/m"}
    after = {**before, "PATH": "/x:/bin", "SHLVL": "2", "B": "2", "BASH_FUNC_ml%%": "() {}"}
    assert modules.environment_change(before, after) == {
        "PATH": "/x:/bin",
        "B": "2",
        "LMOD_CMD": "/l",
        "MODULEPATH": "/m",
    }


def test_a_session_shell_gets_the_module_environment_back_after_its_profile(
    tmp_path: Path, init: tuple[str, ...]
) -> None:
    """What a login shell does: its profile resets PATH and drops the function; the job
    file (PROMPT_COMMAND, or BASH_ENV) brings both back."""
    import subprocess

    change = modules.load(["good/1.0"], str(tmp_path), init)
    script = f"PATH=/usr/bin:/bin; unset -f module; . {change['BASH_ENV']}; echo $PATH; module list"
    out = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("/opt/good/bin:") and "good/1.0" in out.stderr
    # bash run by sshd for `ssh host CMD` reads no BASH_ENV: the exported stub loads `module`
    env = {"PATH": "/usr/bin:/bin", "BASH_FUNC_module%%": change["BASH_FUNC_module%%"]}
    out = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "module list; type -t module"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert "good/1.0" in out.stderr and out.stdout == "function\n"
    line = SshdConfig(port=1, host_key="/k", user="u", env=change).render().splitlines()[-1]
    assert '"BASH_FUNC_module%%=() { unset -f module ml;' in line
