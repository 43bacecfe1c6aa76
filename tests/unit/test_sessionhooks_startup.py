"""The session hook's start-up (sessionhooks/launch.py, main.py): run as a file under `-I -S`
it finds its package, parses the job script's argv as argparse would without importing
argparse, and loads neither the modules a plain job's start does without (30 ms of it) nor the
container layer, which only a job with an image needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from islurm.daemon.slurm.submission import HookCommand
from islurm.sessionhooks import args as hookargs

DEV = Path(__file__).resolve().parents[2] / ".dev"
SCRIPT = DEV / "islurm" / "sessionhooks" / "launch.py"
#: what a job without an image must not import on its way to "sshd listening"
NOT_AT_START = (
    "argparse",
    "contextlib",
    "dataclasses",
    "enum",
    "inspect",
    "json",
    "re",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "tempfile",
    "typing",
)


@pytest.mark.parametrize(
    "hook_command",
    [
        HookCommand(python="py", state_dir="/s", port_lease=0, profile="cpu"),
        HookCommand(
            python="py",
            state_dir="/a b/-x",
            port_lease=20123,
            profile="gpu-intensive",
            walltime_warnings=(600.0, 90.5),
            time_limit=3600,
            premade_key=True,
            image="/img/u.sqsh",
            runtime="enroot",
            binds=("/project", "/scratch dir"),
        ),
    ],
)
def test_the_job_scripts_argv_parses_as_argparse_parses_it(hook_command: HookCommand) -> None:
    argv = hook_command.argv()[3:]  # after python -m islurm.sessionhooks.main
    fast = hookargs.fast_args(argv)
    assert fast is not None
    assert vars(fast) == vars(hookargs.parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["--profile", "cpu"],  # --state-dir is required
        ["--state-dir", "/s", "--profile", "cpu", "--port-lease", "x"],
        ["--state-dir", "/s", "--profile", "cpu", "--nosuch", "1"],
        ["--state-dir", "/s", "--prof", "cpu"],  # argparse's abbreviations
        ["--state-dir=/s", "--profile", "cpu"],
        ["--state-dir", "/s", "--profile", "cpu", "--warn-before", "-5"],
        ["--state-dir", "/s", "--profile"],
        ["--help"],
    ],
)
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert hookargs.fast_args(argv) is None


def test_run_as_a_file_without_site_it_loads_only_what_a_plain_job_needs() -> None:
    probe = (
        f"import sys; sys.argv = [{str(SCRIPT)!r}]; "
        f"sys.path.insert(0, {str(DEV)!r}); import islurm.sessionhooks.main; "
        f"print(sorted(m for m in sys.modules if m in {NOT_AT_START!r} or '.container.' in m))"
    )
    r = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['islurm.sessionhooks.container.errors']"
    # As the job runs it: the file itself, no site-packages; outside a job it says so.
    r = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--state-dir", "/nonexistent", "--profile", "c"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "SLURM_JOB_ID is not set" in r.stdout + r.stderr, r


def test_imported_the_launcher_does_nothing() -> None:
    """islurmd --selftest imports every module of a new generation."""
    r = subprocess.run(
        [sys.executable, "-c", "import islurm.sessionhooks.launch; print('imported')"],
        capture_output=True,
        text=True,
    )
    assert (r.returncode, r.stdout) == (0, "imported\n"), r.stderr
