"""The job's one container, from the hook's side: check, prepare, start, write the wrapper
sshd forces every session through; stop and remove it when the job ends."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence

from islurm.sessionhooks.container import arch, enter
from islurm.sessionhooks.container.base import ContainerError, ContainerSpec, Runtime, run
from islurm.sessionhooks.container.select import runtime_for


class JobContainer:
    def __init__(
        self,
        spec: ContainerSpec,
        runtime: str,
        node: str,
        shell: str,
        say: Callable[[str], None],
    ) -> None:
        self.spec, self.node, self.shell, self.say = spec, node, shell, say
        self.runtime: Runtime = runtime_for(spec, runtime)
        self.started = False
        self.wrapper = os.path.join(spec.workdir, "enter.sh")

    def check_image(self) -> None:
        """Missing or unreadable image: fail with the path and the reason."""
        image = self.spec.image
        if not image.startswith("/"):
            return  # a reference the runtime resolves (e.g. docker://...)
        if not os.path.exists(image):
            raise ContainerError(f"image {image} does not exist on node {self.node}")
        if not os.access(image, os.R_OK):
            raise ContainerError(f"image {image} is not readable on node {self.node}")

    def start(self) -> str:
        """Bring the container up; returns the wrapper's path for sshd's ForceCommand."""
        self.check_image()
        self.runtime.binary()
        rootfs = getattr(self.runtime, "rootfs", None)
        found = arch.image_arch(self.spec.image, rootfs if self._unpacked(rootfs) else None)
        refusal = arch.mismatch(self.spec.image, found, self.node, os.uname().machine)
        if refusal:
            raise ContainerError(refusal)
        self.started = True  # from here on, stop() has something to remove
        self.runtime.prepare()
        if found is None:  # a tarball is unpacked now: judge it before anything starts
            found = arch.image_arch(self.spec.image, rootfs if self._unpacked(rootfs) else None)
            refusal = arch.mismatch(self.spec.image, found, self.node, os.uname().machine)
            if refusal:
                raise ContainerError(refusal)
        self.runtime.start()
        self.say(f"container {self.spec.name} started ({self.runtime.name}, {self.spec.image})")
        self._write_wrapper(self._image_sftp_server())
        return self.wrapper

    @staticmethod
    def _unpacked(rootfs: object) -> bool:
        return isinstance(rootfs, str) and os.path.isdir(rootfs)

    def _image_sftp_server(self) -> str | None:
        argv = [*self.runtime.exec_argv(False), "/bin/sh", "-c", enter.FIND_SFTP]
        try:
            found = run(argv, env=self.runtime.environment(), timeout=60).strip()
        except ContainerError:
            return None
        return found or None

    def _write_wrapper(self, sftp_in_image: str | None) -> None:
        on_node = next((p for p in enter.SFTP_SERVERS if os.access(p, os.X_OK)), None)
        text = enter.render(
            self.spec.job_id,
            self.runtime.environment(),
            self.runtime.exec_argv(True),
            self.runtime.exec_argv(False),
            sftp_in_image,
            on_node,
            self.shell,
        )
        fd = os.open(self.wrapper, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)

    def stop(self) -> None:
        if self.started:
            self.started = False
            with contextlib.suppress(ContainerError, OSError):
                self.runtime.stop()
                self.say(f"container {self.spec.name} removed")


def job_container(
    job_id: str,
    image: str,
    runtime: str,
    binds: Sequence[str],
    workdir: str,
    env: Mapping[str, str],
    node: str,
    say: Callable[[str], None],
) -> JobContainer:
    import pwd

    entry = pwd.getpwuid(os.getuid())
    spec = ContainerSpec(
        job_id=job_id,
        image=image,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=entry.pw_dir,
        workdir=workdir,
        env=env,
        binds=tuple(binds),
    )
    return JobContainer(spec, runtime, node, entry.pw_shell, say)
