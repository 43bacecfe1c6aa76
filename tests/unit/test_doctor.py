"""`islurmctl doctor`: every check's pass and fail paths, the test job's flows against a scripted
islurmd and Slurm, output format, exit codes and JSON shape."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from islurm.daemon.ctl import doctor
from islurm.daemon.ctl import doctor_checks as dc
from islurm.daemon.ctl.client import DaemonUnreachable, RpcError
from islurm.daemon.ctl.main import Exit
from islurm.daemon.slurm.client import SlurmError, SlurmUnreachable
from islurm.daemon.slurm.submission import sbatch_options
from islurm.sessionhooks import sshd
from tests.unit.fakes import UNREACHABLE, FakeSlurm, rows, running_line, squeue_line

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBsomethingsomethingsomethingsomething u@h"
TEST_ONLY_OK = "sbatch: Job 30 to start at 2026-11-24T13:10:05 using 1 processors on nodes c1"
BAD_PARTITION = (
    "sbatch: error: invalid partition specified: nosuch\n"
    "allocation failure: Invalid partition name specified"
)
CONFIG = """\
[profiles.short]
sbatch = ["--partition=interactive", "--time=00:20:00"]
"""


# -- fakes ------------------------------------------------------------------------------------


class FakeDaemon:
    """islurmd as doctor sees it: live jobs, a scripted acquire, cancel; logs every step."""

    def __init__(self, live: Sequence[str] = (), acquire: Sequence[dict[str, Any]] = ()) -> None:
        self.live = list(live)
        self.acquire = list(acquire)  # notifications after session.acquire's reply
        self.submits: str | None = None  # a job id acquire adds to the live jobs
        self.acquire_error: RpcError | None = None
        self.cancel_error: dict[str, Any] | None = None
        self.unreachable = False
        self.log: list[str] = []
        self.status = {"version": "0.1.0", "pid": 4242, "mode": "on-demand", "uptime": 3.0}

    def connect(self) -> FakeClient:
        if self.unreachable:
            raise DaemonUnreachable("no islurmd at /tmp/x.sock: connection refused")
        self.log.append("connect")
        return FakeClient(self)


class FakeClient:
    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        self.timeouts: list[float | None] = []  # of read_message
        self.inbox: deque[dict[str, Any]] = deque()

    def call(self, method: str, **params: Any) -> Any:
        d = self.daemon
        d.log.append(f"{method} {json.dumps(params, sort_keys=True)}" if params else method)
        if method == "daemon.status":
            return d.status
        if method == "session.list":
            return {"jobs": [{"job_id": j, "state": "RUNNING"} for j in d.live]}
        if method == "session.acquire":
            if d.acquire_error:
                raise d.acquire_error
            if d.submits:
                d.live.append(d.submits)
            self.inbox.extend({"jsonrpc": "2.0", "method": m["method"], **m} for m in d.acquire)
            return {"lease": "L-1", "profile": params["profile"]}
        if method == "session.cancel":
            if not d.cancel_error:
                d.live.remove(params["target"])
            done = {"target": params["target"], "job_ids": [params["target"]]}
            if d.cancel_error:
                done = {"target": params["target"], "job_ids": [], "error": d.cancel_error}
            self.inbox.append({"method": "session.cancel.done", "params": done})
            return {"target": params["target"], "pending": True}
        raise AssertionError(f"unexpected RPC {method}")

    def read_message(self, timeout: float | None = None) -> dict[str, Any]:
        self.timeouts.append(timeout)
        if not self.inbox:
            raise TimeoutError("timed out")
        return self.inbox.popleft()

    def wait_notification(self, method: str) -> dict[str, Any]:
        while True:
            msg = self.read_message()
            if msg.get("method") == method:
                params: dict[str, Any] = msg["params"]
                return params

    def close(self) -> None:
        self.daemon.log.append("close")


def progress(message: str, job_id: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"message": message, "waited": 0.1}
    if job_id:
        params["job_id"] = job_id
    return {"method": "session.progress", "params": params}


def ready(job_id: str = "12") -> dict[str, Any]:
    params = {"job_id": job_id, "node": "c1", "host": "c1", "port": 20001, "lease": "L-1"}
    return {"method": "session.ready", "params": params}


def failed(code: int, message: str, job_id: str | None = None) -> dict[str, Any]:
    return {
        "method": "session.failed",
        "params": {"code": code, "message": message, "job_id": job_id},
    }


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with a private home, config, state dir and socket path, all under tmp_path."""
    for var in list(os.environ):
        if var.startswith(("ISLURM_", "XDG_")):
            monkeypatch.delenv(var)
    h = tmp_path / "home"
    h.mkdir(mode=0o755)
    monkeypatch.setenv("HOME", str(h))
    (h / ".config" / "islurm").mkdir(parents=True)
    (h / ".config" / "islurm" / "config.toml").write_text(CONFIG)
    monkeypatch.setenv("ISLURM_STATE_DIR", str(h / "state"))
    monkeypatch.setenv("ISLURM_SOCKET", str(tmp_path / "run" / "islurmd.sock"))
    return h


