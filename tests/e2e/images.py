"""Container images for the real tier, built locally (no registry is reachable): a minimal
Debian rootfs made by debootstrap from the Debian mirror, without openssh-server, cached on
this machine between runs; and a rootfs whose /bin/sh claims another CPU architecture."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("ISLURM_E2E_IMAGE_CACHE", "/var/cache/islurm-test"))
DEBIAN_TAR = CACHE / "debian12-minbase.tar"
MARKER = "islurm-test-image"
#: Left out of the tarball: device nodes (a user cannot make them) and what no test reads.
EXCLUDES = (
    "./dev/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/locale/*",
    "./var/cache/apt/*",
    "./var/lib/apt/lists/*",
)


def debian_tarball() -> Path:
    """The cached Debian 12 minbase rootfs tarball, built on first use (~40 s)."""
    if DEBIAN_TAR.exists():
        return DEBIAN_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
    try:
        root = work / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "bookworm",
                str(root),
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        assert not (root / "usr/sbin/sshd").exists(), "the test image must have no sshd"
        (root / "etc" / MARKER).write_text("built by tests/e2e/images.py\n")
        tmp = work / "image.tar"
        argv = ["tar", "-C", str(root), *(f"--exclude={e}" for e in EXCLUDES), "-cf", str(tmp), "."]
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
        os.replace(tmp, DEBIAN_TAR)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DEBIAN_TAR


def foreign_rootfs(dest: Path, owner: str) -> Path:
    """A rootfs directory whose /bin/sh is an aarch64 ELF header (enough to be judged)."""
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = (0xB7).to_bytes(2, "little")  # EM_AARCH64
    (dest / "bin" / "sh").write_bytes(bytes(header))
    subprocess.run(["chown", "-R", owner, str(dest)], check=True)
    return dest
