"""Which CPU architecture an image is built for, read from its files (no runtime needed).

Names follow `uname -m`. A rootfs (directory) is judged by the ELF header of its /bin/sh, a
SIF file by its global header; other kinds are not known here (None): the runtime judges."""

from __future__ import annotations

import os

#: ELF e_machine -> uname -m
ELF_MACHINES = {
    0x03: "i686",
    0x28: "armv7l",
    0x3E: "x86_64",
    0xB7: "aarch64",
    0x15: "ppc64le",
    0x16: "s390x",
    0xF3: "riscv64",
}
#: SIF global header arch field (offset 45, 3 bytes "NN\0") -> uname -m
SIF_ARCHES = {
    b"01": "i686",
    b"02": "x86_64",
    b"03": "armv7l",
    b"04": "aarch64",
    b"06": "ppc64le",
    b"11": "s390x",
}
SIF_MAGIC = b"SIF_MAGIC"
_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "i586": "i686"}


def normalise(machine: str) -> str:
    machine = _ALIASES.get(machine, machine)
    return "armv7l" if machine.startswith("armv") else machine


def elf_machine(header: bytes) -> str | None:
    """The architecture an ELF header says, or None if it is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    code = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(code, f"elf-machine-{code:#x}")


def resolve_in_root(root: str, path: str, depth: int = 0) -> str:
    """`path` inside the rootfs `root`, following symlinks as the container would see them
    (an absolute link target is relative to the rootfs, not the host)."""
    if depth > 16:
        raise OSError(f"too many symbolic links under {root} at {path}")
    parts = [p for p in path.split("/") if p and p != "."]
    current = "/"
    for i, part in enumerate(parts):
        candidate = os.path.normpath(os.path.join(current, part))
        host = os.path.join(root, candidate.lstrip("/"))
        if os.path.islink(host):
            target = os.readlink(host)
            base = "/" if target.startswith("/") else current
            rest = "/".join(parts[i + 1 :])
            return resolve_in_root(root, os.path.join(base, target, rest), depth + 1)
        current = candidate
    return os.path.join(root, current.lstrip("/"))


def rootfs_arch(root: str) -> str | None:
    try:
        with open(resolve_in_root(root, "/bin/sh"), "rb") as f:
            return elf_machine(f.read(64))
    except OSError:
        return None


def sif_arch(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            header = f.read(48)
    except OSError:
        return None
    if header[32:41] != SIF_MAGIC:
        return None
    return SIF_ARCHES.get(header[45:47])


def image_arch(image: str, rootfs: str | None) -> str | None:
    """The image's architecture if its files tell; `rootfs` is where it is unpacked, if it is."""
    if rootfs and os.path.isdir(rootfs):
        return rootfs_arch(rootfs)
    if image.endswith(".sif"):
        return sif_arch(image)
    return None


def mismatch(image: str, image_arch_name: str | None, node: str, machine: str) -> str | None:
    """The refusal message, or None when the image fits the node (or cannot be judged)."""
    if image_arch_name is None or normalise(image_arch_name) == normalise(machine):
        return None
    return (
        f"image {image} is built for {image_arch_name}, but node {node} is {machine}: "
        "refused before starting anything"
    )
