"""doctor's checks for profiles that name a container image. They run on the LOGIN node, with
its runtime: a compute node may have another (or none); each check says so. The container is
started through the hook's own code (sessionhooks/container), the one runtime interface."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable

from islurm.config.settings import Profile, Settings
from islurm.daemon.ctl.doctor_checks import Check, fail, ok
from islurm.sessionhooks.container import arch
from islurm.sessionhooks.container.base import ContainerError, run
from islurm.sessionhooks.container.job import JobContainer, job_container
from islurm.sessionhooks.container.select import runtime_name

WHERE = "on this login node"


def check_image_profile(
    settings: Settings, profile: Profile, quick: bool, say: Callable[[str], None]
) -> list[Check]:
    """Runtime installed, image readable and of this machine's architecture, and (unless
    quick) a throw-away container that runs `true`."""
    name, image = f"container {profile.name}", profile.container
    out: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="islurm-doctor-") as workdir:
        container = _container(settings, profile, workdir, say)
        try:
            binary = container.runtime.binary()
        except ContainerError as exc:
            fix = f"install {runtime_name(image, profile.runtime)} (the compute nodes need it)"
            return [fail(f"{name}: runtime", f"{exc} ({WHERE})", fix)]
        out.append(ok(f"{name}: runtime", f"{container.runtime.name} at {binary} ({WHERE})"))
        if image.startswith("/"):
            try:
                if os.path.isdir(image):
                    os.listdir(image)  # a rootfs directory
                else:
                    with open(image, "rb"):
                        pass
            except OSError as exc:
                why = exc.strerror or str(exc)
                fix = "fix the path or its permissions"
                return [*out, fail(f"{name}: image", f"{image}: {why}", fix)]
        found = arch.image_arch(image, image if os.path.isdir(image) else None)
        machine = os.uname().machine
        refusal = arch.mismatch(image, found, socket.gethostname(), machine)
        if refusal:
            fix = "use an image built for the nodes' architecture"
            return [*out, fail(f"{name}: image", refusal, fix)]
        known = f"built for {found}" if found else "architecture judged when it is unpacked"
        out.append(ok(f"{name}: image", f"{image} is readable, {known}"))
        if quick:
            return out
        out.append(_starts(name, container))
    return out


def _container(
    settings: Settings, profile: Profile, workdir: str, say: Callable[[str], None]
) -> JobContainer:
    c = settings.containers
    return job_container(
        f"doctor-{os.getpid()}",
        profile.container,
        profile.runtime,
        (*c.project_roots, *c.binds),
        workdir,
        {},
        socket.gethostname(),
        say,
    )


def _starts(name: str, container: JobContainer) -> Check:
    """Start it as a job would, run `true` inside, remove it."""
    try:
        container.start()
        run([*container.runtime.exec_argv(False), "true"], env=container.runtime.environment())
    except ContainerError as exc:
        fix = "see the message; the job's log (~/.local/state/islurm/log) says the same on a node"
        return fail(f"{name}: starts", f"{exc} ({WHERE})", fix)
    finally:
        container.stop()
    return ok(f"{name}: starts", f"a container ran `true` ({WHERE}; nodes may differ)")
