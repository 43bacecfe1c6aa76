"""doctor's container checks (daemon/ctl/doctor_containers.py), --quick: runtime, image,
architecture, each failure with its reason. The container start itself is checked in e2e."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from islurm.config.settings import (
    ContainerSettings,
    DaemonSettings,
    Profile,
    Settings,
    UpdateSettings,
)
from islurm.daemon.ctl.doctor_checks import Status
from islurm.daemon.ctl.doctor_containers import check_image_profile


def _settings() -> Settings:
    return Settings("x", DaemonSettings(), UpdateSettings(), containers=ContainerSettings())


def _checks(image: str, runtime: str = "") -> list[tuple[str, Status, str]]:
    profile = Profile("box", (), container=image, runtime=runtime)
    found = check_image_profile(_settings(), profile, True, lambda m: None)
    return [(c.check, c.status, c.detail) for c in found]


def test_a_missing_runtime_fails_and_says_where(tmp_path: Path) -> None:
    if shutil.which("enroot"):
        pytest.fail("this test needs a machine without enroot")
    [(check, status, detail)] = _checks(str(tmp_path / "x.sqsh"))
    assert (check, status) == ("container box: runtime", Status.FAIL)
    assert "enroot is not installed" in detail and "login node" in detail


def test_an_unreadable_or_foreign_image_fails(tmp_path: Path) -> None:
    missing = _checks(str(tmp_path / "nope.sif"), runtime="podman")
    assert missing[-1][1] is Status.FAIL and "No such file" in missing[-1][2]
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = (0xB7).to_bytes(2, "little")  # aarch64
    (root / "bin" / "sh").write_bytes(bytes(header))
    *_, (check, status, detail) = _checks(str(root), runtime="podman")
    assert (check, status) == ("container box: image", Status.FAIL)
    assert "built for aarch64" in detail
