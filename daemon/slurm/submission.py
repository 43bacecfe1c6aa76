"""What islurm submits: the sbatch options and the job script for a profile. Pure."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from islurm.config.settings import Profile
from islurm.daemon.slurm.parse import job_comment, job_name


@dataclass(frozen=True)
class HookCommand:
    """How the job starts the session hook on the compute node."""

    python: str
    state_dir: str
    port_lease: int
    profile: str
    walltime_warnings: Sequence[float] = ()
    time_limit: int | None = None  # seconds, when the profile says (saves the hook a squeue)
    premade_key: bool = False  # islurmd writes the job's signed host key (config/records.py)
    image: str = ""  # the container every session runs in (already the cached copy)
    runtime: str = ""
    binds: Sequence[str] = ()
    modules: Sequence[str] = ()  # environment modules loaded once, before sshd starts
    #: the hook's launch.py, run as a file with `-I -S` (no site import: a faster job start);
    #: empty: `python -m islurm.sessionhooks.main`, which needs the package on Python's path
    script: str = ""

    def argv(self) -> list[str]:
        start = ["-I", "-S", self.script] if self.script else ["-m", "islurm.sessionhooks.main"]
        argv = [
            self.python,
            *start,
            "--state-dir",
            self.state_dir,
            "--port-lease",
            str(self.port_lease),
            "--profile",
            self.profile,
        ]
        for lead in self.walltime_warnings:
            argv += ["--warn-before", f"{lead:g}"]
        if self.time_limit is not None:
            argv += ["--time-limit", str(self.time_limit)]
        if self.premade_key:
            argv.append("--premade-key")
        for module in self.modules:
            argv += ["--module", module]
        if self.image:
            argv += ["--image", self.image]
            if self.runtime:
                argv += ["--runtime", self.runtime]
            for path in self.binds:
                argv += ["--bind", path]
        return argv


def sbatch_options(
    profile: Profile,
    *,
    log_path: str,
    workdir: str,
    extra: Sequence[str] = (),
    image_key: str = "",
) -> list[str]:
    """The argv after `sbatch --parsable` for a profile. The profile's own options come after
    ours except the identity ones, so a profile can override e.g. --output but not the name."""
    opts = [
        f"--output={log_path}",
        f"--chdir={workdir}",
        *profile.sbatch,
        *extra,
        f"--job-name={job_name(profile.name, image_key)}",
        f"--comment={job_comment(profile.name, image_key)}",
        # singleton: two daemons (two login nodes) never run two jobs of one profile and image.
        "--dependency=singleton",
        "--no-requeue",
    ]
    return opts


def job_script(hook: HookCommand) -> str:
    """The batch script, fed to sbatch on stdin. Every value is quoted: nothing is interpreted."""
    command = " ".join(shlex.quote(a) for a in hook.argv())
    return (
        "#!/bin/sh\n"
        "# islurm session job (format v1), written by islurmd: see docs/PROTOCOL.md section 3.\n"
        f"exec {command}\n"
    )
