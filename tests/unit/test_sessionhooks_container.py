"""Golden argv, mounts and environment of each runtime adapter (enroot and apptainer as their
manuals describe them: they cannot be installed here), the runtime choice, the architecture
check and the ForceCommand wrapper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from islurm.sessionhooks.container import arch, enter
from islurm.sessionhooks.container.apptainer import Apptainer
from islurm.sessionhooks.container.base import ContainerError, ContainerSpec
from islurm.sessionhooks.container.enroot import Enroot
from islurm.sessionhooks.container.podman import KEEPALIVE, Podman
from islurm.sessionhooks.container.select import runtime_name


def _spec(tmp_path: Path, image: str) -> ContainerSpec:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return ContainerSpec(
        job_id="42",
        image=image,
        uid=1001,
        gid=1001,
        home=str(home),
        workdir="/tmp/islurm-job42-x",
        env={"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0"},
        binds=("/nonexistent-project-root",),
    )


def test_the_runtime_follows_the_image_or_the_config() -> None:
    assert runtime_name("/p/a.sqsh") == "enroot"
    assert runtime_name("/p/a.sif") == "apptainer"
    assert runtime_name("/p/rootfs") == "podman"
    assert runtime_name("docker://debian:12") == "podman"
    assert runtime_name("/p/a.sif", "singularity") == "apptainer"
    with pytest.raises(ContainerError, match="unknown container runtime"):
        runtime_name("/p/a.sif", "docker")


def test_enroot_golden(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/p/img.sqsh")
    e = Enroot(spec, binary="/usr/bin/enroot")
    home = spec.home
    ctl = "/tmp/islurm-job42-x/enroot/ctl"
    assert e.create_argv() == [
        "/usr/bin/enroot",
        "create",
        "--name",
        "islurm-job-42",
        "/p/img.sqsh",
    ]
    assert e.start_argv() == [
        "/usr/bin/enroot", "start", "--rw",
        "--mount", f"{home}:{home}:none:x-create=dir,bind",
        "--mount", f"{ctl}:{ctl}:none:x-create=dir,bind",
        "--env", "CUDA_VISIBLE_DEVICES=0", "--env", f"HOME={home}", "--env", "SLURM_JOB_ID=42",
        "islurm-job-42", "/bin/sh", "-c", f'echo $$ > "{ctl}/pid"; {KEEPALIVE}',
    ]  # fmt: skip
    e.pid = 4242
    assert e.exec_argv(False)[:4] == ["/usr/bin/enroot", "exec", "--env", "TERM"]
    assert e.exec_argv(True)[-1] == "4242"
    assert e.environment()["ENROOT_DATA_PATH"] == "/tmp/islurm-job42-x/enroot/data"
    assert "--root" not in e.start_argv()  # never remapped to root


def test_apptainer_golden(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "/p/img.sif")
    a = Apptainer(spec, binary="/usr/bin/apptainer")
    home = spec.home
    assert a.start_argv() == [
        "/usr/bin/apptainer", "instance", "start", "--bind", f"{home}:{home}",
        "--env", "CUDA_VISIBLE_DEVICES=0", "--env", "SLURM_JOB_ID=42",
        "/p/img.sif", "islurm-job-42",
    ]  # fmt: skip
    assert a.exec_argv(True) == [
        "/usr/bin/apptainer", "exec", "--pwd", home, "instance://islurm-job-42",
    ]  # fmt: skip
    assert a.environment()["APPTAINER_CACHEDIR"].startswith("/tmp/islurm-job42-x/")


def test_podman_golden(tmp_path: Path) -> None:
    tarball = tmp_path / "debian.tar"
    tarball.write_bytes(b"")
    spec = _spec(tmp_path, str(tarball))
    p = Podman(spec, binary="/usr/bin/podman")
    run = p.run_argv()
    assert run[:17] == [
        "/usr/bin/podman", "--root", "/tmp/islurm-job42-x/podman/storage",
        "--runroot", "/tmp/islurm-job42-x/podman/run", "--tmpdir", "/tmp/islurm-job42-x/podman/tmp",
        "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        "--runtime", "runc", "run", "--detach",
    ]  # fmt: skip
    for flag in ("--userns=keep-id", "--network=host", f"{spec.home}:{spec.home}"):
        assert flag in run
    assert "1001:1001" in run and "SLURM_JOB_ID=42" in run
    assert run[-5:] == ["--rootfs", "/tmp/islurm-job42-x/rootfs", "/bin/sh", "-c", KEEPALIVE]
    ex = p.exec_argv(True)
    assert ex[15:18] == ["exec", "--interactive", "--tty"] and ex[-1] == "islurm-job-42"
    assert "--tty" not in p.exec_argv(False)
    assert p.environment() == {"XDG_RUNTIME_DIR": "/tmp/islurm-job42-x/podman/xdg"}


def _elf(machine: int) -> bytes:
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = machine.to_bytes(2, "little")
    return bytes(header)


def test_architecture_from_a_rootfs_following_absolute_links(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "bin").symlink_to("/usr/bin")  # absolute: inside the rootfs, not the host
    (root / "usr" / "bin" / "dash").write_bytes(_elf(0xB7))
    (root / "usr" / "bin" / "sh").symlink_to("dash")
    assert arch.rootfs_arch(str(root)) == "aarch64"
    message = arch.mismatch("/p/img", "aarch64", "c1", "x86_64")
    assert message is not None and "built for aarch64" in message and "c1 is x86_64" in message
    assert arch.mismatch("/p/img", "amd64", "c1", "x86_64") is None
    assert arch.mismatch("/p/img", None, "c1", "x86_64") is None


def test_architecture_from_a_sif_header(tmp_path: Path) -> None:
    sif = tmp_path / "a.sif"
    sif.write_bytes(
        b"#!/usr/bin/env run-singularity\n".ljust(32, b"\x00")
        + b"SIF_MAGIC\x00"
        + b"01\x00"  # format version
        + b"04\x00"  # arm64
    )
    assert arch.sif_arch(str(sif)) == "aarch64"


def test_the_wrapper_enters_the_container_for_every_kind_of_session(tmp_path: Path) -> None:
    log = tmp_path / "argv"
    fake = tmp_path / "rt"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s|" "$a"; done > {log}\n')
    fake.chmod(0o755)
    script = tmp_path / "enter.sh"
    script.write_text(
        enter.render("42", {"XDG_RUNTIME_DIR": "/x y"}, [str(fake), "-t"], [str(fake)], None,
                     "/bin/echo", "/bin/bash")
    )  # fmt: skip
    script.chmod(0o755)

    def session(command: str | None) -> str:
        env = {"PATH": "/usr/bin:/bin"} | ({"SSH_ORIGINAL_COMMAND": command} if command else {})
        out = subprocess.run([str(script)], env=env, stdin=subprocess.DEVNULL, capture_output=True)
        return out.stdout.decode() + (log.read_text() if log.exists() else "")

    assert session("echo 'a;b' $HOME").endswith("/bin/sh|-c|echo 'a;b' $HOME|")
    assert session(None).endswith(f"/bin/sh|-c|{enter.LOGIN_SHELL}|")
    log.unlink()
    assert session("internal-sftp").strip() == ""  # the node's sftp server (here: echo)
    assert not log.exists()
