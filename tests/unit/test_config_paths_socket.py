"""The socket directory without $XDG_RUNTIME_DIR (config/paths.py): TMP/islurm-<uid>, unless
another user squats it; then a private random-named directory recorded per login node in the
user's state dir and re-verified on every use. Tests run as root: uid 65534 plays the squatter."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from islurm.config import paths

SQUATTER = 65534


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir(mode=0o1777)
    monkeypatch.setattr(paths, "TMP", str(root))
    monkeypatch.delenv("ISLURM_SOCKET", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("ISLURM_STATE_DIR", str(tmp_path / "state"))
    return root


def record_of(tmp_path: Path) -> Path:
    return tmp_path / "state" / "run" / f"socket-dir.{os.uname().nodename}"


def test_the_usual_directory_when_nobody_squats_it(tmp_root: Path, tmp_path: Path) -> None:
    usual = tmp_root / f"islurm-{os.getuid()}"
    assert paths.socket_path() == str(usual / "islurmd.sock")
    assert not record_of(tmp_path).exists()


def test_our_own_directory_with_a_loose_mode_is_fixed_not_abandoned(tmp_root: Path) -> None:
    usual = tmp_root / f"islurm-{os.getuid()}"
    usual.mkdir()
    usual.chmod(0o777)
    sock = paths.socket_path()
    assert sock == str(usual / "islurmd.sock")
    paths.ensure_private_dir(os.path.dirname(sock))
    assert stat.S_IMODE(usual.stat().st_mode) == 0o700


@pytest.mark.parametrize("squat", ["other owner", "symlink", "file"])
def test_a_squatted_directory_falls_back_to_a_private_one(
    tmp_root: Path, tmp_path: Path, squat: str
) -> None:
    usual = tmp_root / f"islurm-{os.getuid()}"
    if squat == "other owner":
        usual.mkdir(mode=0o777)
        os.chown(usual, SQUATTER, SQUATTER)
    elif squat == "symlink":
        usual.symlink_to(tmp_path)
    else:
        usual.write_text("")
    sock = paths.socket_path()
    chosen = Path(sock).parent
    assert chosen != usual and chosen.parent == tmp_root
    assert chosen.name.startswith(f"islurm-{os.getuid()}-")
    st = os.lstat(chosen)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert record_of(tmp_path).read_text() == f"{chosen}\n"
    assert stat.S_IMODE(record_of(tmp_path).parent.stat().st_mode) == 0o700
    assert paths.socket_path() == sock  # the shim and the daemon agree, call after call
    paths.ensure_private_dir(str(chosen))  # and both accept it


def squat_usual(tmp_root: Path) -> None:
    usual = tmp_root / f"islurm-{os.getuid()}"
    usual.mkdir()
    os.chown(usual, SQUATTER, SQUATTER)


@pytest.mark.parametrize("tamper", ["vanished", "chmod", "chown", "symlink", "elsewhere"])
def test_the_recorded_directory_is_verified_on_every_use(
    tmp_root: Path, tmp_path: Path, tamper: str
) -> None:
    squat_usual(tmp_root)
    first = Path(paths.socket_path()).parent
    if tamper == "vanished":
        first.rmdir()
    elif tamper == "chmod":
        first.chmod(0o755)
    elif tamper == "chown":
        os.chown(first, SQUATTER, SQUATTER)
    elif tamper == "symlink":
        first.rmdir()
        first.symlink_to(tmp_path)
    else:
        record_of(tmp_path).write_text("/var/tmp\n")
    second = Path(paths.socket_path()).parent
    assert second != first and second.parent == tmp_root
    st = os.lstat(second)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert record_of(tmp_path).read_text() == f"{second}\n"


def test_a_racer_that_recorded_first_wins(
    tmp_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    squat_usual(tmp_root)
    theirs = tmp_root / "islurm-theirs"
    theirs.mkdir(mode=0o700)
    real_link = os.link

    def link_after_the_other(src: str, dst: str) -> None:
        Path(dst).write_text(f"{theirs}\n")  # the other process published between our steps
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_the_other)
    assert paths.socket_path() == str(theirs / "islurmd.sock")
    assert sorted(p.name for p in tmp_root.iterdir()) == sorted(
        [f"islurm-{os.getuid()}", "islurm-theirs"]
    )  # ours was removed again


def test_paths_stays_import_light() -> None:
    code = (
        "import sys; before = set(sys.modules); import islurm.config.paths; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"tempfile", "socket", "random", "shutil", "contextlib", "subprocess", "trio"}
    assert heavy.isdisjoint(out), out
