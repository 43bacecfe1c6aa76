"""The laptop route (proxyshim/hop.py): its line contract, the login node's end
(`islurm-proxy --endpoint`, against the scripted fake islurmd) and the laptop's end
(`islurm-proxy --via`, against a scripted fake `ssh` that serves the SOCKS socket)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from islurm.proxyshim import hop
from islurm.proxyshim.exits import EXIT_NODE, EXIT_OK
from tests.unit.shimfakes import GUARD, MakeDaemon, MakeTcp, Peer, Start
from tests.unit.test_proxyshim_rpc import BANNER, finish, ready_at, ready_params
from tests.unit.test_proxyshim_stale import dead_port

# -- the contract -----------------------------------------------------------------------------


def test_an_endpoint_line_round_trips() -> None:
    line = hop.endpoint_line("10.1.2.3", 40022)
    assert line == b"islurm-endpoint 1 10.1.2.3 40022\n"
    assert hop.parse_endpoint(line.rstrip(b"\n")) == ("10.1.2.3", 40022)


@pytest.mark.parametrize(
    "noise", [b"", b"Welcome to the cluster", b"islurm-endpoint 1 host", b"endpoint 1 h 22"]
)
def test_other_lines_are_noise(noise: bytes) -> None:
    assert hop.parse_endpoint(noise) is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"islurm-endpoint 2 host 22", "route version"),
        (b"islurm-endpoint 1 host 0", "malformed"),
        (b"islurm-endpoint 1 host 65536", "malformed"),
        (b"islurm-endpoint 1 host -1", "malformed"),
        (b"islurm-endpoint 1 h\xc3\xa9 22", "malformed"),
    ],
)
def test_a_bad_endpoint_line_is_an_error(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        hop.parse_endpoint(line)


def test_the_remote_command_execs_the_shim_with_plain_words() -> None:
    assert hop.remote_command("islurm-proxy", "cpu", None, None) == (
        "exec islurm-proxy --endpoint cpu"
    )
    assert hop.remote_command("/opt/i/bin/islurm-proxy", "gpu", "img:1", 30.0) == (
        "exec /opt/i/bin/islurm-proxy --endpoint --image img:1 --timeout 30.0 gpu"
    )


@pytest.mark.parametrize(
    ("remote", "profile", "image"),
    [
        ("islurm-proxy", "c;id", None),
        ("islurm proxy", "cpu", None),
        ("islurm-proxy", "cpu", "$(id)"),
        ("islurm-proxy", "", None),
        ("~/bin/islurm-proxy", "cpu", None),
    ],
)
def test_a_word_the_shell_would_read_otherwise_is_refused(
    remote: str, profile: str, image: str | None
) -> None:
    with pytest.raises(ValueError, match="login node's shell"):
        hop.remote_command(remote, profile, image, None)


# -- the login node's end ---------------------------------------------------------------------


#: what the login node's shim asks islurmd for (client_pid aside)
ACQUIRE = {"fdpass": True, "protocol": 1, "profile": "cpu"}


def test_the_endpoint_is_printed_and_ok_hands_the_session(
    shim_daemon: MakeDaemon, shim_start: Start
) -> None:
    daemon = shim_daemon()

    @daemon.script
    def acquire(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        params = msg["params"]
        assert isinstance(params, dict)
        assert {k: v for k, v in params.items() if k != "client_pid"} == ACQUIRE
        peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.ready", ready_params(2222))
        peer.expect("session.handed", {"lease": "L-1"})
        peer.wait_eof()

    code, out, err = finish(shim_start("--endpoint", "cpu"), b"ok\n")
    assert (code, out) == (EXIT_OK, b"islurm-job 1 42\nislurm-endpoint 1 127.0.0.1 2222\n"), err
    daemon.check()


def test_unreachable_asks_islurmd_again_and_gives_up_after_three(
    shim_daemon: MakeDaemon, shim_start: Start
) -> None:
    daemon = shim_daemon()
    gone = {"job_id": "42", "host": "127.0.0.1", "port": 2222}

    def attempt(first: bool) -> None:
        @daemon.script
        def acquire(peer: Peer) -> None:
            msg = peer.expect("session.acquire")
            params = msg["params"]
            assert isinstance(params, dict)
            assert params.get("unreachable") == (None if first else gone)
            peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
            peer.notify("session.ready", ready_params(2222))
            peer.wait_eof()  # no session.handed: the laptop never connected

    for n in range(hop.STALE_RETRIES):
        attempt(n == 0)
    code, out, err = finish(shim_start("--endpoint", "cpu"), b"unreachable\n" * 3)
    assert code == EXIT_NODE
    assert out == b"islurm-job 1 42\nislurm-endpoint 1 127.0.0.1 2222\n" * 3
    assert b"did not answer through the login node, 3 times" in err
    daemon.check()


def test_a_laptop_that_leaves_ends_the_lease_without_a_hand_over(
    shim_daemon: MakeDaemon, shim_start: Start
) -> None:
    daemon = shim_daemon()
    daemon.script(ready_at(2222))  # and then only EOF: no session.handed
    code, out, _ = finish(shim_start("--endpoint", "cpu"), b"")
    assert (code, out) == (EXIT_OK, b"islurm-job 1 42\nislurm-endpoint 1 127.0.0.1 2222\n")
    daemon.check()


# -- the laptop's end -------------------------------------------------------------------------

# A stand-in for `ssh -D SOCKET LOGIN COMMAND`: it records its argv, serves SOCKS5 CONNECT on
# SOCKET (relaying to loopback), prints the scripted lines, and records the shim's answers.
FAKE_SSH = textwrap.dedent(
    """\
    import json, os, socket, sys, threading
    here = os.path.dirname(os.path.abspath(__file__))
    plan = json.load(open(os.path.join(here, "plan.json")))
    mode = "W" if "-W" in sys.argv else "D"
    json.dump(sys.argv[1:], open(os.path.join(here, f"argv-{mode}.json"), "w"))
    with open(os.path.join(here, "ssh.pids"), "a") as pids:
        pids.write(f"{os.getpid()}\\n")

    def pipe(a, b):
        while data := a.recv(65536):
            b.sendall(data)
        b.shutdown(socket.SHUT_WR)

    if mode == "W":  # ssh -W HOST:PORT LOGIN: stdin and stdout are one socket (a socketpair)
        host, port = sys.argv[sys.argv.index("-W") + 1].rsplit(":", 1)
        try:
            node = socket.create_connection((host, int(port)))
        except OSError:
            sys.stderr.write("channel 0: open failed: connect failed: Connection refused\\n")
            sys.exit(255)
        stdio = socket.socket(fileno=0)
        threading.Thread(target=pipe, args=(node, stdio), daemon=True).start()
        pipe(stdio, node)
        threading.Event().wait(60)
    path = sys.argv[sys.argv.index("-D") + 1]
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)

    def socks():
        while True:
            conn, _ = server.accept()
            assert conn.recv(3) == b"\\x05\\x01\\x00"
            conn.sendall(b"\\x05\\x00")
            head = conn.recv(5)
            host = conn.recv(head[4]).decode()
            port = int.from_bytes(conn.recv(2), "big")
            try:
                node = socket.create_connection((host, port))
            except OSError:
                conn.sendall(b"\\x05\\x05\\x00\\x01" + bytes(6))
                conn.close()
                continue
            conn.sendall(b"\\x05\\x00\\x00\\x01" + bytes(6))
            threading.Thread(target=pipe, args=(conn, node), daemon=True).start()
            threading.Thread(target=pipe, args=(node, conn), daemon=True).start()

    threading.Thread(target=socks, daemon=True).start()
    out = open(os.path.join(here, "answers"), "ab")
    for line in plan["lines"]:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith("islurm-endpoint"):
            answer = sys.stdin.buffer.readline()
            out.write(answer)
            out.flush()
            if answer == b"ok\\n":
                threading.Event().wait(60)  # carries the session, as ssh -D does
    sys.stderr.write(plan.get("stderr", ""))
    sys.exit(plan.get("exit", 0))
    """
)


class FakeSsh:
    def __init__(self, where: Path, lines: list[str], exit: int = 0, stderr: str = "") -> None:
        self.dir = where / "bin"
        self.dir.mkdir()
        script = self.dir / "ssh"
        script.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
        script.chmod(0o755)
        plan = {"lines": lines, "exit": exit, "stderr": stderr}
        (self.dir / "plan.json").write_text(json.dumps(plan))

    def argv(self, mode: str = "D") -> list[str]:
        """The argv of the last `ssh -D` (mode D) or `ssh -W` (mode W) run."""
        argv: list[str] = json.loads((self.dir / f"argv-{mode}.json").read_text())
        return argv

    def ran(self, mode: str) -> bool:
        return (self.dir / f"argv-{mode}.json").exists()

    def forget_runs(self) -> None:
        for mode in "DW":
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"argv-{mode}.json").unlink()

    def answers(self) -> bytes:
        return (self.dir / "answers").read_bytes() if (self.dir / "answers").exists() else b""

    def stop(self) -> None:
        """The fakes outlive the shim (as ssh -D and ssh -W do): stop them by pid."""
        pidfile = self.dir / "ssh.pids"
        if pidfile.exists():
            for pid in pidfile.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)


def _via(
    shim_start: Start, fake: FakeSsh, env: dict[str, str], stdout: socket.socket | None = None
) -> tuple[int, bytes]:
    env = {**env, "PATH": f"{fake.dir}:{os.environ['PATH']}"}
    errfile = fake.dir / "stderr"  # a file: the fake ssh, which outlives the shim, shares it
    with errfile.open("wb") as err:
        proc = shim_start(
            *("--via", "login", "cpu"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout.fileno() if stdout else subprocess.DEVNULL,
            stderr=err,
        )
        try:
            code = proc.wait(GUARD)
        except subprocess.TimeoutExpired:
            raise AssertionError(errfile.read_bytes()) from None
    return code, errfile.read_bytes()


def test_via_connects_through_the_socks_socket_and_hands_the_socket_over(
    shim_dir: Path, runtime: dict[str, str], shim_tcp: MakeTcp, shim_start: Start
) -> None:
    def sshd(conn: socket.socket) -> None:
        conn.sendall(BANNER)
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")

    node = shim_tcp(sshd)
    stale = dead_port()
    lines = [
        "Welcome! (a login script's noise)\n",
        hop.endpoint_line("127.0.0.1", stale).decode(),
        hop.endpoint_line("127.0.0.1", node.port).decode(),
    ]
    fake = FakeSsh(shim_dir, lines)
    ssh_side, shim_side = socket.socketpair()
    try:
        code, err = _via(shim_start, fake, runtime, stdout=shim_side)
        assert code == EXIT_OK, err
        data, fds, _, _ = socket.recv_fds(ssh_side, 1, 1)
        assert data == b"\0" and len(fds) == 1
        with socket.socket(fileno=fds[0]) as passed:
            passed.settimeout(GUARD)
            assert passed.recv(len(BANNER)) == BANNER  # left queued for ssh
            passed.sendall(b"ping")
            assert passed.recv(4) == b"pong"
        node.check()
        assert fake.answers() == b"unreachable\nok\n"
        argv = fake.argv()
        assert argv[-2:] == ["login", "exec islurm-proxy --endpoint cpu"]
        for option in ("BatchMode=yes", "ControlMaster=no", "ControlPath=none"):
            assert argv[argv.index(option) - 1] == "-o"
        socks = argv[argv.index("-D") + 1]
        assert socks.startswith(runtime["XDG_RUNTIME_DIR"] + "/islurm-via-")
        assert not os.path.exists(os.path.dirname(socks))  # the private dir is removed
    finally:
        fake.stop()
        ssh_side.close()
        shim_side.close()


def test_via_passes_on_the_login_sides_exit_code(
    shim_dir: Path, runtime: dict[str, str], shim_start: Start
) -> None:
    fake = FakeSsh(shim_dir, ["motd\n"], exit=EXIT_NODE, stderr="islurm-proxy: no node\n")
    code, err = _via(shim_start, fake, runtime)
    assert code == EXIT_NODE
    assert b"islurm-proxy: no node" in err
    assert os.listdir(runtime["XDG_RUNTIME_DIR"]) == []


def test_via_says_when_ssh_to_the_login_node_failed(
    shim_dir: Path, runtime: dict[str, str], shim_start: Start
) -> None:
    fake = FakeSsh(shim_dir, [], exit=255, stderr="ssh: connect to host login: refused\n")
    code, err = _via(shim_start, fake, runtime)
    assert code != EXIT_OK
    assert b"ssh to the login node ended (exit 255) before a session" in err
    assert os.listdir(runtime["XDG_RUNTIME_DIR"]) == []


def test_via_refuses_a_login_node_of_another_route_version(
    shim_dir: Path, runtime: dict[str, str], shim_start: Start
) -> None:
    fake = FakeSsh(shim_dir, ["islurm-endpoint 9 127.0.0.1 22\n"])
    try:
        code, err = _via(shim_start, fake, runtime)
        assert code != EXIT_OK
        assert b"route version" in err
    finally:
        fake.stop()
    assert os.listdir(runtime["XDG_RUNTIME_DIR"]) == []


def test_via_stops_reading_a_login_node_that_prints_only_noise(
    shim_dir: Path, runtime: dict[str, str], shim_start: Start
) -> None:
    fake = FakeSsh(shim_dir, ["x" * 99 + "\n"] * (hop.MAX_NOISE // 100 + 10))
    try:
        code, err = _via(shim_start, fake, runtime)
        assert code != EXIT_OK
        assert b"the login node printed no endpoint, only noise" in err
    finally:
        fake.stop()
