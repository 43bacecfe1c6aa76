"""Setup's pure pieces: the Include placement, our config, `ssh -G` checks, editor paths,
the laptop's file changes, the repacked wheel, when islurmctl forwards to the login node."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from islurm.config import editors, sshsetup
from islurm.daemon.ctl import laptop, wheel
from islurm.daemon.ctl.localfiles import Change, apply, diff

USER_CONFIG = "Host *\n    StrictHostKeyChecking accept-new\n"


def test_include_goes_first_once_and_comes_out_exactly() -> None:
    once = sshsetup.add_include(USER_CONFIG)
    assert once.splitlines()[1] == "Include ~/.ssh/islurm.d/config"
    assert sshsetup.add_include(once) == once
    assert sshsetup.remove_include(once) == USER_CONFIG
    assert sshsetup.add_include(None) == sshsetup.INCLUDE_LINES
    # Our lines moved down by the user: brought back to the top, not duplicated.
    moved = USER_CONFIG + sshsetup.INCLUDE_LINES
    assert sshsetup.add_include(moved) == sshsetup.INCLUDE_LINES + USER_CONFIG


def test_our_config_goes_through_the_login_node_with_strict_checking() -> None:
    text = sshsetup.render_config(sshsetup.Target("login.example"), ["cpu", "gpu"], "alice")
    assert "Host slurm-cpu\n" in text and "Host slurm-gpu\n" in text
    assert (
        "ProxyCommand ssh -T -o BatchMode=yes login.example " + sshsetup.REMOTE_PROXY + " cpu"
        in text
    )
    assert "    StrictHostKeyChecking yes\n" in text and "    User alice\n" in text
    assert 'UserKnownHostsFile "~/.ssh/islurm.d/known_hosts"' in text  # ssh expands the ~
    assert text.count("IdentityFile ~/.ssh/islurm\n") == 3  # the login node and each host
    with_user = sshsetup.render_config(sshsetup.Target("login", "bob"), ["cpu"], "bob")
    assert " bob@login " in with_user


def test_where_the_laptops_ssh_can_take_the_socket_no_relay_runs_on_the_login_node() -> None:
    shim = ("/usr/bin/python3", "-I", "-S", "/home/me/islurm/proxyshim/main.py")
    text = sshsetup.render_config(sshsetup.Target("login", "bob"), ["cpu"], "bob", shim)
    assert "    ProxyUseFdpass yes\n" in text
    assert (
        "ProxyCommand /usr/bin/python3 -I -S /home/me/islurm/proxyshim/main.py "
        f"--via bob@login --remote {sshsetup.REMOTE_PROXY} cpu\n" in text
    )
    assert "    StrictHostKeyChecking yes\n" in text
    relay = sshsetup.render_config(sshsetup.Target("login", "bob"), ["cpu"], "bob")
    assert "ProxyUseFdpass" not in relay


def test_ssh_g_is_checked_for_strictness_file_and_alias() -> None:
    good = "stricthostkeychecking true\nuserknownhostsfile /h/k /h/k2\nhostkeyalias islurm\n"
    assert sshsetup.check_resolved("slurm-cpu", sshsetup.parse_ssh_g(good), "/h/k") == []
    bad = "stricthostkeychecking accept-new\nuserknownhostsfile /h/other\n"
    problems = sshsetup.check_resolved("slurm-cpu", sshsetup.parse_ssh_g(bad), "/h/k")
    assert len(problems) == 3 and "accept-new" in problems[0]


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {}, PurePosixPath("/home/u/.config/Code - Insiders/User/settings.json")),
        (
            "linux",
            {"XDG_CONFIG_HOME": "/x"},
            PurePosixPath("/x/Code - Insiders/User/settings.json"),
        ),
        (
            "linux",
            {"XDG_CONFIG_HOME": "rel"},
            PurePosixPath("/home/u/.config/Code - Insiders/User/settings.json"),
        ),
        (
            "darwin",
            {},
            PurePosixPath("/home/u/Library/Application Support/Code - Insiders/User/settings.json"),
        ),
        (
            "win32",
            {"APPDATA": "C:\\Users\\u\\AppData\\Roaming"},
            PureWindowsPath("C:/Users/u/AppData/Roaming/Code - Insiders/User/settings.json"),
        ),
    ],
)
def test_editor_settings_paths(platform: str, env: dict[str, str], expected: object) -> None:
    dirs = editors.editor_dirs(platform, "/home/u", env)
    assert editors.settings_file(dirs["VS Code Insiders"]) == expected
    assert set(dirs) == {"VS Code", "VS Code Insiders", "Cursor", "VSCodium"}


def test_connect_timeout_leaves_room_for_the_queue() -> None:
    settings = dict(editors.remote_ssh_settings(["slurm-cpu"], 1800.0))
    assert settings[("remote.SSH.connectTimeout",)] == 1860
    assert settings[("remote.SSH.remotePlatform", "slurm-cpu")] == "linux"


def test_changes_are_written_only_where_they_differ(tmp_path: Path) -> None:
    same, new, gone = tmp_path / "same", tmp_path / "d" / "new", tmp_path / "gone"
    same.write_text("a\n")
    same.chmod(0o644)
    gone.write_text("x\n")
    changes = [Change(same, "a\n"), Change(new, "b\r\n"), Change(gone, None)]
    text = diff(changes)
    assert f"+++ {new}" in text and "-x" in text and str(same) not in text
    assert apply(changes) == [new, gone]
    assert new.read_bytes() == b"b\r\n" and new.stat().st_mode & 0o777 == 0o600
    assert not gone.exists()
    assert apply([Change(same, "c\n")]) == [same] and same.stat().st_mode & 0o777 == 0o644
    assert diff([Change(same, "c\n")]) == ""


def _fake_dist(site: Path, editable: bool = False) -> None:
    (site / "foo").mkdir(parents=True)
    (site / "foo" / "__init__.py").write_text("X = 1\n")
    (site / "foo" / "__pycache__").mkdir()
    (site / "foo" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    info = site / "foo-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: foo\nVersion: 1.2\n")
    (info / "INSTALLER").write_text("pip\n")
    if editable:
        (info / "direct_url.json").write_text(
            '{"url": "file:///src", "dir_info": {"editable": true}}'
        )
    (info / "RECORD").write_text(
        "foo/__init__.py,,\nfoo/__pycache__/__init__.cpython-311.pyc,,\n"
        "foo-1.2.dist-info/METADATA,,\nfoo-1.2.dist-info/INSTALLER,,\n"
        "foo-1.2.dist-info/RECORD,,\n../../../bin/foo,,\n"
    )


def test_the_installed_distribution_repacks_to_the_same_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dist(tmp_path / "site")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    w1 = wheel.pack_installed(tmp_path / "a", "foo")
    w2 = wheel.pack_installed(tmp_path / "b", "foo")
    assert w1.path.name == "foo-1.2-py3-none-any.whl" and w1.sha256 == w2.sha256
    names = zipfile.ZipFile(w1.path).namelist()
    assert names == ["foo-1.2.dist-info/METADATA", "foo/__init__.py", "foo-1.2.dist-info/RECORD"]
    record = zipfile.ZipFile(w1.path).read("foo-1.2.dist-info/RECORD").decode()
    assert "foo/__init__.py,sha256=" in record and record.endswith("foo-1.2.dist-info/RECORD,,\n")


def test_an_editable_install_is_not_repacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_dist(tmp_path / "site", editable=True)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    with pytest.raises(wheel.WheelError, match="--wheel"):
        wheel.pack_installed(tmp_path / "a", "foo")


def test_forwarding_only_where_setup_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ISLURM_LAPTOP", raising=False)
    assert not laptop.forwards("list", None)
    laptop.state_path().parent.mkdir(parents=True)
    laptop.state_path().write_text(laptop.render_state({"login": "l", "user": None}))
    assert laptop.forwards("list", None) and laptop.forwards("doctor", None)
    assert not laptop.forwards("list", "/some/socket")  # an explicit socket: local
    assert not laptop.forwards("profiles", None) and not laptop.forwards("setup", None)
    monkeypatch.setenv("ISLURM_LAPTOP", "0")
    assert not laptop.forwards("list", None)
    state = laptop.load_state()
    assert state is not None and laptop.target_of(state) == sshsetup.Target("l")
