"""islurmd under systemd's contract: the units `islurmctl service install` writes pass
`systemd-analyze verify`, and islurmd serves a socket handed over the way systemd hands it
(fd 3, LISTEN_FDS/LISTEN_PID) and leaves that socket alone when it exits."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from islurm.daemon.ctl import units as unit_files
from tests.e2e.conftest import User

POLICY_RC = Path("/usr/sbin/policy-rc.d")
GUARD = 60.0

# Plays systemd's part as the user: owns the listening socket (created 0600 in a 0700 dir,
# like SocketMode=/DirectoryMode=), and for each "start" line on stdin forks, points
# LISTEN_PID at the child's own pid, puts the socket on fd 3 and execs islurmd; reports
# {"pid": N} and then {"exit": code}. It keeps its own copy of the socket open throughout.
ACTIVATOR = """\
import json, os, socket, sys

path, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
old = os.umask(0o177)
listener.bind(path)
os.umask(old)
listener.listen(128)
print(json.dumps({"listening": path, "helper": os.getpid()}), flush=True)
for line in sys.stdin:
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(listener.fileno(), 3)
            os.set_inheritable(3, True)  # dup2 onto itself would keep close-on-exec
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.environ["LISTEN_FDS"] = "1"
            os.environ["LISTEN_PID"] = str(os.getpid())
            os.environ["LISTEN_FDNAMES"] = "islurmd.socket"
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(out)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """systemd-analyze, installed from Debian's systemd package if missing; never a skip."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    made_policy = False
    if not POLICY_RC.exists():  # keep package scripts from starting services
        POLICY_RC.write_text("#!/bin/sh\n# islurm e2e (test_systemd.py)\nexit 101\n")
        POLICY_RC.chmod(0o755)
        made_policy = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=300",
        "systemd",
    ]
    try:
        r = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:  # stale or missing package lists
            subprocess.run(
                ["apt-get", "update", "-o", "DPkg::Lock::Timeout=300"],
                capture_output=True,
                env=env,
                timeout=900,
            )
            r = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    finally:
        if made_policy:
            POLICY_RC.unlink()
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail(f"cannot install systemd-analyze (apt-get: {r.returncode}):\n{r.stderr}")
    return found


@pytest.fixture
def user_dir(user: User) -> Iterator[Path]:
    """A fresh 0700 directory of the test user's, with a short path (sun_path is small)."""
    path = Path(tempfile.mkdtemp(prefix="isd", dir="/tmp"))
    os.chown(path, user.uid, -1)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _mkdir_for(user: User, path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    os.chown(path, user.uid, -1)
    return path


def verify(user: User, analyze: str, runtime: Path, *units: Path) -> tuple[bool, str]:
    """`systemd-analyze verify` on unit files as the user's manager would load them. It
    exits 0 on unknown keys and unparsable values (it only warns), so any output fails."""
    r = user.run(
        [analyze, "verify", "--user", "--man=no", *map(str, units)],
        env={"XDG_RUNTIME_DIR": str(runtime)},
        timeout=120,
    )
    output = (r.stdout + r.stderr).decode(errors="replace")
    return r.returncode == 0 and not output.strip(), output


def directive(text: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith(f"{key}=")]


def test_installed_units_pass_systemd_analyze_verify(
    user: User, user_dir: Path, systemd_analyze: str
) -> None:
    config = _mkdir_for(user, user_dir / "config")
    runtime = _mkdir_for(user, user_dir / "run")
    # No systemctl on PATH: install only writes the files.
    r = user.run(
        ["islurmctl", "service", "install"],
        env={"XDG_CONFIG_HOME": str(config), "PATH": f"{user.prefix}/bin"},
    )
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "systemctl is not installed" in out and "on demand" in out
    units = config / "systemd" / "user"
    sock_unit, svc_unit = units / "islurmd.socket", units / "islurmd.service"
    assert sorted(p.name for p in units.iterdir()) == ["islurmd.service", "islurmd.socket"]
    text = svc_unit.read_text()
    islurmd = f"{user.prefix}/share/islurm/current/venv/bin/islurmd"
    assert directive(text, "ExecStart") == [islurmd]
    assert os.access(islurmd, os.X_OK)
    assert directive(sock_unit.read_text(), "ListenStream") == ["%t/islurm/islurmd.sock"]

    ok, output = verify(user, systemd_analyze, runtime, sock_unit, svc_unit)
    assert ok, output

    # The check has teeth: a misspelt directive, a bad value, a missing program all fail it.
    bad = _mkdir_for(user, user_dir / "bad")
    for broken_service, broken_socket, expect in [
        (text.replace("TimeoutStopSec=", "TimeoutStopSecs="), None, "Unknown key"),
        (None, sock_unit.read_text().replace("=0600", "=06x0"), "Failed to parse"),
        (text.replace(islurmd, f"{islurmd}-missing"), None, "is not executable"),
    ]:
        (bad / "islurmd.service").write_text(broken_service or text)
        (bad / "islurmd.socket").write_text(broken_socket or sock_unit.read_text())
        for f in bad.iterdir():
            os.chown(f, user.uid, -1)
        ok, output = verify(user, systemd_analyze, runtime, *sorted(bad.iterdir()))
        assert not ok and expect in output, output


def test_exec_start_quoting_holds_for_a_path_with_blanks_and_specials(
    user: User, user_dir: Path, systemd_analyze: str
) -> None:
    runtime = _mkdir_for(user, user_dir / "run")
    odd = _mkdir_for(user, user_dir / "my venv $HOME %n;x")
    islurmd = odd / "islurm d"
    islurmd.symlink_to(f"{user.prefix}/share/islurm/venv/bin/islurmd")
    units = _mkdir_for(user, user_dir / "units")
    path_env = f'/opt/slurm 1/bin:/opt/"q"/50%/$x:{odd}:/usr/bin:/bin'
    for name, body in unit_files.render([str(islurmd)], path_env).items():
        (units / name).write_text(body)
        os.chown(units / name, user.uid, -1)
    # systemd only finds the program if it split and unescaped the line back to this path.
    ok, output = verify(user, systemd_analyze, runtime, *sorted(units.iterdir()))
    assert ok, output
    islurmd.unlink()
    ok, output = verify(user, systemd_analyze, runtime, *sorted(units.iterdir()))
    assert not ok and f"Command {islurmd} is not executable" in output, output


class Activator:
    """The ACTIVATOR helper running as the user; every process it starts is stopped by pid."""

    def __init__(self, user: User, runtime: Path) -> None:
        self.user, self.runtime = user, runtime
        self.sock = runtime / "islurm" / "islurmd.sock"
        self.log = runtime / "daemon.out"
        script = runtime / "activate.py"
        script.write_text(ACTIVATOR)
        os.chown(script, user.uid, -1)
        self.daemons: list[int] = []
        self.proc = subprocess.Popen(
            user.argv(
                [
                    "/usr/bin/python3",
                    "-I",
                    str(script),
                    str(self.sock),
                    str(self.log),
                    f"{user.prefix}/bin/islurmd",
                ],
                {"XDG_RUNTIME_DIR": str(runtime)},
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.helper = int(str(self.read(GUARD)["helper"]))

    def read(self, timeout: float) -> dict[str, object]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            raise AssertionError(f"the activator said nothing in {timeout} s; {self.output()}")
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg

    def output(self) -> str:
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"islurmd output:\n{log}"

    def start(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"start\n")
        self.proc.stdin.flush()
        pid = int(str(self.read(GUARD)["pid"]))
        self.daemons.append(pid)
        return pid

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: the helper exits once its daemon has
        self.proc.stdin = None
        for pid in self.daemons:
            _kill_if_alive(pid)
        _stop_tree(self.proc)


def _kill_if_alive(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            proc.kill()


def _stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """runuser forks: stop what it started (by pid), then runuser itself."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(proc.pid).children(recursive=True):
            _kill_if_alive(child.pid)
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=GUARD)


def _status(user: User, runtime: Path) -> dict[str, object]:
    # Resolves the socket as clients do: $XDG_RUNTIME_DIR/islurm/islurmd.sock, like %t.
    r = user.run(["islurmctl", "status", "--json"], env={"XDG_RUNTIME_DIR": str(runtime)})
    assert r.returncode == 0, r.stderr.decode()
    status = json.loads(r.stdout)
    assert isinstance(status, dict)
    return status


def test_islurmd_serves_a_socket_passed_like_systemd_and_leaves_it_there(
    user: User, user_dir: Path
) -> None:
    runtime = user_dir
    activator = Activator(user, runtime)
    try:
        sock = activator.sock
        pid = activator.start()
        status = _status(user, runtime)
        assert status["mode"] == "systemd", activator.output()
        assert status["pid"] == pid
        assert status["socket"] == str(sock)
        # systemd mode binds nothing of its own, but holds the per-socket lock (with its pid)
        # so an on-demand islurmd can never serve the same user beside it.
        assert (sock.parent / "islurmd.lock").read_text().strip() == str(pid)

        os.kill(pid, signal.SIGTERM)
        exited = activator.read(10)
        assert exited == {"exit": 0}, activator.output()
        st = os.lstat(sock)  # systemd owns the socket file: islurmd must not remove it
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == user.uid
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700

        # A client that connects while no islurmd runs waits in the socket's backlog and is
        # answered by the next one: the socket outlived the daemon, as under systemd.
        waiting = subprocess.Popen(
            user.argv(["islurmctl", "status", "--json"], {"XDG_RUNTIME_DIR": str(runtime)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(0.5)
            assert waiting.poll() is None
            second = activator.start()
            out, err = waiting.communicate(timeout=GUARD)
        finally:
            _stop_tree(waiting)
        assert waiting.returncode == 0, err.decode()
        assert json.loads(out)["pid"] == second
        os.kill(second, signal.SIGTERM)
        assert activator.read(10) == {"exit": 0}, activator.output()
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    finally:
        activator.stop()


# -- under a live systemd --user manager ------------------------------------------------------

SYSTEMD = "/lib/systemd/systemd"
BOOTED = Path("/run/systemd/system")  # systemd believes it booted the machine when this exists
CGROUPS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
IDLE_EXIT = """\
[daemon]
poll_busy = 0.25
idle_exit = "10s"

[update]
mode = "off"

[profiles.short]
description = "a small CPU job for tests"
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
"""


@dataclass
class UserManager:
    pid: int
    runtime: Path

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": str(self.runtime)}


def _rmdir_tree(path: Path) -> None:
    """A cgroup and the ones systemd made inside it, deepest first (only rmdir works there)."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


@pytest.fixture
def user_manager(user: User, systemd_analyze: str) -> Iterator[UserManager]:
    """`systemd --user` for the test user, as ../shared/test-cluster-notes.md describes: PID 1
    here is not systemd. After every apt install (systemd_analyze), /run/systemd/system is made
    (and removed again), cgroups are delegated, and the manager is stopped by its pid."""
    if not os.access(SYSTEMD, os.X_OK):
        pytest.fail(f"{SYSTEMD} is missing (the systemd package)")
    made: list[Path] = []
    if not BOOTED.exists():
        BOOTED.mkdir(parents=True)
        made.append(BOOTED)
    uid, gid = user.uid, int(subprocess.check_output(["id", "-g", user.name]).strip())
    runtime = Path(f"/run/user/{uid}")
    if not runtime.exists():
        runtime.mkdir(mode=0o700, parents=True)
        made.append(runtime)
    os.chown(runtime, uid, gid)
    os.chmod(runtime, 0o700)
    slice_ = f"user.slice/user-{uid}.slice/user@{uid}.service"
    cgroups = [root / slice_ for root in CGROUPS if root.is_dir()]
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)
        for p in [cg, *cg.rglob("*")]:
            os.chown(p, uid, gid)
    env = [f"XDG_RUNTIME_DIR={runtime}", f"HOME={user.home}", f"USER={user.name}",
           f"LOGNAME={user.name}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]  # fmt: skip
    # As root, move the shell into the delegated cgroups (cgroup v2 wants root for the move),
    # then become the user and exec the manager: its pid is the shell's.
    move = " && ".join(f'echo $$ > "${i + 1}/cgroup.procs"' for i in range(len(cgroups)))
    argv = ["sh", "-c", f'{move or "true"} && shift {len(cgroups)} && exec "$@"', "sh",
            *map(str, cgroups), "setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups",
            "env", "-i", *env, SYSTEMD, "--user"]  # fmt: skip
    fd, log_name = tempfile.mkstemp(prefix="isd-manager-")
    log = Path(log_name)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd)
    os.close(fd)
    manager = UserManager(proc.pid, runtime)
    try:
        deadline = time.monotonic() + GUARD
        state = ""
        while state not in ("running", "degraded"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"systemd --user did not come up (exit {proc.poll()}, state {state!r}):\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.2)
            r = user.run(["systemctl", "--user", "is-system-running"], env=manager.env)
            state = r.stdout.decode().strip()
        yield manager
    finally:
        user.run(["islurmctl", "service", "uninstall"], env=manager.env)
        if proc.poll() is None:
            proc.terminate()  # the manager stops its units (islurmd included), then exits
            try:
                proc.wait(GUARD)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.unlink()
        for cg in cgroups:
            _rmdir_tree(cg)
            for parent in (cg.parent, cg.parent.parent):  # user-UID.slice, user.slice
                with contextlib.suppress(OSError):
                    parent.rmdir()
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True)


def _unit_state(user: User, manager: UserManager, unit: str) -> str:
    r = user.run(["systemctl", "--user", "is-active", unit], env=manager.env)
    return r.stdout.decode().strip()


def _systemd_daemon(user: User, manager: UserManager) -> int:
    status = _status(user, manager.runtime)
    assert status["mode"] == "systemd", status
    pid = int(str(status["pid"]))
    assert psutil.Process(pid).ppid() == manager.pid  # started by the user manager
    return pid


def test_socket_activation_under_a_live_user_manager_and_the_idle_exit(
    user: User, user_manager: UserManager, tmp_path: Path
) -> None:
    user.stop_daemon()
    user.prepare(IDLE_EXIT, tmp_path)
    r = user.run(["islurmctl", "service", "install"], env=user_manager.env)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert _unit_state(user, user_manager, "islurmd.socket") == "active"
    assert _unit_state(user, user_manager, "islurmd.service") == "inactive"  # not started yet
    sock = user_manager.runtime / "islurm" / "islurmd.sock"
    assert stat.S_ISSOCK(os.lstat(sock).st_mode) and os.lstat(sock).st_uid == user.uid

    # The first connect reaches the socket systemd holds: it starts islurmd.
    first = user.run(user.ssh_argv("slurm-short", "echo in-job"), env=user_manager.env, timeout=180)
    assert first.returncode == 0 and first.stdout == b"in-job\n", first.stderr.decode()
    pid = _systemd_daemon(user, user_manager)
    assert _unit_state(user, user_manager, "islurmd.service") == "active"

    # With no job and no connection, the daemon exits after idle_exit; the socket stays.
    cancel = user.run(["islurmctl", "cancel", "--all"], env=user_manager.env)
    assert cancel.returncode == 0, cancel.stderr.decode()
    user.wait_no_jobs()
    deadline = time.monotonic() + 60
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the unused islurmd did not exit"
        time.sleep(0.5)
    while _unit_state(user, user_manager, "islurmd.service") == "deactivating":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _unit_state(user, user_manager, "islurmd.service") == "inactive"
    assert _unit_state(user, user_manager, "islurmd.socket") == "active"

    # The next connect activates it again.
    again = user.run(user.ssh_argv("slurm-short", "hostname"), env=user_manager.env, timeout=180)
    assert again.returncode == 0, again.stderr.decode()
    assert _systemd_daemon(user, user_manager) != pid
