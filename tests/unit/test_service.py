"""`islurmctl service`: unit templates, systemd quoting, install/uninstall/status against a
scripted fake `systemctl` placed first on PATH (it records every call and fails on surprises)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from islurm.config import paths
from islurm.daemon.ctl import service, systemd
from islurm.daemon.ctl import units as unit_files
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.proxyshim import spawn

FAKE_SYSTEMCTL = """\
#!{python}
import fcntl, json, os, sys

args = sys.argv[1:]
lock, held = os.environ.get("FAKE_SYSTEMCTL_LOCK"), None
if lock and os.path.exists(lock):
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held = False
    except BlockingIOError:
        held = True
    os.close(fd)
with open(os.environ["FAKE_SYSTEMCTL_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "lock_held": held}}) + "\\n")
with open(os.environ["FAKE_SYSTEMCTL_SCRIPT"]) as f:
    script = json.load(f)
key = " ".join(args)
if key not in script:
    sys.stderr.write(f"fake systemctl: unexpected call {{args}}\\n")
    sys.exit(99)
rc, out, err = script[key]
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(rc)
"""

NO_BUS = [1, "", "Failed to connect to bus: No medium found\n"]
OK = [0, "", ""]
SHOW_ARGS = (
    "--user show -p Id -p LoadState -p ActiveState -p UnitFileState -p Listen "
    "islurmd.socket islurmd.service"
)


class FakeSystemctl:
    def __init__(self, bin_dir: Path, log: Path, script: Path) -> None:
        self.bin_dir, self.log, self.script_file = bin_dir, log, script

    def script(self, answers: dict[str, list[Any]]) -> None:
        """Answers by argv (after the program name) joined with spaces: [rc, stdout, stderr]."""
        self.script_file.write_text(json.dumps(answers))

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self) -> list[str]:
        return [" ".join(r["argv"]) for r in self.records()]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home, config dir and runtime dir; no ISLURM_* overrides."""
    for var in list(os.environ):
        if var.startswith("ISLURM_"):
            monkeypatch.delenv(var)
    for name in ("home", "config", "run"):
        (tmp_path / name).mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("PATH", str(tmp_path / "home"))  # no systemctl unless a test adds one
    monkeypatch.setattr(service, "_lingering", lambda: False)
    return tmp_path


@pytest.fixture
def systemctl(env: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSystemctl:
    bin_dir = env / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "systemctl"
    exe.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    exe.chmod(0o755)
    fake = FakeSystemctl(bin_dir, env / "systemctl.log", env / "systemctl.json")
    fake.script({})
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_SYSTEMCTL_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_SYSTEMCTL_SCRIPT", str(fake.script_file))
    monkeypatch.setenv("FAKE_SYSTEMCTL_LOCK", paths.lock_path(paths.systemd_socket_path()))
    return fake


@pytest.fixture
def holders() -> Iterator[Callable[[str, str], subprocess.Popen[bytes]]]:
    """Processes holding islurmd's lock, stopped by pid at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    code = textwrap.dedent(
        """\
        import fcntl, os, sys, time
        fd = os.open(os.environ["LOCK"], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"%d\\n" % os.getpid())
        print("locked", flush=True)
        time.sleep(60)
        """
    )

    def start(lock: str, name: str) -> subprocess.Popen[bytes]:
        # The real interpreter (not the venv's, whose path may say "islurm"): `name` alone
        # decides whether the holder looks like an islurmd.
        python = os.path.realpath(sys.executable)
        proc = subprocess.Popen(
            [python, "-c", code, name],
            stdout=subprocess.PIPE,
            env={"LOCK": lock, "PATH": "/usr/bin:/bin"},
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"locked\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def run(*argv: str) -> int:
    """islurmctl's dispatch for the `service` command (main.py maps Fail the same way)."""
    parser = argparse.ArgumentParser(prog="islurmctl")
    parser.add_argument("--socket")
    sub = parser.add_subparsers(dest="command")
    service.register(sub)
    args = parser.parse_args(list(argv))
    try:
        code: int = args.fn(args)
    except Fail as fail:
        print(f"islurmctl: {fail}", file=sys.stderr)
        return fail.exit_code
    return code


def systemd_words(line: str) -> list[str]:
    """How systemd reads an Exec*= value: %% specifiers first, then words split on blanks with
    double quotes and C escapes, then $$ in the arguments (never in the program) at exec time.
    A lone % or $ would be expanded."""
    assert not re.search(r"%[^%]", line.replace("%%", "")), f"unescaped specifier in {line!r}"
    program, *args = shlex.split(line.replace("%%", "%"))
    for w in args:
        assert "$" not in w.replace("$$", ""), f"unescaped variable in {w!r}"
    return [program, *(w.replace("$$", "$") for w in args)]


def directive(text: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(f"{key}=")]


# -- templates and rendering ------------------------------------------------------------------


def test_socket_template_listens_where_clients_look(env: Path) -> None:
    text = unit_files.template("islurmd.socket")
    assert directive(text, "ListenStream") == ["%t/islurm/islurmd.sock"]
    assert directive(text, "SocketMode") == ["0600"]
    assert directive(text, "DirectoryMode") == ["0700"]
    assert directive(text, "RemoveOnStop") == ["yes"]
    assert directive(text, "WantedBy") == ["sockets.target"]
    assert text.startswith("# islurmd.socket")
    listen = directive(text, "ListenStream")[0].replace("%t", str(env / "run"))
    assert listen == paths.socket_path() == paths.systemd_socket_path()


def test_service_template_has_placeholders_and_policy() -> None:
    text = unit_files.template("islurmd.service")
    assert text.startswith("# islurmd.service")
    assert directive(text, "ExecStart") == ["@ISLURMD@"]
    assert directive(text, "Restart") == ["on-failure"]
    assert directive(text, "KillMode") == ["mixed"]
    assert directive(text, "TimeoutStopSec") == ["15"]
    assert directive(text, "NoNewPrivileges") == ["yes"]
    assert directive(text, "PrivateTmp") == ["no"]
    assert "PYTHONUNBUFFERED=1" in directive(text, "Environment")


def test_render_fills_every_placeholder_with_an_absolute_argv() -> None:
    units = unit_files.render(["/opt/islurm/venv/bin/islurmd"], "/opt/slurm/bin:/usr/bin")
    assert units["islurmd.socket"] == unit_files.template("islurmd.socket")
    text = units["islurmd.service"]
    assert "@" not in text
    assert directive(text, "ExecStart") == ["/opt/islurm/venv/bin/islurmd"]
    assert '"PATH=/opt/slurm/bin:/usr/bin"' in directive(text, "Environment")


@pytest.mark.parametrize(
    "argv",
    [
        ["/home/a user/islurm venv/bin/islurmd"],
        ["/home/$USER/100%/x;y/islurmd"],
        ["/opt/v env/bin/python", "-m", 'it\'s "$HOME" 50% \\x', ";", ""],
    ],
)
def test_exec_start_survives_systemd_splitting(argv: list[str]) -> None:
    line = unit_files.exec_line(argv)
    assert systemd_words(line) == argv
    rendered = unit_files.render(argv, "/usr/bin")["islurmd.service"]
    assert systemd_words(directive(rendered, "ExecStart")[0]) == argv


@pytest.mark.parametrize(
    "program",
    ["/home/o'brien/venv/bin/islurmd", '/srv/we"ird/islurmd', "/a\\b/islurmd", "/tab\there/x"],
)
def test_programs_systemd_would_refuse_are_refused_here(program: str) -> None:
    # systemd rejects these fatally ("Executable name contains special characters").
    with pytest.raises(ValueError, match="refuses to run a program"):
        unit_files.exec_line([program])


def test_arguments_with_control_characters_are_refused() -> None:
    with pytest.raises(ValueError, match="control characters"):
        unit_files.exec_line(["/bin/islurmd", "a\nExecStartPre=/bin/evil"])


def test_a_path_with_spaces_is_one_double_quoted_word() -> None:
    assert unit_files.exec_line(["/a b/islurmd"]) == '"/a b/islurmd"'
    assert unit_files.exec_line(["/$x/islurmd", "$x"]) == "/$x/islurmd $$x"
    assert unit_files.exec_line(["/plain/islurmd", "-m"]) == "/plain/islurmd -m"


def test_exec_start_needs_an_absolute_program() -> None:
    with pytest.raises(ValueError, match="absolute"):
        unit_files.exec_line(["islurmd"])


def test_unit_path_keeps_absolute_entries_once_and_escapes() -> None:
    value = unit_files.service_path_value('/opt/slurm/bin:bin::./x:/usr/bin:/opt/slurm/bin:/a"%\\b')
    (word,) = systemd_words(f'"PATH={value}"')
    assert word == 'PATH=/opt/slurm/bin:/usr/bin:/a"%\\b'
    assert unit_files.service_path_value("relative:") == "/usr/local/bin:/usr/bin:/bin"


def test_daemon_argv_prefers_the_islurmd_script_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "venv with space" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)  # never resolved: the venv is found through the link
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.delenv("ISLURM_DAEMON_CMD", raising=False)
    assert spawn.daemon_argv() == [str(python), "-m", "islurm.daemon.main"]
    script = bin_dir / "islurmd"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert spawn.daemon_argv() == [str(script)]


def test_unit_dir_follows_xdg_config_home(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert unit_files.unit_dir() == env / "config" / "systemd" / "user"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert unit_files.unit_dir() == env / "home" / ".config" / "systemd" / "user"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert unit_files.unit_dir() == env / "home" / ".config" / "systemd" / "user"


def test_parse_show_reads_blocks_by_id() -> None:
    text = (
        "Id=islurmd.socket\nActiveState=active\nListen=/run/user/5/islurm/islurmd.sock (Stream)\n"
        "\nId=islurmd.service\nActiveState=inactive\nUnitFileState=\n"
    )
    shown = systemd.parse_show(text)
    assert shown["islurmd.socket"]["Listen"] == "/run/user/5/islurm/islurmd.sock (Stream)"
    assert shown["islurmd.service"] == {
        "Id": "islurmd.service",
        "ActiveState": "inactive",
        "UnitFileState": "",
    }


# -- install ----------------------------------------------------------------------------------


def test_install_without_a_user_manager_writes_the_units_and_exits_0(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script({"--user show-environment": NO_BUS})
    assert run("service", "install") == 0
    assert systemctl.calls() == ["--user show-environment"]
    unit_dir = env / "config" / "systemd" / "user"
    assert (unit_dir / "islurmd.socket").read_text() == unit_files.template("islurmd.socket")
    text = (unit_dir / "islurmd.service").read_text()
    assert directive(text, "ExecStart") == [unit_files.exec_line(spawn.daemon_argv())]
    assert f'"PATH={systemctl.bin_dir}:/usr/bin:/bin"' in directive(text, "Environment")
    assert (unit_dir / "islurmd.service").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in unit_dir.iterdir()) == ["islurmd.service", "islurmd.socket"]
    out = capsys.readouterr().out
    assert "No medium found" in out
    assert "islurm-proxy starts\nislurmd on demand" in out
    assert "loginctl enable-linger" in out


def test_install_without_systemctl_at_all(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("service", "install") == 0
    assert (env / "config" / "systemd" / "user" / "islurmd.service").exists()
    assert "systemctl is not installed" in capsys.readouterr().out


def test_install_with_a_user_manager_enables_the_socket(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script(
        {
            "--user show-environment": [0, "HOME=/home/u\n", ""],
            "--user daemon-reload": OK,
            "--user enable --now islurmd.socket": OK,
        }
    )
    assert run("service", "install") == 0
    assert systemctl.calls() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now islurmd.socket",
    ]
    # No on-demand daemon could bind the socket path while systemd took it over.
    assert systemctl.records()[2]["lock_held"] is True
    out = capsys.readouterr().out
    assert "enabled islurmd.socket" in out
    assert "loginctl enable-linger" in out  # lingering is off in this test
    assert (env / "run" / "islurm").stat().st_mode & 0o777 == 0o700


def test_reinstall_restarts_a_running_daemon_only_when_its_unit_changed(
    env: Path,
    systemctl: FakeSystemctl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(service, "_lingering", lambda: True)
    answers = {
        "--user show-environment": OK,
        "--user daemon-reload": OK,
        "--user enable --now islurmd.socket": OK,
        "--user try-restart islurmd.service": OK,
    }
    systemctl.script(answers)
    assert run("service", "install") == 0
    assert run("service", "install") == 0
    assert "unchanged" in capsys.readouterr().out
    monkeypatch.setenv("PATH", f"{systemctl.bin_dir}:/opt/slurm/bin:/usr/bin")
    assert run("service", "install") == 0
    assert "loginctl" not in capsys.readouterr().out
    once = ["--user show-environment", "--user daemon-reload", "--user enable --now islurmd.socket"]
    assert systemctl.calls() == once + once + [*once, "--user try-restart islurmd.service"]


def test_install_stops_an_on_demand_daemon_before_the_socket_unit_starts(
    env: Path,
    systemctl: FakeSystemctl,
    holders: Callable[[str, str], subprocess.Popen[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock = paths.systemd_socket_path()
    os.makedirs(os.path.dirname(sock), mode=0o700)
    daemon = holders(paths.lock_path(sock), "islurmd-stand-in")
    systemctl.script(
        {
            "--user show-environment": OK,
            "--user daemon-reload": OK,
            "--user enable --now islurmd.socket": OK,
        }
    )
    assert run("service", "install") == 0
    assert daemon.wait(5) == -15  # SIGTERM
    assert f"stopping the on-demand islurmd (pid {daemon.pid})" in capsys.readouterr().out
    assert [r["lock_held"] for r in systemctl.records()] == [True, True, True]
    assert systemctl.calls()[-1] == "--user enable --now islurmd.socket"


def test_install_leaves_a_lock_held_by_something_else_alone(
    env: Path,
    systemctl: FakeSystemctl,
    holders: Callable[[str, str], subprocess.Popen[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sock = paths.systemd_socket_path()
    os.makedirs(os.path.dirname(sock), mode=0o700)
    other = holders(paths.lock_path(sock), "something-else")
    systemctl.script({"--user show-environment": OK, "--user daemon-reload": OK})
    assert run("service", "install") == Exit.ERROR
    assert other.poll() is None
    assert "is not islurmd" in capsys.readouterr().err
    assert systemctl.calls() == ["--user show-environment", "--user daemon-reload"]


def test_install_refuses_a_program_systemd_could_not_run(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = env / "o'brien" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert run("service", "install") == Exit.ERROR
    assert "refuses to run a program" in capsys.readouterr().err
    assert not (env / "config" / "systemd").exists()


def test_install_reports_systemctl_failures_with_their_words(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script(
        {
            "--user show-environment": OK,
            "--user daemon-reload": OK,
            "--user enable --now islurmd.socket": [
                1,
                "",
                "Job for islurmd.socket failed.\n",
            ],
        }
    )
    assert run("service", "install") == Exit.ERROR
    err = capsys.readouterr().err
    assert "systemctl --user enable --now islurmd.socket" in err
    assert "Job for islurmd.socket failed." in err


# -- uninstall --------------------------------------------------------------------------------


def test_uninstall_disables_and_removes(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script(
        {
            "--user show-environment": OK,
            "--user daemon-reload": OK,
            "--user enable --now islurmd.socket": OK,
            "--user disable --now islurmd.socket islurmd.service": OK,
        }
    )
    assert run("service", "install") == 0
    systemctl.log.unlink()
    assert run("service", "uninstall") == 0
    assert systemctl.calls() == [
        "--user show-environment",
        "--user disable --now islurmd.socket islurmd.service",
        "--user daemon-reload",
    ]
    assert list((env / "config" / "systemd" / "user").iterdir()) == []
    assert "on demand from now on" in capsys.readouterr().out


def test_uninstall_without_a_user_manager_removes_files_and_the_enable_link(
    env: Path, systemctl: FakeSystemctl
) -> None:
    systemctl.script({"--user show-environment": NO_BUS})
    assert run("service", "install") == 0
    unit_dir = env / "config" / "systemd" / "user"
    wants = unit_dir / "sockets.target.wants"
    wants.mkdir()
    (wants / "islurmd.socket").symlink_to(unit_dir / "islurmd.socket")
    (wants / "other.socket").symlink_to(unit_dir / "other.socket")
    assert run("service", "uninstall") == 0
    assert not (unit_dir / "islurmd.socket").exists()
    assert not (unit_dir / "islurmd.service").exists()
    assert [p.name for p in wants.iterdir()] == ["other.socket"]
    assert systemctl.calls() == ["--user show-environment"] * 2


def test_uninstall_when_nothing_is_installed(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script({"--user show-environment": OK, "--user daemon-reload": OK})
    assert run("service", "uninstall") == 0
    assert systemctl.calls() == ["--user show-environment", "--user daemon-reload"]
    assert capsys.readouterr().out.count("not installed:") == 2


# -- status -----------------------------------------------------------------------------------


def _show(socket_state: str, listen: str) -> list[Any]:
    return [
        0,
        f"Id=islurmd.socket\nLoadState=loaded\nActiveState={socket_state}\n"
        f"UnitFileState=enabled\nListen={listen} (Stream)\n\n"
        "Id=islurmd.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=indirect\n",
        "",
    ]


def test_status_json_under_socket_activation(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = str(env / "run" / "islurm" / "islurmd.sock")
    systemctl.script({"--user show-environment": OK, SHOW_ARGS: _show("active", sock)})
    assert run("service", "status", "--json") == 0
    unit_dir = env / "config" / "systemd" / "user"
    assert json.loads(capsys.readouterr().out) == {
        "mode": "systemd",
        "description": "systemd socket activation",
        "socket": sock,
        "units": {
            "islurmd.socket": {"path": str(unit_dir / "islurmd.socket"), "exists": False},
            "islurmd.service": {"path": str(unit_dir / "islurmd.service"), "exists": False},
        },
        "systemd": {
            "available": True,
            "reason": None,
            "islurmd.socket": {"load": "loaded", "active": "active", "enabled": "enabled"},
            "islurmd.service": {"load": "loaded", "active": "inactive", "enabled": "indirect"},
        },
    }
    assert systemctl.calls() == ["--user show-environment", SHOW_ARGS]


def test_status_warns_when_clients_look_elsewhere(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script(
        {"--user show-environment": OK, SHOW_ARGS: _show("active", "/run/user/7/islurm/x.sock")}
    )
    assert run("--socket", "/tmp/other.sock", "service", "status", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["socket"] == "/run/user/7/islurm/x.sock"
    assert "/tmp/other.sock" in info["warning"]


def test_status_json_on_demand_when_the_socket_is_inactive(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script({"--user show-environment": OK, SHOW_ARGS: _show("inactive", "/x")})
    assert run("service", "status", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "on-demand"
    assert info["description"] == "on-demand (started by islurm-proxy)"
    assert info["socket"] == paths.socket_path()
    assert info["systemd"]["islurmd.socket"]["active"] == "inactive"


def test_status_says_how_to_recover_a_failed_socket(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script({"--user show-environment": OK, SHOW_ARGS: _show("failed", "/x")})
    assert run("service", "status") == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "mode:     on-demand (started by islurm-proxy)"
    assert "systemd:  islurmd.socket failed, enabled" in text
    assert "reset-failed islurmd.socket islurmd.service" in text


def test_status_without_a_user_manager(
    env: Path, systemctl: FakeSystemctl, capsys: pytest.CaptureFixture[str]
) -> None:
    systemctl.script({"--user show-environment": NO_BUS})
    assert run("service", "install") == 0
    capsys.readouterr()
    assert run("service", "status", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mode"] == "on-demand"
    assert info["systemd"] == {
        "available": False,
        "reason": "`systemctl --user show-environment`: Failed to connect to bus: No medium found",
    }
    assert all(u["exists"] for u in info["units"].values())
    assert run("service", "status") == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "mode:     on-demand (started by islurm-proxy)"
    assert "not reachable" in text
    assert f"{env}/config/systemd/user/islurmd.service (present)" in text


def test_service_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run("service")
    assert exc.value.code == Exit.USAGE
    assert "ACTION" in capsys.readouterr().err