def make_doctor(
    home: Path, slurm: FakeSlurm, daemon: FakeDaemon, **kw: Any
) -> tuple[doctor.Doctor, list[str]]:
    said: list[str] = []
    d = doctor.Doctor(
        config=str(home / ".config" / "islurm" / "config.toml"),
        socket=os.environ["ISLURM_SOCKET"],
        slurm=slurm,
        connect=daemon.connect,
        say=said.append,
        read_banner=lambda host, port: "SSH-2.0-OpenSSH_9.2p1 Debian-2",
        **kw,
    )
    return d, said


# -- 1. config --------------------------------------------------------------------------------


def test_config_missing_file_means_builtin_defaults(tmp_path: Path) -> None:
    c, settings = dc.check_config(str(tmp_path / "none.toml"))
    assert c.status is dc.Status.OK and settings is not None
    assert "built-in defaults" in c.detail and "cpu" in c.detail


def test_config_loads_the_users_profiles(home: Path) -> None:
    c, settings = dc.check_config(str(home / ".config/islurm/config.toml"))
    assert c.status is dc.Status.OK and settings is not None and "short" in settings.profiles
    assert c.detail.startswith(str(home / ".config/islurm/config.toml") + ":")


def test_config_error_points_at_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[daemon]\npoll_busy = 1\npoll_idel = 3\n")
    c, settings = dc.check_config(str(cfg))
    assert settings is None and c.status is dc.Status.FAIL and c.kind == "config_invalid"
    assert c.detail.startswith(f"{cfg}:3: daemon.poll_idel: unknown key")
    assert c.fix == f"edit {cfg} line 3 (daemon.poll_idel)"


def test_config_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[daemon]\npoll_busy = = 1\n")
    c, _ = dc.check_config(str(cfg))
    assert c.status is dc.Status.FAIL and c.fix.startswith(f"edit {cfg} line 2")


def test_config_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dc, "load_settings", refuse)
    c, _ = dc.check_config(str(tmp_path / "c.toml"))
    assert c.status is dc.Status.FAIL and "Permission denied" in c.detail
    assert c.kind == "config_invalid"


# -- 2. SSH pieces ----------------------------------------------------------------------------


def test_command_found_and_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda n: "/usr/bin/ssh" if n == "ssh" else None)
    assert dc.check_command("ssh", "openssh-client", "x") == dc.ok("ssh", "/usr/bin/ssh")
    c = dc.check_command("ssh-keygen", "openssh-client", "signs host keys")
    assert c.status is dc.Status.FAIL and "not on PATH" in c.detail
    assert c.fix == "install openssh-client or put ssh-keygen on PATH"


def test_sshd_found_says_compute_nodes_need_it() -> None:
    c = dc.check_sshd(lambda: "/usr/sbin/sshd")
    assert c.status is dc.Status.OK and "/usr/sbin/sshd" in c.detail
    assert "compute nodes" in c.detail


def test_sshd_missing() -> None:
    def missing() -> str:
        raise sshd.SshdError("no sshd binary found")

    c = dc.check_sshd(missing)
    assert c.status is dc.Status.FAIL and "compute nodes" in c.detail
    assert "openssh-server" in c.fix


def make_ca(d: Path, dir_mode: int = 0o700, key_mode: int = 0o600) -> Path:
    d.mkdir(parents=True)
    (d / "ca").write_text("private")
    (d / "ca.pub").write_text("ssh-ed25519 AAAA islurm-user-ca")
    (d / "ca").chmod(key_mode)
    d.chmod(dir_mode)
    return d


def test_ca_ok(tmp_path: Path) -> None:
    assert dc.check_ca(str(make_ca(tmp_path / "ca"))).status is dc.Status.OK


