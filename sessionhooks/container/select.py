"""Which adapter runs an image: the configured runtime, else the image's kind."""

from __future__ import annotations

from islurm.sessionhooks.container.apptainer import Apptainer
from islurm.sessionhooks.container.base import ContainerError, ContainerSpec, Runtime
from islurm.sessionhooks.container.enroot import Enroot
from islurm.sessionhooks.container.podman import Podman

RUNTIMES = ("enroot", "apptainer", "singularity", "podman")


def runtime_name(image: str, configured: str = "") -> str:
    """enroot for `.sqsh`, apptainer for `.sif`, podman for OCI images and directories."""
    if configured:
        if configured not in RUNTIMES:
            raise ContainerError(f"unknown container runtime {configured!r}; known: {RUNTIMES}")
        return "apptainer" if configured == "singularity" else configured
    if image.endswith((".sqsh", ".squashfs")):
        return "enroot"
    if image.endswith(".sif"):
        return "apptainer"
    return "podman"


def runtime_for(spec: ContainerSpec, configured: str = "") -> Runtime:
    name = runtime_name(spec.image, configured)
    if name == "enroot":
        return Enroot(spec)
    if name == "apptainer":
        return Apptainer(spec)
    return Podman(spec)
