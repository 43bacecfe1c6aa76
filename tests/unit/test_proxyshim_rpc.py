"""The shim against a scripted fake islurmd (docs/PROTOCOL.md §2), and its JSON codec."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from islurm.proxyshim import jsonline, rpc, spawn
from islurm.proxyshim import lease as leases
from islurm.proxyshim.report import ShimError
from tests.unit.shimfakes import (
    MakeDaemon,
    MakeTcp,
    Peer,
    Procs,
    Start,
    stderr_of,
    stdin_of,
    stdout_of,
)

GUARD = 60.0
BANNER = b"SSH-2.0-fake_sshd\r\n"


def read_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def banner_then_wait_for_bye(conn: socket.socket) -> None:
    """An sshd stand-in: sends a banner, then closes once the client said bye."""
    conn.sendall(BANNER)
    got = b""
    while not got.endswith(b"bye\n"):
        chunk = conn.recv(4096)
        assert chunk, f"EOF before bye, got {got!r}"
        got += chunk


def echo(conn: socket.socket) -> None:
    """An sshd stand-in that says its banner, then echoes."""
    conn.sendall(BANNER)
    while data := conn.recv(65536):
        conn.sendall(data)


def read_banner(proc: subprocess.Popen[bytes]) -> None:
    """The shim forwards the node's banner first (it waits for it before pumping)."""
    got = b""
    while len(got) < len(BANNER):
        got += stdout_of(proc).read1(len(BANNER) - len(got))
    assert got == BANNER


def ready_params(port: int, job_id: str = "42") -> dict[str, object]:
    return {"job_id": job_id, "node": "n1", "host": "127.0.0.1", "port": port, "lease": "L-1"}