def test_ca_not_created_yet_is_a_warning(tmp_path: Path) -> None:
    c = dc.check_ca(str(tmp_path / "ca"))
    assert c.status is dc.Status.WARN and "islurmctl known-hosts" in c.fix


@pytest.mark.parametrize(
    ("dir_mode", "key_mode", "fix"), [(0o755, 0o600, "chmod 700"), (0o700, 0o644, "chmod 600")]
)
def test_ca_loose_modes_fail(tmp_path: Path, dir_mode: int, key_mode: int, fix: str) -> None:
    c = dc.check_ca(str(make_ca(tmp_path / "ca", dir_mode, key_mode)))
    assert c.status is dc.Status.FAIL and c.fix.startswith(fix)


def test_ca_missing_public_half(tmp_path: Path) -> None:
    d = make_ca(tmp_path / "ca")
    (d / "ca.pub").unlink()
    c = dc.check_ca(str(d))
    assert c.status is dc.Status.FAIL and "ca.pub is missing" in c.detail


def test_ca_owned_by_someone_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_ca(tmp_path / "ca")
    monkeypatch.setattr(os, "getuid", lambda: os.stat(d).st_uid + 1)
    c = dc.check_ca(str(d))
    assert c.status is dc.Status.FAIL and "not by you" in c.detail and "delete" in c.fix


def authorized(home: Path, text: str | None, mode: int = 0o600) -> Path:
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    path = ssh / "authorized_keys"
    if text is not None:
        path.write_text(text)
        path.chmod(mode)
    return path


def test_authorized_keys_ok_counts_keys_with_options(home: Path) -> None:
    authorized(home, f'# mine\n{KEY}\nno-pty,from="10.0.0.1" {KEY}\n\n')
    c = dc.check_authorized_keys(str(home))
    assert c.status is dc.Status.OK and c.detail.endswith(": 2 keys")


def test_authorized_keys_missing(home: Path) -> None:
    authorized(home, None)
    c = dc.check_authorized_keys(str(home))
    assert c.status is dc.Status.FAIL and c.fix == "add your public key to ~/.ssh/authorized_keys"


def test_authorized_keys_without_a_key(home: Path) -> None:
    authorized(home, "# nothing here\n\nnot a key\n")
    c = dc.check_authorized_keys(str(home))
    assert c.status is dc.Status.FAIL and "no public key" in c.detail
    assert c.fix == "add your public key to ~/.ssh/authorized_keys"


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_authorized_keys_writable_by_others(home: Path, mode: int) -> None:
    path = authorized(home, KEY + "\n", mode)
    c = dc.check_authorized_keys(str(home))
    assert c.status is dc.Status.FAIL and c.fix == f"chmod go-w {path}"


def test_authorized_keys_in_a_group_writable_ssh_dir(home: Path) -> None:
    authorized(home, KEY + "\n")
    (home / ".ssh").chmod(0o770)
    c = dc.check_authorized_keys(str(home))
    assert c.status is dc.Status.FAIL and c.fix == f"chmod go-w {home / '.ssh'}"


# -- 3. state dir, space, quota ---------------------------------------------------------------


def test_state_dir_is_created_private(tmp_path: Path) -> None:
    c = dc.check_state_dir(str(tmp_path / "a" / "state"))
    assert c.status is dc.Status.OK and "(created, 0700, writable)" in c.detail
    assert os.stat(tmp_path / "a" / "state").st_mode & 0o777 == 0o700


def test_state_dir_existing_and_private(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir(mode=0o700)
    c = dc.check_state_dir(str(tmp_path / "s"))
    assert c.status is dc.Status.OK and c.detail.endswith(" (0700, writable)")
    assert "created" not in c.detail
    assert os.listdir(tmp_path / "s") == []  # the write probe is gone


def test_state_dir_open_to_others_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s").chmod(0o755)
    c = dc.check_state_dir(str(tmp_path / "s"))
    assert c.status is dc.Status.WARN and c.fix == f"chmod 700 {tmp_path / 's'}"


def test_state_dir_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("")
    c = dc.check_state_dir(str(tmp_path / "s"))
    assert c.status is dc.Status.FAIL and "ISLURM_STATE_DIR" in c.fix


def test_state_dir_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    c = dc.check_state_dir(str(tmp_path / "f" / "state"))
    assert c.status is dc.Status.FAIL and "cannot create" in c.detail


def test_state_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kw: Any) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    (tmp_path / "s").mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    c = dc.check_state_dir(str(tmp_path / "s"))
    assert c.status is dc.Status.FAIL and "cannot write" in c.detail


