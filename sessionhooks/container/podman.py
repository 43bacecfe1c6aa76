"""Rootless podman: a rootfs directory, a rootfs tarball (extracted per job) or an OCI
reference. Everything podman keeps (storage, run state, the pause process's namespace) lives
in the job's node-local work dir, so removing that dir after `stop` leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time

from islurm.sessionhooks.container.base import (
    SESSION_VARS,
    ContainerError,
    ContainerSpec,
    find_binary,
    run,
)

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz")
#: The container's one long-lived process: POSIX sh, as every image has /bin/sh.
KEEPALIVE = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'


def image_kind(image: str) -> str:
    """'rootfs' (a directory), 'tarball' (a rootfs archive) or 'oci' (anything podman takes)."""
    if os.path.isdir(image):
        return "rootfs"
    if image.endswith(TARBALL_SUFFIXES) and os.path.isfile(image):
        return "tarball"
    return "oci"


class Podman:
    name = "podman"

    def __init__(self, spec: ContainerSpec, binary: str | None = None) -> None:
        self.spec = spec
        self._binary = binary
        self.root = os.path.join(spec.workdir, "podman")
        self.kind = image_kind(spec.image)
        self.rootfs = spec.image if self.kind == "rootfs" else os.path.join(spec.workdir, "rootfs")

    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_binary(["podman"], "podman")
        return self._binary

    def environment(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": os.path.join(self.root, "xdg")}

    def global_args(self) -> list[str]:
        """Job-local storage and state; cgroupfs and runc work in a Slurm job without systemd
        (crun fails on hybrid cgroup hosts), vfs needs no fuse-overlayfs."""
        args = [
            self.binary(),
            "--root",
            os.path.join(self.root, "storage"),
            "--runroot",
            os.path.join(self.root, "run"),
            "--tmpdir",
            os.path.join(self.root, "tmp"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]
        runc = os.environ.get("ISLURM_PODMAN_RUNTIME", "runc")
        if runc:
            args += ["--runtime", runc]
        return args

    def run_argv(self) -> list[str]:
        s = self.spec
        argv = [
            *self.global_args(),
            "run",
            "--detach",
            "--name",
            s.name,
            # The user is the user inside: no root remap (OpenSSH tools refuse remapped ids).
            "--userns=keep-id",
            "--user",
            f"{s.uid}:{s.gid}",
            "--network=host",
            "--security-opt",
            "label=disable",
            "--workdir",
            s.home,
            "--env",
            f"HOME={s.home}",
        ]
        for path in s.bind_paths():
            argv += ["--volume", f"{path}:{path}"]
        for key, value in sorted(s.env.items()):
            argv += ["--env", f"{key}={value}"]
        if self.kind == "oci":
            argv.append(s.image)
        else:
            argv += ["--rootfs", self.rootfs]
        return [*argv, "/bin/sh", "-c", KEEPALIVE]

    def exec_argv(self, tty: bool) -> list[str]:
        s = self.spec
        argv = [*self.global_args(), "exec", "--interactive"]
        if tty:
            argv.append("--tty")
        argv += ["--user", f"{s.uid}:{s.gid}", "--workdir", s.home]
        for var in SESSION_VARS:
            argv += ["--env", var]  # no value: podman copies it from the session, if set
        return [*argv, s.name]

    def prepare(self) -> None:
        for sub in ("xdg", "tmp"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        if self.kind == "tarball":
            os.makedirs(self.rootfs, mode=0o700, exist_ok=True)
            # Device nodes cannot be made by a user, and podman mounts its own /dev.
            run(["tar", "-x", "-f", self.spec.image, "-C", self.rootfs, "--exclude=./dev/*"])

    def start(self) -> None:
        run(self.run_argv(), env=self.environment())

    def stop(self) -> None:
        """Remove the container, the storage (its files belong to the user's sub-ids: only
        `podman unshare` may delete them) and the pause process that holds the namespace."""
        env = self.environment()
        pause = self._pause_pid()  # its pid file lives in the tmp dir removed below
        with contextlib.suppress(ContainerError):
            run([*self.global_args(), "rm", "--force", "--time", "0", self.spec.name], env=env)
        targets = [os.path.join(self.root, d) for d in ("storage", "run", "tmp")]
        if self.kind == "tarball":
            targets.append(self.rootfs)
        with contextlib.suppress(ContainerError):
            run([*self.global_args(), "unshare", "rm", "-rf", *targets], env=env)
        if pause is not None:
            _kill(pause)

    def _pause_pid(self) -> int | None:
        """The 'podman pause' process holding the job's user namespace (its pid file is
        job-local), if it is alive, ours, and podman's."""
        for pidfile in (
            os.path.join(self.root, "tmp", "pause.pid"),
            os.path.join(self.root, "xdg", "libpod", "tmp", "pause.pid"),
        ):
            try:
                with open(pidfile, encoding="ascii") as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                    comm = f.read().strip()
                if comm.startswith("podman") and os.stat(f"/proc/{pid}").st_uid == os.getuid():
                    return pid
            except (OSError, ValueError):
                continue
        return None

    def describe(self) -> str:
        return " ".join(shlex.quote(a) for a in self.run_argv())


def _kill(pid: int) -> None:
    """SIGKILL, the only signal the pause process heeds; wait briefly for it to go."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.02)
