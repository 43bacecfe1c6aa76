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
