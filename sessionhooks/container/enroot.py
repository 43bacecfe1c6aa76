"""NVIDIA enroot (`.sqsh` images). Per enroot's docs (doc/cmd/create.md, start.md, exec.md):
`enroot create --name N IMAGE` unpacks the image, `enroot start` runs the container in the
foreground (no pid namespace: the shell's `$$` is a host pid) and `enroot exec PID CMD` enters
it. enroot keeps the caller's uid unless `--root` is given (we never give it) and shares the
host network. Its data, runtime and cache paths point into the job's work dir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from islurm.sessionhooks.container.base import (
    SESSION_VARS,
    ContainerError,
    ContainerSpec,
    find_binary,
    run,
)
from islurm.sessionhooks.container.podman import KEEPALIVE

START_TIMEOUT = 120.0


class Enroot:
    name = "enroot"

    def __init__(self, spec: ContainerSpec, binary: str | None = None) -> None:
        self.spec = spec
        self._binary = binary
        self.root = os.path.join(spec.workdir, "enroot")
        self.ctl = os.path.join(self.root, "ctl")  # mounted into the container: its pid file
        self.pidfile = os.path.join(self.ctl, "pid")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_binary(["enroot"], "enroot")
        return self._binary

    def environment(self) -> dict[str, str]:
        return {
            "ENROOT_DATA_PATH": os.path.join(self.root, "data"),
            "ENROOT_RUNTIME_PATH": os.path.join(self.root, "run"),
            "ENROOT_CACHE_PATH": os.path.join(self.root, "cache"),
            "ENROOT_TEMP_PATH": os.path.join(self.root, "tmp"),
        }

    def create_argv(self) -> list[str]:
        return [self.binary(), "create", "--name", self.spec.name, self.spec.image]

    def start_argv(self) -> list[str]:
        s = self.spec
        argv = [self.binary(), "start", "--rw"]
        # fstab fields, colon-separated (start.md): source, target, type, options.
        for path in [*s.bind_paths(), self.ctl]:
            argv += ["--mount", f"{path}:{path}:none:x-create=dir,bind"]
        for key, value in sorted({**s.env, "HOME": s.home}.items()):
            argv += ["--env", f"{key}={value}"]
        script = f'echo $$ > "{self.pidfile}"; {KEEPALIVE}'
        return [*argv, s.name, "/bin/sh", "-c", script]

    def exec_argv(self, tty: bool) -> list[str]:
        argv = [self.binary(), "exec"]
        for var in SESSION_VARS:
            argv += ["--env", var]  # KEY alone: the session's value
        return [*argv, str(self.pid or 0)]

    def prepare(self) -> None:
        for sub in ("data", "run", "cache", "tmp", "ctl"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        run(self.create_argv(), env=self.environment())

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.start_argv(),
            env={**os.environ, **self.environment()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError), open(self.pidfile) as f:
                self.pid = int(f.read().strip())
                return
            if self.proc.poll() is not None:
                raise ContainerError(f"enroot start exited {self.proc.returncode}")
            time.sleep(0.05)
        raise ContainerError(f"enroot start: no container after {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ContainerError):
            run([self.binary(), "remove", "--force", self.spec.name], env=self.environment())