def test_state_dir_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path / "s").st_uid + 1)
    c = dc.check_state_dir(str(tmp_path / "s"))
    assert c.status is dc.Status.FAIL and "owned by uid" in c.detail


class VFS:
    def __init__(self, free: int) -> None:
        self.f_bavail, self.f_frsize = free // 4096, 4096


def test_free_space(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "statvfs", lambda p: VFS(5 * 2**30))
    c = dc.check_free_space("/s")
    assert c.status is dc.Status.OK and c.detail == "5.0 GB free for /s"


def test_free_space_under_100_mb_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "statvfs", lambda p: VFS(50 * 2**20))
    c = dc.check_free_space("/s")
    assert c.status is dc.Status.WARN and "50.0 MB free" in c.detail


QUOTA = """\
Disk quotas for user alice (uid 1000):
     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace
home:/export/home 2048000 10240000 12288000           12000       0       0
"""


def test_quota_absent_is_never_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda n: None)
    c = dc.check_quota()
    assert c.status is dc.Status.OK and "not checked" in c.detail


def test_quota_reported() -> None:
    seen: list[list[str]] = []

    def quota(argv: list[str]) -> str:
        seen.append(argv)
        return QUOTA

    c = dc.check_quota(quota)
    assert seen == [["quota", "-w"]]
    assert c.status is dc.Status.OK and c.detail == "home:/export/home: 2.0 GB of 9.8 GB"


def test_quota_nearly_full_or_over_warns() -> None:
    over = QUOTA.replace("2048000 ", "10300000* ")
    assert dc.check_quota(lambda argv: over).status is dc.Status.WARN
    assert dc.parse_quota(over)[0][4] is True


def test_quota_none() -> None:
    c = dc.check_quota(lambda argv: "Disk quotas for user bob (uid 1001): none\n")
    assert c == dc.ok("home quota", "none")


# -- 4. daemon --------------------------------------------------------------------------------


def test_socket_dir_private(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    c = dc.check_socket_dir(str(tmp_path / "run" / "islurmd.sock"))
    assert c.status is dc.Status.OK and "0700" in c.detail


def test_socket_dir_not_yet_there(tmp_path: Path) -> None:
    assert dc.check_socket_dir(str(tmp_path / "run" / "s.sock")).status is dc.Status.OK


def test_socket_dir_open_to_others(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o755)
    c = dc.check_socket_dir(str(tmp_path / "run" / "s.sock"))
    assert c.status is dc.Status.FAIL and c.kind == "daemon_unreachable"
    assert c.fix == f"chmod 700 {tmp_path / 'run'}"


def test_socket_dir_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(tmp_path / "run").st_uid + 1)
    c = dc.check_socket_dir(str(tmp_path / "run" / "s.sock"))
    assert c.status is dc.Status.FAIL and "owned by uid" in c.detail and "remove" in c.fix


def test_socket_dir_is_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(tmp_path / "elsewhere")
    c = dc.check_socket_dir(str(tmp_path / "run" / "s.sock"))
    assert c.status is dc.Status.FAIL and "not a directory" in c.detail


def test_socket_open_to_others(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "run" / "s.sock"))
        os.chmod(tmp_path / "run" / "s.sock", 0o666)
        c = dc.check_socket_dir(str(tmp_path / "run" / "s.sock"))
    assert c.status is dc.Status.FAIL and c.fix.startswith("chmod 600")


def test_daemon_answers_with_version_mode_and_pid() -> None:
    status = {"version": "0.1.0", "pid": 4242, "mode": "on-demand", "uptime": 12.4}
    c = dc.check_daemon(lambda: status, "/s/log/islurmd.log")
    assert c == dc.ok("daemon", "islurmd 0.1.0 answers (pid 4242, on-demand mode, up 12 s)")


def test_daemon_unreachable() -> None:
    def down() -> dict[str, Any]:
        raise DaemonUnreachable("islurmd did not start: see /s/log/islurmd.log")

    c = dc.check_daemon(down, "/s/log/islurmd.log")
    assert c.status is dc.Status.FAIL and c.kind == "daemon_unreachable"
    assert "did not start" in c.detail and "/s/log/islurmd.log" in c.fix