def ready_at(port: int, lease: str = "L-2") -> Callable[[Peer], None]:
    """A fake daemon's script: acquire answered with `lease`, the job ready at `port`."""

    def script(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": lease, "profile": "cpu"})
        peer.notify("session.ready", ready_params(port))
        peer.wait_eof()

    return script


def echoed(proc: subprocess.Popen[bytes], line: bytes) -> bytes:
    """Send a line through the shim to the echoing sshd stand-in; what comes back."""
    stdin_of(proc).write(line)
    stdin_of(proc).flush()
    return stdout_of(proc).read1(100)


def finish(proc: subprocess.Popen[bytes], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    out, err = proc.communicate(stdin, timeout=GUARD)
    return proc.returncode, out, err


# -- through the shim -------------------------------------------------------------------------


def test_progress_then_ready_then_bytes(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(banner_then_wait_for_bye)
    pids: list[int] = []

    @daemon.script
    def acquire(peer: Peer) -> None:
        msg = peer.expect("session.acquire")
        assert msg["params"] == {
            "profile": "cpu",
            "client_pid": pids[0],
            "timeout": 30.0,
            "protocol": 1,
            "take_socket": True,
        }
        peer.reply(msg, {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.progress", {"message": "queued: job 42 (Priority)", "waited": 0.1})
        peer.notify("session.progress", {"message": "queued: job 42 (Priority)", "waited": 0.2})
        peer.notify("session.weather", {"sunny": True})  # unknown: ignored
        peer.notify("session.progress", {"message": "job 42 running on n1", "waited": 0.3})
        peer.notify("session.ready", ready_params(sshd.port))
        peer.wait_eof()  # the connection is the lease: held until the shim exits

    proc = shim_start("--timeout", "30", "cpu")
    pids.append(proc.pid)
    code, out, err = finish(proc, b"bye\n")
    daemon.check()
    sshd.check()
    assert (code, out) == (0, BANNER)
    assert err.decode().splitlines() == [
        "islurm: queued: job 42 (Priority)",
        "islurm: job 42 running on n1",
    ]


def test_error_response_exits_4_with_nothing_on_stdout(
    shim_daemon: MakeDaemon, shim_start: Start
) -> None:
    daemon = shim_daemon()

    @daemon.script
    def refuse(peer: Peer) -> None:
        peer.error(peer.expect("session.acquire"), 1001, "unknown profile 'nope'")
        peer.wait_eof()

    code, out, err = finish(shim_start("nope"))
    daemon.check()
    assert (code, out) == (4, b"")
    assert err == b"islurm-proxy: unknown profile 'nope'\n"


def test_failed_notification_exits_4(shim_daemon: MakeDaemon, shim_start: Start) -> None:
    daemon = shim_daemon()

    @daemon.script
    def fail(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "gpu"})
        peer.notify("session.progress", {"message": "submitting", "waited": 0.0})
        peer.notify("session.failed", {"code": 1002, "message": "sbatch: error: invalid partition"})
        peer.wait_eof()

    code, out, err = finish(shim_start("gpu"))
    daemon.check()
    assert (code, out) == (4, b"")
    assert err.decode().splitlines() == [
        "islurm: submitting",
        "islurm-proxy: sbatch: error: invalid partition",
    ]


def test_daemon_eof_before_ready_is_retried_once(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(banner_then_wait_for_bye)

    @daemon.script
    def restart(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        # and the daemon goes away

    daemon.script(ready_at(sshd.port))  # after the restart

    code, out, _ = finish(shim_start("cpu"), b"bye\n")
    daemon.check()
    sshd.check()
    assert (code, out) == (0, BANNER)
    assert [m["method"] for m in daemon.received] == ["session.acquire"] * 2


def test_daemon_eof_before_ready_twice_exits_3(shim_daemon: MakeDaemon, shim_start: Start) -> None:
    daemon = shim_daemon()
    for _ in range(2):

        @daemon.script
        def hang_up(peer: Peer) -> None:
            peer.expect("session.acquire")

    code, out, err = finish(shim_start("cpu"))
    daemon.check()
    assert (code, out) == (3, b"")
    assert b"closed the connection before the session was ready, twice" in err


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"x" * (rpc.MAX_LINE + 10), b"longer than 65536 bytes"),
        (b'{"jsonrpc": "2.0", "id": 1, "result": \n', b"unreadable line"),
        (b'["not", "an", "object"]\n', b"not a JSON object"),
    ],
)
def test_garbage_from_the_daemon_exits_3(
    shim_daemon: MakeDaemon, shim_start: Start, line: bytes, complaint: bytes
) -> None:
    daemon = shim_daemon()

    @daemon.script
    def garbage(peer: Peer) -> None:
        peer.expect("session.acquire")
        peer.conn.sendall(line)
        peer.wait_eof()

    code, out, err = finish(shim_start("cpu"))
    daemon.check()
    assert (code, out) == (3, b"")
    assert complaint in err


def test_daemon_gone_after_ready_reattaches_and_bytes_flow_on(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(echo)
    attached = threading.Event()

    @daemon.script
    def ready_then_crash(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.ready", ready_params(sshd.port))

    @daemon.script
    def restarted(peer: Peer) -> None:
        msg = peer.expect("session.attach", {"job_id": "42", "profile": "cpu", "protocol": 1})
        peer.reply(msg, {"lease": "L-2"})
        attached.set()
        peer.wait_eof()

    proc = shim_start("cpu")
    read_banner(proc)
    assert echoed(proc, b"one\n") == b"one\n"
    assert attached.wait(GUARD), "the shim never re-attached"
    assert echoed(proc, b"two\n") == b"two\n"
    code, out, err = finish(proc)
    daemon.check()
    sshd.check()
    assert (code, out, err) == (0, b"", b"")


def test_session_ended_during_the_splice_exits_6(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(echo)
    streaming = threading.Event()

    @daemon.script
    def job_ends(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.ready", ready_params(sshd.port))
        assert streaming.wait(GUARD)
        peer.notify(
            "session.ended",
            {"code": 1003, "message": "job 42 ended: TIMEOUT", "job_id": "42", "state": "TIMEOUT"},
        )
        peer.wait_eof()

    proc = shim_start("cpu")
    read_banner(proc)
    assert echoed(proc, b"ping\n") == b"ping\n"
    streaming.set()
    assert proc.wait(GUARD) == 6
    daemon.check()
    assert stdout_of(proc).read() == b""
    assert stderr_of(proc).read() == b"islurm-proxy: job 42 ended: TIMEOUT\n"


FAKE_ISLURMD = r"""
import json, os, signal, socket, sys
port, record = int(sys.argv[1]), sys.argv[2]
sock_path = os.environ["ISLURM_SOCKET"]  # the shim passes on its --socket
signal.alarm(60)  # never outlive a broken test
def stdio():
    return [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)]
info = {"pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd(), "stdio": stdio(),
        "startup_stderr": os.environ.get("ISLURM_STARTUP_STDERR")}
old = os.umask(0o177)
listener = socket.socket(socket.AF_UNIX)
listener.bind(sock_path)
os.umask(old)
listener.listen(1)
if os.environ.pop("ISLURM_STARTUP_STDERR", None) == "1":  # as islurmd does once listening
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
info["serving_stdio"] = stdio()
conn, _ = listener.accept()
f = conn.makefile("rb")
request = json.loads(f.readline())
info["request"] = request
with open(record + ".tmp", "w") as out:
    json.dump(info, out)
os.rename(record + ".tmp", record)
def send(obj):
    conn.sendall(json.dumps(obj).encode() + b"\n")
if request["method"] == "session.acquire":
    send({"jsonrpc": "2.0", "id": request["id"], "result": {"lease": "L-1", "profile": "cpu"}})
    send({"jsonrpc": "2.0", "method": "session.ready", "params": {
        "job_id": "7", "node": "n1", "host": "127.0.0.1", "port": port, "lease": "L-1"}})
else:
    send({"jsonrpc": "2.0", "id": request["id"], "result": {"lease": "L-9"}})
f.read()  # the lease: until the shim exits
os.unlink(sock_path)
"""


def fake_islurmd(shim_dir: Path, port: int) -> tuple[str, Path]:
    """ISLURM_DAEMON_CMD for a one-connection fake islurmd, and the file it reports to."""
    script = shim_dir / "fake_islurmd.py"
    script.write_text(FAKE_ISLURMD)
    record = shim_dir / "record.json"
    return json.dumps([sys.executable, str(script), str(port), str(record)]), record


def test_starts_the_daemon_on_demand(
    shim_dir: Path,
    shim_env: dict[str, str],
    shim_tcp: MakeTcp,
    shim_start: Start,
    shim_procs: Procs,
) -> None:
    sshd = shim_tcp(banner_then_wait_for_bye)
    cmd, record = fake_islurmd(shim_dir, sshd.port)
    sock = shim_dir / "run" / "islurmd.sock"  # its directory does not exist yet
    env = dict(shim_env, ISLURM_DAEMON_CMD=cmd)  # and ISLURM_SOCKET names another path
    proc = shim_start("--socket", str(sock), "cpu", env=env)
    shim_pipes = {
        f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (stdout_of(proc), stderr_of(proc))
    }
    try:
        code, out, err = finish(proc, b"bye\n")
    finally:
        if record.exists():
            shim_procs.pids.append(json.loads(record.read_text())["pid"])
    sshd.check()
    assert (code, out) == (0, BANNER)
    assert err == "islurm: starting islurmd\N{HORIZONTAL ELLIPSIS}\n".encode()
    info = json.loads(record.read_text())
    assert info["request"]["method"] == "session.acquire"
    assert info["request"]["params"] == {
        "profile": "cpu",
        "client_pid": proc.pid,
        "protocol": 1,
        "take_socket": True,
    }
    # Never the shim's stdout (the SSH stream) nor its stderr: stderr is a pipe of its own
    # until the daemon listens, then /dev/null.
    assert info["stdio"][:2] == ["/dev/null"] * 2
    assert info["stdio"][2].startswith("pipe:[")
    assert info["stdio"][2] not in shim_pipes
    assert info["startup_stderr"] == "1"
    assert info["serving_stdio"] == ["/dev/null"] * 3
    assert info["sid"] not in (os.getsid(0), proc.pid)  # detached into its own session
    assert info["cwd"] == "/"
    assert (sock.parent.stat().st_mode & 0o777) == 0o700


def test_daemon_gone_mid_session_is_restarted_and_attached(
    shim_dir: Path,
    shim_env: dict[str, str],
    shim_daemon: MakeDaemon,
    shim_tcp: MakeTcp,
    shim_start: Start,
    shim_procs: Procs,
) -> None:
    daemon = shim_daemon()
    sshd = shim_tcp(echo)
    cmd, record = fake_islurmd(shim_dir, sshd.port)

    @daemon.script
    def ready_then_exit_for_good(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.ready", ready_params(sshd.port, job_id="7"))
        daemon.close()  # the socket vanishes, then the connection closes
        os.unlink(daemon.path)

    proc = shim_start("cpu", env=dict(shim_env, ISLURM_DAEMON_CMD=cmd))
    try:
        read_banner(proc)
        assert echoed(proc, b"one\n") == b"one\n"
        for _ in range(int(GUARD * 10)):  # the shim retries each second
            if record.exists():
                break
            time.sleep(0.1)
        info = json.loads(record.read_text())
        shim_procs.pids.append(info["pid"])
        assert echoed(proc, b"two\n") == b"two\n"
        code, out, err = finish(proc)
    finally:
        if record.exists():
            shim_procs.pids.append(json.loads(record.read_text())["pid"])
    daemon.check()
    sshd.check()
    assert (code, out, err) == (0, b"", b"")
    assert info["request"]["method"] == "session.attach"
    assert info["request"]["params"] == {"job_id": "7", "profile": "cpu", "protocol": 1}
    assert info["stdio"] == ["/dev/null"] * 3  # nobody waits for its start-up error here
    assert info["startup_stderr"] is None


def test_sighup_ends_the_shim_quietly(shim_daemon: MakeDaemon, shim_start: Start) -> None:
    daemon = shim_daemon()
    waiting = threading.Event()

    @daemon.script
    def pending(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.progress", {"message": "queued", "waited": 0.0})
        waiting.set()
        peer.wait_eof()  # the lease is released when the shim dies

    proc = shim_start("cpu")
    assert waiting.wait(GUARD)
    assert stderr_of(proc).readline() == b"islurm: queued\n"
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(GUARD) == -signal.SIGHUP
    daemon.check()
    assert stdout_of(proc).read() == b""
    assert stderr_of(proc).read() == b""


def test_a_daemon_that_cannot_start_exits_3(
    shim_dir: Path, shim_env: dict[str, str], shim_start: Start
) -> None:
    env = dict(shim_env, ISLURM_SOCKET=str(shim_dir / "run" / "islurmd.sock"))
    code, out, err = finish(shim_start("cpu", env=env))
    assert (code, out) == (3, b"")
    assert b"cannot start islurmd (/nonexistent/islurmd-must-not-start)" in err
    assert b"No such file or directory" in err


def test_refuses_a_socket_dir_owned_by_someone_else(
    shim_dir: Path, shim_env: dict[str, str], shim_start: Start
) -> None:
    if os.getuid() == 0:
        theirs = shim_dir / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
    else:
        theirs = Path("/proc")  # root's
    env = dict(shim_env, ISLURM_SOCKET=str(theirs / "islurmd.sock"))
    code, out, err = finish(shim_start("cpu", env=env))
    assert (code, out) == (3, b"")
    assert err.startswith(
        f"islurm-proxy: cannot use the socket directory: {theirs} is owned by uid".encode()
    )
    assert err.endswith(b", not by you (uid %d)\n" % os.getuid())


def test_peer_uid_is_read_from_the_socket() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert rpc._peer_uid(ours) == os.getuid()


# -- in-process pieces ------------------------------------------------------------------------


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_codec_round_trips_and_agrees_with_json(value: object) -> None:
    text = jsonline.dumps(value)
    assert text.isascii()
    assert json.loads(text) == value
    assert jsonline.loads(text) == value
    assert jsonline.loads(json.dumps(value, indent=1, ensure_ascii=False)) == value


@pytest.mark.parametrize("text", ["", "{", '{"a": }', '"abc', '"a\x01"', "NaN", "[1] x", "{} {}"])
def test_codec_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError):
        jsonline.loads(text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: 2}, object()])
def test_codec_refuses_what_json_cannot_say(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        jsonline.dumps(value)


def test_conn_splits_lines_and_bounds_them() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = rpc.Conn(ours)
        theirs.sendall(b'{"a": 1}\n\n{"b"')
        assert conn.wait(None) == {"a": 1}
        theirs.sendall(b": 2}\n")
        assert conn.wait(None) == {"b": 2}
        theirs.sendall(b"y" * (rpc.MAX_LINE + 1))
        with pytest.raises(jsonline.ProtocolError):
            conn.wait(None)


def test_conn_skips_any_number_of_blank_lines() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = rpc.Conn(ours)
        theirs.sendall(b"\n" * 50_000 + b'{"c": 3}\n')
        assert conn.wait(None) == {"c": 3}


def test_conn_reports_eof_and_deadlines() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        conn = rpc.Conn(ours)
        assert conn.wait(0.0) is None
        theirs.close()
        with pytest.raises(rpc.DaemonGone):
            conn.wait(None)


@pytest.mark.parametrize(
    "params",
    [
        {"job_id": "1", "host": "n1", "port": 0},
        {"job_id": "1", "host": "n1", "port": 70000},
        {"job_id": "1", "host": "n1", "port": True},
        {"job_id": "1", "host": "", "port": 22},
        {"job_id": "", "host": "n1", "port": 22},
        {"host": "n1", "port": 22},
    ],
)
def test_invalid_ready_params_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ShimError) as caught:
        rpc._ready(params)
    assert caught.value.code == 4


def test_daemon_argv_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "python").symlink_to(sys.executable)  # no islurmd script beside it
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.delenv("ISLURM_DAEMON_CMD", raising=False)
    assert spawn.daemon_argv() == [sys.executable, "-m", "islurm.daemon.main"]
    monkeypatch.setenv("ISLURM_DAEMON_CMD", '["/opt/islurmd", "--foreground"]')
    assert spawn.daemon_argv() == ["/opt/islurmd", "--foreground"]
    for bad in ("islurmd", "[]", '["a", 1]', '{"a": 1}'):
        monkeypatch.setenv("ISLURM_DAEMON_CMD", bad)
        with pytest.raises(ValueError, match="ISLURM_DAEMON_CMD"):
            spawn.daemon_argv()
        with pytest.raises(ShimError):  # what the shim makes of it
            spawn.spawn_daemon(str(tmp_path / "s.sock"), wait=True)


def test_lease_reports_session_ended_and_survives_eof(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    lease = leases.Lease(rpc.Conn(ours), str(tmp_path / "none.sock"), "42", "cpu")
    assert lease.on_readable() is None  # nothing yet: fine
    assert lease.deadline() is None
    theirs.sendall(b'{"jsonrpc":"2.0","method":"session.progress","params":{}}\n')
    assert lease.on_readable() is None
    theirs.sendall(b'{"jsonrpc":"2.0","method":"session.ended","params":{"message":"gone"}}\n')
    assert lease.on_readable() == 6
    theirs.close()
    assert lease.on_readable() is None  # EOF: drop the connection, retry later
    assert lease.fileno() == -1
    assert lease.deadline() is not None


def attach_and_answer(shim_dir: Path, error: dict[str, object]) -> leases.Lease:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(shim_dir / "d.sock"))
    listener.listen(1)
    with listener:
        lease = leases.Lease(None, str(shim_dir / "d.sock"), "42", "cpu")
        assert lease.fileno() == -1
        assert lease.deadline() is not None  # at once: reconnect
        lease.tick()
        assert lease.fileno() >= 0 and lease.deadline() is None
        conn, _ = listener.accept()
        with conn:
            request = json.loads(conn.makefile("rb").readline())
            assert request["method"] == "session.attach"
            assert request["params"] == {"job_id": "42", "profile": "cpu", "protocol": 1}
            reply = {"jsonrpc": "2.0", "id": request["id"], "error": error}
            conn.sendall(json.dumps(reply).encode() + b"\n")
            assert lease.on_readable() is None
    return lease


def test_lease_gives_up_when_the_daemon_does_not_know_the_job(
    shim_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lease = attach_and_answer(shim_dir, {"code": 1006, "message": "no such job: 42"})
    assert (lease.fileno(), lease.deadline()) == (-1, None)  # no more attempts
    assert capfd.readouterr().err == (
        "islurm-proxy: cannot re-take the lease on job 42: no such job: 42\n"
    )


def test_lease_retries_when_the_daemon_is_shutting_down(
    shim_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lease = attach_and_answer(shim_dir, {"code": 1008, "message": "shutting down"})
    assert lease.fileno() == -1
    assert lease.deadline() is not None
    assert capfd.readouterr().err == ""


def test_acquire_gives_up_on_a_silent_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "RESPONSE_TIMEOUT", 0.05)
    monkeypatch.setattr(rpc, "TIMEOUT_GRACE", 0.05)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(ShimError) as unanswered:
            rpc._await_ready(rpc.Conn(ours), 1, None)
        assert (unanswered.value.code, unanswered.value.message) == (
            3,
            "islurmd did not answer within 0.05 s",
        )
        theirs.sendall(b'{"jsonrpc": "2.0", "id": 1, "result": {}}\n')
        with pytest.raises(ShimError) as not_ready:
            rpc._await_ready(rpc.Conn(ours), 1, 0.01)
        assert not_ready.value.code == 3
        assert "neither session.ready nor a failure within 0.01 s" in not_ready.value.message
