"""What islurm submits (daemon/slurm/submission.py): sbatch options and the job script.

The script is run for real by `sh`, with a stand-in "python" that prints its argv
NUL-separated, so every argument is proven to arrive verbatim."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from islurm.config.settings import Profile
from islurm.daemon.slurm.parse import job_name
from islurm.daemon.slurm.submission import HookCommand, job_script, sbatch_options

HOSTILE = "/tmp/a b;$(touch x)'\""
ECHO_ARGV = '#!/bin/sh\nprintf \'%s\\0\' "$0" "$@"\n'


def stand_in_python(folder: Path) -> str:
    """An executable at a hostile path that prints its own path and arguments."""
    folder.mkdir(parents=True)
    path = folder / "python3 $(id);`id`"
    path.write_text(ECHO_ARGV, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run_script(tmp_path: Path, hook: HookCommand) -> list[str]:
    script = tmp_path / "job.sh"
    script.write_text(job_script(hook), encoding="utf-8")
    syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    work = tmp_path / "cwd"
    work.mkdir()
    ran = subprocess.run(["sh", str(script)], capture_output=True, cwd=work, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert list(work.iterdir()) == []  # nothing in the values was executed
    return ran.stdout.decode().split("\0")[:-1]


@pytest.mark.parametrize(
    "state_dir",
    [HOSTILE, "/home/o'brien/.local/state/islurm", "/tmp/new\nline", "/tmp/-dash", "/tmp/%j"],
)
def test_job_script_passes_every_argument_verbatim(tmp_path: Path, state_dir: str) -> None:
    python = stand_in_python(tmp_path / "bin dir;'\"")
    hook = HookCommand(
        python=python,
        state_dir=state_dir,
        port_lease=20123,
        profile="gpu-intensive",
        walltime_warnings=(600.0, 90.5),
    )
    assert run_script(tmp_path, hook) == [
        python,
        "-m",
        "islurm.sessionhooks.main",
        "--state-dir",
        state_dir,
        "--port-lease",
        "20123",
        "--profile",
        "gpu-intensive",
        "--warn-before",
        "600",
        "--warn-before",
        "90.5",
    ]


def test_job_script_shape(tmp_path: Path) -> None:
    hook = HookCommand(python="/usr/bin/python3", state_dir=HOSTILE, port_lease=1, profile="cpu")
    text = job_script(hook)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[-1].startswith("exec /usr/bin/python3 -m islurm.sessionhooks.main ")
    assert text.endswith("\n")
    assert "--ca-dir" not in text  # no CA: the option is left out, not passed empty
    assert "--warn-before" not in text


def test_hook_argv_without_optional_parts() -> None:
    hook = HookCommand(python="py", state_dir="/s", port_lease=0, profile="cpu")
    assert hook.argv() == [
        "py", "-m", "islurm.sessionhooks.main", "--state-dir", "/s", "--port-lease", "0",
        "--profile", "cpu",
    ]  # fmt: skip


def test_hook_run_as_a_file_without_site(tmp_path: Path) -> None:
    python = stand_in_python(tmp_path / "bin")
    script = "/opt/my venv/lib/python3.11/site-packages/islurm/sessionhooks/launch.py"
    hook = HookCommand(python=python, state_dir="/s", port_lease=3, profile="cpu", script=script)
    assert run_script(tmp_path, hook) == [
        python, "-I", "-S", script, "--state-dir", "/s", "--port-lease", "3", "--profile", "cpu",
    ]  # fmt: skip


def test_the_daemons_hook_script_is_this_installs_sessionhooks_launcher() -> None:
    import islurm.sessionhooks.main as hook
    from islurm.daemon import app

    assert os.path.basename(app.HOOK_SCRIPT) == "launch.py"
    assert os.path.samefile(os.path.dirname(app.HOOK_SCRIPT), os.path.dirname(hook.__file__))


def test_sbatch_options_put_islurms_identity_after_the_profiles_options() -> None:
    profile = Profile(
        name="gpu",
        sbatch=("--partition=gpu", "--job-name=mine", "--comment=x", "--dependency=afterok:1"),
    )
    opts = sbatch_options(profile, log_path=HOSTILE + "/job-%j.log", workdir=HOSTILE)
    assert opts == [
        f"--output={HOSTILE}/job-%j.log",
        f"--chdir={HOSTILE}",
        "--partition=gpu",
        "--job-name=mine",
        "--comment=x",
        "--dependency=afterok:1",
        "--job-name=islurm-gpu",
        "--comment=islurm:v1:gpu",
        "--dependency=singleton",
        "--no-requeue",
    ]
    # sbatch keeps the last of a repeated option: the identity cannot be overridden
    last = {o.split("=", 1)[0]: o for o in opts}
    assert last["--job-name"] == "--job-name=islurm-gpu"
    assert last["--comment"] == "--comment=islurm:v1:gpu"
    assert last["--dependency"] == "--dependency=singleton"


def test_extra_options_come_before_the_identity() -> None:
    profile = Profile(name="cpu", sbatch=("--mem=1G",))
    opts = sbatch_options(profile, log_path="/l", workdir="/w", extra=["--test-only;x"])
    assert opts[2:4] == ["--mem=1G", "--test-only;x"]
    assert opts[4] == "--job-name=islurm-cpu"


def test_job_name() -> None:
    assert job_name("development-gpu") == "islurm-development-gpu"


def test_script_does_not_depend_on_the_submitting_shell(tmp_path: Path) -> None:
    # sbatch runs the script with the user's login environment: no IFS or alias tricks apply.
    python = stand_in_python(tmp_path / "bin")
    hook = HookCommand(python=python, state_dir="/a b", port_lease=5, profile="cpu")
    script = tmp_path / "job.sh"
    script.write_text(job_script(hook), encoding="utf-8")
    env = {**os.environ, "IFS": "/", "ENV": str(tmp_path / "nonexistent")}
    ran = subprocess.run(["sh", str(script)], capture_output=True, env=env, timeout=30)
    assert ran.stdout.decode().split("\0")[4] == "/a b"