# -- 5. Slurm, 6. profiles --------------------------------------------------------------------


def test_slurm_answers() -> None:
    answer = rows(
        running_line("7"),
        squeue_line("8", name="x", comment=""),
        squeue_line("6", state="COMPLETED"),
    )
    slurm = FakeSlurm().script("query", answer)
    c = dc.check_slurm(slurm)
    assert c.status is dc.Status.OK and "(you have 2 jobs, 1 islurm's)" in c.detail
    slurm.check()


def test_slurm_unreachable_names_slurm_and_the_fix() -> None:
    slurm = FakeSlurm().script("query", SlurmUnreachable(["squeue"], 1, "", UNREACHABLE + "\n"))
    c = dc.check_slurm(slurm)
    assert c.status is dc.Status.FAIL and c.kind == "slurm_unreachable"
    assert c.detail == f"Slurm controller unreachable: {UNREACHABLE}"
    assert c.fix == (
        "check that slurmctld is running (scontrol ping) and that this login node can reach it;"
        " ask your HPC admins"
    )


def test_slurm_commands_missing() -> None:
    slurm = FakeSlurm().script(
        "query", SlurmError(["squeue"], None, "", "cannot run squeue: No such file")
    )
    c = dc.check_slurm(slurm)
    assert c.status is dc.Status.FAIL and c.kind == "error" and "cannot run squeue" in c.detail


def settings_for(home: Path) -> Any:
    _, settings = dc.check_config(str(home / ".config/islurm/config.toml"))
    assert settings is not None
    return settings


def test_profile_accepted_with_the_daemons_own_options(home: Path) -> None:
    settings = settings_for(home)
    want = sbatch_options(
        settings.profiles["short"],
        log_path=str(home / "state" / "log" / "job-%j.log"),
        workdir=str(home),
    )
    slurm = FakeSlurm().script("test_submit", TEST_ONLY_OK)
    c = dc.check_profile(slurm, settings, "short", str(home / "state"))
    assert [(c.method, *c.args) for c in slurm.calls] == [("test_submit", want)]
    assert c.status is dc.Status.OK
    assert c.detail == (
        "--partition=interactive --time=00:20:00: would start at 2026-11-24T13:10:05 "
        "using 1 processors on nodes c1"
    )


def test_profile_bad_partition_shows_sbatchs_words(home: Path) -> None:
    settings = settings_for(home)
    slurm = FakeSlurm().script("test_submit", SlurmError(["sbatch"], 1, "", BAD_PARTITION))
    c = dc.check_profile(slurm, settings, "short", str(home / "state"))
    assert c.status is dc.Status.FAIL and "\n" not in c.detail
    assert "invalid partition specified: nosuch" in c.detail
    assert c.fix.startswith("choose a partition from `sinfo -s`")
    assert settings.path in c.fix and "[profiles.short]" in c.fix


def test_profile_other_refusal(home: Path) -> None:
    settings = settings_for(home)
    err = SlurmError(
        ["sbatch"], 1, "", "sbatch: error: Invalid generic resource (gres) specification"
    )
    c = dc.check_profile(FakeSlurm().script("test_submit", err), settings, "short", "/s")
    assert c.status is dc.Status.FAIL and c.fix.startswith("edit the profile's sbatch options")


def test_profile_slurm_unreachable(home: Path) -> None:
    err = SlurmUnreachable(["sbatch"], 1, "", UNREACHABLE)
    c = dc.check_profile(FakeSlurm().script("test_submit", err), settings_for(home), "short", "/s")
    assert c.kind == "slurm_unreachable" and c.fix == dc.SLURM_FIX


def test_profile_without_sbatch(home: Path) -> None:
    missing = FileNotFoundError(2, "No such file or directory", "sbatch")
    c = dc.check_profile(
        FakeSlurm().script("test_submit", missing), settings_for(home), "short", "/s"
    )
    assert c.status is dc.Status.FAIL and "cannot run sbatch" in c.detail


def test_unknown_profile(home: Path) -> None:
    c = dc.check_profile(FakeSlurm(), settings_for(home), "nosuch", "/s")
    assert c.status is dc.Status.FAIL and "short" in c.detail


# -- 7. the test job --------------------------------------------------------------------------


def slurm_knows(*job_ids: str) -> FakeSlurm:
    return FakeSlurm().script("query", rows(*(running_line(j) for j in job_ids)))


