"""Apptainer / SingularityCE (`.sif` images and sandboxes). Per their manuals (apptainer
instance start, exec, instance stop): `instance start [opts] IMAGE NAME` runs the container in
the background, `exec instance://NAME CMD` enters it. Apptainer runs as the calling user, in
the host network, and passes the caller's environment into `exec` unless told otherwise."""

from __future__ import annotations

import contextlib
import os

from islurm.sessionhooks.container.base import ContainerError, ContainerSpec, find_binary, run


class Apptainer:
    name = "apptainer"

    def __init__(self, spec: ContainerSpec, binary: str | None = None) -> None:
        self.spec = spec
        self._binary = binary

    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_binary(["apptainer", "singularity"], "apptainer (or singularity)")
        return self._binary

    def environment(self) -> dict[str, str]:
        # Its image cache and temp files go into the job's work dir, not the user's home.
        return {
            "APPTAINER_CACHEDIR": os.path.join(self.spec.workdir, "apptainer", "cache"),
            "APPTAINER_TMPDIR": os.path.join(self.spec.workdir, "apptainer", "tmp"),
        }

    def start_argv(self) -> list[str]:
        s = self.spec
        argv = [self.binary(), "instance", "start"]
        for path in s.bind_paths():
            argv += ["--bind", f"{path}:{path}"]
        for key, value in sorted(s.env.items()):
            argv += ["--env", f"{key}={value}"]
        return [*argv, s.image, s.name]

    def exec_argv(self, tty: bool) -> list[str]:
        return [self.binary(), "exec", "--pwd", self.spec.home, f"instance://{self.spec.name}"]

    def prepare(self) -> None:
        for sub in ("cache", "tmp"):
            os.makedirs(os.path.join(self.spec.workdir, "apptainer", sub), 0o700, exist_ok=True)

    def start(self) -> None:
        run(self.start_argv(), env=self.environment())

    def stop(self) -> None:
        env = self.environment()
        try:
            run([self.binary(), "instance", "stop", self.spec.name], env=env, timeout=30)
        except ContainerError:
            with contextlib.suppress(ContainerError):
                run([self.binary(), "instance", "stop", "--force", self.spec.name], env=env)