def test_job_submitted_by_doctor_is_cancelled_after_the_lease_is_released(home: Path) -> None:
    daemon = FakeDaemon(live=["7"], acquire=[progress("submitted job 12", "12"), ready("12")])
    daemon.submits = "12"
    d, said = make_doctor(home, slurm_knows("7"), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.OK, c
    assert c.detail.startswith("job 12 on c1 (c1:20001): sshd answered SSH-2.0-OpenSSH_9.2p1")
    assert c.detail.endswith("; cancelled job 12 (doctor submitted it)")
    assert said == ["submitted job 12"]
    assert daemon.log == [
        "connect",
        "session.list",
        "connect",
        'session.acquire {"profile": "short", "timeout": 120.0}',
        "close",  # the lease goes before the cancel
        "session.list",
        'session.cancel {"target": "12"}',
        "close",
    ]
    assert daemon.live == ["7"]


def test_users_own_job_is_left_running(home: Path) -> None:
    daemon = FakeDaemon(live=["12"], acquire=[ready("12")])
    d, _ = make_doctor(home, slurm_knows("12"), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.OK and c.detail.endswith("your running job, left running")
    assert not any("session.cancel" in step for step in daemon.log)


def test_job_slurm_knows_but_a_fresh_daemon_does_not_is_left_alone(home: Path) -> None:
    daemon = FakeDaemon(live=[], acquire=[ready("12")])  # the daemon has not polled yet
    d, _ = make_doctor(home, slurm_knows("12"), daemon)
    assert doctor.test_job(d, "short").status is dc.Status.OK
    assert not any("session.cancel" in step for step in daemon.log)


def test_session_failed_reports_the_daemons_message_and_cancels(home: Path) -> None:
    daemon = FakeDaemon(
        acquire=[progress("submitted job 12", "12"), failed(1007, "sshd failed: x", "12")]
    )
    daemon.submits = "12"
    d, _ = make_doctor(home, slurm_knows(), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and c.detail == "sshd failed: x" and c.kind == "error"
    assert "job-12.log" in c.fix
    assert 'session.cancel {"target": "12"}' in daemon.log


def test_session_failed_because_slurm_is_unreachable(home: Path) -> None:
    daemon = FakeDaemon(acquire=[failed(1004, UNREACHABLE)])
    d, _ = make_doctor(home, slurm_knows(), daemon)
    c = doctor.test_job(d, "short")
    assert c.kind == "slurm_unreachable" and c.fix == dc.SLURM_FIX
    assert not any("session.cancel" in step for step in daemon.log)


def test_no_answer_in_time_fails_and_cancels_the_pending_job(home: Path) -> None:
    daemon = FakeDaemon(acquire=[progress("job 12 is PENDING (Resources)", "12")])
    daemon.submits = "12"
    d, said = make_doctor(home, slurm_knows(), daemon)
    leases: list[FakeClient] = []

    def connect() -> FakeClient:
        client = daemon.connect()
        leases.append(client)
        return client

    d.connect = connect
    c = doctor.test_job(d, "short", timeout=5)
    assert c.status is dc.Status.FAIL and c.detail == "not ready after 5 s"
    assert "squeue -j 12" in c.fix
    assert said == ["job 12 is PENDING (Resources)"]
    assert all(t is not None and 0 < t <= 15 for t in leases[1].timeouts)
    assert leases[1].timeouts
    assert 'session.cancel {"target": "12"}' in daemon.log


def test_not_an_ssh_banner(home: Path) -> None:
    daemon = FakeDaemon(acquire=[ready("12")])
    daemon.submits = "12"
    d, _ = make_doctor(home, slurm_knows(), daemon)
    d.read_banner = lambda host, port: "HTTP/1.1 400 Bad Request"
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and "not an SSH banner" in c.detail
    assert 'session.cancel {"target": "12"}' in daemon.log


def test_banner_connection_refused(home: Path) -> None:
    def refuse(host: str, port: int) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    daemon = FakeDaemon(acquire=[ready("12")])
    d, _ = make_doctor(home, slurm_knows(), daemon)
    d.read_banner = refuse
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and "no sshd banner" in c.detail and c.kind == "error"


def test_cancel_refused_is_a_failure_with_scancel_fix(home: Path) -> None:
    daemon = FakeDaemon(acquire=[ready("12")])
    daemon.submits = "12"
    daemon.cancel_error = {"code": 1004, "message": "Slurm unreachable"}
    d, _ = make_doctor(home, slurm_knows(), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and c.fix == "scancel 12"


def test_job_that_ended_by_itself_is_not_cancelled(home: Path) -> None:
    daemon = FakeDaemon(acquire=[ready("12")])  # acquire does not add it: it is already gone
    d, _ = make_doctor(home, slurm_knows(), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.OK and c.detail.endswith("job 12 already ended")
    assert not any("session.cancel" in step for step in daemon.log)


def test_daemon_refuses_the_profile(home: Path) -> None:
    daemon = FakeDaemon()
    daemon.acquire_error = RpcError(1001, "unknown profile 'short'")
    d, _ = make_doctor(home, slurm_knows(), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and c.kind == "error" and "unknown profile" in c.detail


def test_daemon_unreachable_for_the_test_job(home: Path) -> None:
    daemon = FakeDaemon()
    daemon.unreachable = True
    d, _ = make_doctor(home, FakeSlurm(), daemon)
    c = doctor.test_job(d, "short")
    assert c.status is dc.Status.FAIL and c.kind == "daemon_unreachable"


def test_read_banner_from_a_real_socket() -> None:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            conn.recv(1)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert doctor.read_banner("127.0.0.1", server.getsockname()[1]) == (
            "SSH-2.0-OpenSSH_9.2p1 Debian-2"
        )
    finally:
        t.join(10)
        server.close()


# -- the whole run: order, skips, exit codes, output ------------------------------------------


@pytest.fixture
def ready_user(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Everything on the login node in order: tools, sshd, CA, a key."""
    monkeypatch.setattr(shutil, "which", lambda n: f"/usr/bin/{n}" if n != "quota" else None)
    monkeypatch.setattr(sshd, "find_sshd", lambda: "/usr/sbin/sshd")
    make_ca(home / ".config" / "islurm" / "ca")
    authorized(home, KEY + "\n")
    return home


NAMES = [
    "config",
    "ssh",
    "ssh-keygen",
    "sshd",
    "ssh CA",
    "authorized_keys",
    "state dir",
    "free space",
    "home quota",
    "socket dir",
    "daemon",
    "slurm",
]


def test_quick_run_checks_every_hop_in_order(ready_user: Path) -> None:
    slurm = FakeSlurm().script("query", []).script("test_submit", TEST_ONLY_OK)
    d, _ = make_doctor(ready_user, slurm, FakeDaemon(), profiles=["short"], quick=True)
    checks = doctor.run(d, emit=lambda c: None)
    assert [c.check for c in checks] == [*NAMES, "profile short"]
    assert all(c.status is dc.Status.OK for c in checks), [
        c for c in checks if c.status is not dc.Status.OK
    ]
    assert doctor.exit_code(checks) == 0
    slurm.check()


def test_full_run_tests_the_first_profile_that_passed(ready_user: Path) -> None:
    (ready_user / ".config/islurm/config.toml").write_text(
        CONFIG + '[profiles.bad]\nsbatch = ["--partition=nosuch"]\n'
    )
    refused = SlurmError(["sbatch"], 1, "", BAD_PARTITION)
    slurm = FakeSlurm().script("query", [], []).script("test_submit", refused, TEST_ONLY_OK)
    daemon = FakeDaemon(acquire=[ready("12")])
    daemon.submits = "12"
    d, _ = make_doctor(ready_user, slurm, daemon, profiles=["bad", "short"])
    checks = doctor.run(d, emit=lambda c: None)
    assert [c.check for c in checks][-3:] == ["profile bad", "profile short", "test job (short)"]
    assert checks[-1].status is dc.Status.OK
    assert doctor.exit_code(checks) == Exit.ERROR
    assert [c.method for c in slurm.calls] == ["query", "test_submit", "test_submit", "query"]
    slurm.check()


def test_slurm_unreachable_skips_profiles_and_exits_slurm_unreachable(ready_user: Path) -> None:
    slurm = FakeSlurm().script("query", SlurmUnreachable(["squeue"], 1, "", UNREACHABLE))
    d, _ = make_doctor(ready_user, slurm, FakeDaemon())
    checks = doctor.run(d, emit=lambda c: None)
    assert [c.check for c in checks] == [*NAMES, "profiles"]
    assert checks[-1].status is dc.Status.WARN and "Slurm" in checks[-1].detail
    assert doctor.exit_code(checks) == Exit.SLURM_UNREACHABLE
    slurm.check()  # no sbatch --test-only against a controller that is down


def test_first_failure_decides_the_exit_code(ready_user: Path) -> None:
    (ready_user / ".config/islurm/config.toml").write_text("[daemon]\nbogus = 1\n")
    daemon = FakeDaemon()
    daemon.unreachable = True
    slurm = FakeSlurm().script("query", SlurmUnreachable(["squeue"], 1, "", UNREACHABLE))
    d, _ = make_doctor(ready_user, slurm, daemon)
    checks = doctor.run(d, emit=lambda c: None)
    assert doctor.exit_code(checks) == Exit.CONFIG_INVALID
    assert doctor.exit_code(checks[1:]) == Exit.DAEMON_UNREACHABLE
    assert checks[-1] == dc.warn("profiles", "not checked: the config does not load")


def test_daemon_down_skips_the_test_job(ready_user: Path) -> None:
    daemon = FakeDaemon()
    daemon.unreachable = True
    slurm = FakeSlurm().script("query", []).script("test_submit", TEST_ONLY_OK)
    d, _ = make_doctor(ready_user, slurm, daemon, profiles=["short"])
    checks = doctor.run(d, emit=lambda c: None)
    assert checks[-1] == dc.warn("test job", "not run: islurmd does not answer")
    assert doctor.exit_code(checks) == Exit.DAEMON_UNREACHABLE


def test_exit_codes_by_kind() -> None:
    warn = dc.warn("x", "y")
    assert doctor.exit_code([dc.ok("a", "b"), warn]) == 0
    for kind in ("slurm_unreachable", "config_invalid", "daemon_unreachable", "error"):
        assert doctor.exit_code([warn, dc.fail("a", "b", "c", kind)]) == Exit[kind.upper()]


def test_line_format() -> None:
    assert doctor.format_check(dc.ok("config", "fine")) == "ok    config: fine"
    assert doctor.format_check(dc.warn("state dir", "mode 0755", "chmod 700 /s")) == (
        "warn  state dir: mode 0755 (chmod 700 /s)"
    )
    assert doctor.format_check(dc.fail("slurm", "down\nreally", "start it")) == (
        "FAIL  slurm: down; really\n      fix: start it"
    )


@pytest.fixture
def structlog_restored() -> Iterator[None]:
    saved, was = structlog.get_config(), structlog.is_configured()
    yield
    if was:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


def test_cmd_doctor_text_output(
    ready_user: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    structlog_restored: None,
) -> None:
    slurm = FakeSlurm().script("query", SlurmUnreachable(["squeue"], 1, "", UNREACHABLE))
    daemon = FakeDaemon()
    monkeypatch.setattr("islurm.daemon.slurm.client.SlurmCli", lambda: slurm)
    monkeypatch.setattr("islurm.daemon.ctl.client.Client", lambda path: daemon.connect())
    args = argparse.Namespace(socket=None, config=None, profiles=None, quick=True, json=False)
    assert doctor.cmd_doctor(args) == Exit.SLURM_UNREACHABLE
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"ok    config: {ready_user}/.config/islurm/config.toml:")
    assert f"FAIL  slurm: Slurm controller unreachable: {UNREACHABLE}" in lines
    assert f"      fix: {dc.SLURM_FIX}" in lines
    assert all(ln.startswith(("ok    ", "warn  ", "FAIL  ", "      fix: ")) for ln in lines)


def test_json_shape(ready_user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slurm = FakeSlurm().script("query", []).script("test_submit", TEST_ONLY_OK)
    d, _ = make_doctor(ready_user, slurm, FakeDaemon(), profiles=["short"], quick=True)
    assert doctor.report(d, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and len(out) == len(NAMES) + 1
    for item in out:
        assert set(item) == {"check", "status", "detail", "fix"}
        assert item["status"] in ("ok", "warn", "fail")
    assert out[-1]["check"] == "profile short"


def test_register_adds_the_doctor_command() -> None:
    parser = argparse.ArgumentParser()
    doctor.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", "--profile", "a", "--profile", "b", "--quick", "--json"])
    assert args.fn is doctor.cmd_doctor
    assert (args.profiles, args.quick, args.json) == (["a", "b"], True, True)
    args = parser.parse_args(["doctor"])
    assert (args.profiles, args.quick, args.json) == (None, False, False)
