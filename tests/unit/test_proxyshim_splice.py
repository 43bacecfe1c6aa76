"""The byte pump in a real process, between real pipes or sockets and a loopback TCP server."""

import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from islurm.proxyshim import node, splice
from islurm.proxyshim.report import ShimError
from tests.unit.shimfakes import Handler, MakeTcp, Procs, stderr_of, stdin_of, stdout_of

GUARD = 120.0
MiB = 1 << 20

# The pump alone, as main.py runs it after session.ready; it reports its modes on stderr.
DRIVER = """
import sys
from islurm.proxyshim import node, splice
pump = splice.Pump(node.connect_tcp(sys.argv[1], int(sys.argv[2])))
sys.stderr.write("modes %s %s\\n" % pump.modes())
sys.stderr.flush()
sys.exit(pump.run())
"""


def start_pump(procs: Procs, port: int, **kwargs: object) -> "subprocess.Popen[bytes]":
    kwargs.setdefault("stdin", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return procs.start([sys.executable, "-c", DRIVER, "127.0.0.1", str(port)], **kwargs)


def pattern(total: int, seed: int) -> list[bytes]:
    """`total` bytes in 1 MiB blocks that differ from each other (a lost block would show)."""
    base = hashlib.shake_256(str(seed).encode()).digest(MiB)
    return [i.to_bytes(8, "big") + base[8:] for i in range(total // MiB)]


def digest(blocks: list[bytes]) -> str:
    h = hashlib.sha256()
    for block in blocks:
        h.update(block)
    return h.hexdigest()


def drain(read: Callable[[int], bytes], chunk: int = 64 * 1024) -> tuple[int, str]:
    """Read to EOF in small pieces (so the writer meets back-pressure); count and hash."""
    h = hashlib.sha256()
    n = 0
    while data := read(chunk):
        h.update(data)
        n += len(data)
    return n, h.hexdigest()


def both_ways_server(down: list[bytes], result: dict[str, object]) -> Handler:
    """Sends `down` while reading everything; closes once the client half-closed."""

    def handler(conn: socket.socket) -> None:
        def send() -> None:
            for block in down:
                conn.sendall(block)

        sender = threading.Thread(target=send)
        sender.start()
        result["up"] = drain(conn.recv, MiB)
        sender.join(GUARD)
        result["sender_done"] = not sender.is_alive()

    return handler


def writer(
    write: Callable[[bytes], object], blocks: list[bytes], close: Callable[[], object]
) -> threading.Thread:
    def run() -> None:
        for block in blocks:
            write(block)
        close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_pipes_64_mib_each_way(shim_procs: Procs, shim_tcp: MakeTcp) -> None:
    up, down = pattern(64 * MiB, 1), pattern(64 * MiB, 2)
    result: dict[str, object] = {}
    server = shim_tcp(both_ways_server(down, result))
    proc = start_pump(shim_procs, server.port)
    sending = writer(stdin_of(proc).write, up, stdin_of(proc).close)
    received = drain(stdout_of(proc).read1)
    assert proc.wait(GUARD) == 0
    sending.join(GUARD)
    server.check()
    assert stderr_of(proc).read() == b"modes splice splice\n"
    assert result["up"] == (64 * MiB, digest(up))
    assert received == (64 * MiB, digest(down))
    assert result["sender_done"]


def test_socketpair_falls_back_to_copying(shim_procs: Procs, shim_tcp: MakeTcp) -> None:
    up, down = pattern(16 * MiB, 3), pattern(16 * MiB, 4)
    result: dict[str, object] = {}
    server = shim_tcp(both_ways_server(down, result))
    ours, theirs = socket.socketpair()
    with ours:
        proc = start_pump(shim_procs, server.port, stdin=theirs, stdout=theirs)
        theirs.close()
        sending = writer(ours.sendall, up, lambda: ours.shutdown(socket.SHUT_WR))
        received = drain(ours.recv)
        assert proc.wait(GUARD) == 0
        sending.join(GUARD)
    server.check()
    assert stderr_of(proc).read() == b"modes copy copy\n"
    assert result["up"] == (16 * MiB, digest(up))
    assert received == (16 * MiB, digest(down))


def test_file_in_pipe_out(shim_procs: Procs, shim_tcp: MakeTcp, shim_dir: Path) -> None:
    blocks = pattern(8 * MiB, 5)
    source = shim_dir / "in.bin"
    source.write_bytes(b"".join(blocks))

    def echo(conn: socket.socket) -> None:
        while data := conn.recv(MiB):
            conn.sendall(data)

    server = shim_tcp(echo)
    with source.open("rb") as stdin:
        proc = start_pump(shim_procs, server.port, stdin=stdin)
    received = drain(stdout_of(proc).read1)
    assert proc.wait(GUARD) == 0
    server.check()
    assert stderr_of(proc).read() == b"modes copy splice\n"
    assert received == (8 * MiB, digest(blocks))


def test_idle_tty_on_stdin_does_not_hold_up_the_other_direction(
    shim_procs: Procs, shim_tcp: MakeTcp
) -> None:
    server = shim_tcp(lambda conn: conn.sendall(b"hello from the node"))
    master, slave = os.openpty()
    try:
        proc = start_pump(shim_procs, server.port, stdin=slave)  # nobody ever types
        out, err = proc.communicate(timeout=GUARD)  # raises if the shim hangs on the tty
    finally:
        os.close(slave)
        os.close(master)
    server.check()
    assert (proc.returncode, out) == (0, b"hello from the node")
    assert err == b"modes copy splice\n"


@pytest.mark.parametrize("stdio", ["pipes", "socketpair"])
def test_stdin_eof_half_closes_and_replies_still_arrive(
    shim_procs: Procs, shim_tcp: MakeTcp, stdio: str
) -> None:
    seen: dict[str, bytes] = {}

    def handler(conn: socket.socket) -> None:
        seen["up"] = drain_bytes(conn)  # returns only at EOF: the half-close arrived
        conn.sendall(b"pong after eof")

    server = shim_tcp(handler)
    if stdio == "pipes":
        proc = start_pump(shim_procs, server.port)
        stdin_of(proc).write(b"ping")
        stdin_of(proc).close()
        out = stdout_of(proc).read()
    else:
        ours, theirs = socket.socketpair()
        with ours:
            proc = start_pump(shim_procs, server.port, stdin=theirs, stdout=theirs)
            theirs.close()
            ours.sendall(b"ping")
            ours.shutdown(socket.SHUT_WR)
            out = drain_bytes(ours)
    assert proc.wait(GUARD) == 0
    server.check()
    assert seen["up"] == b"ping"
    assert out == b"pong after eof"


def drain_bytes(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_node_closing_ends_the_shim_with_stdin_still_open(
    shim_procs: Procs, shim_tcp: MakeTcp
) -> None:
    server = shim_tcp(lambda conn: conn.sendall(b"bye"))
    proc = start_pump(shim_procs, server.port)
    out = stdout_of(proc).read()  # EOF although our end of stdin is still open
    assert proc.wait(GUARD) == 0
    server.check()
    assert out == b"bye"
    assert proc.stdin is not None and not proc.stdin.closed


@pytest.mark.parametrize("stdio", ["pipes", "socketpair"])
def test_reader_of_stdout_going_away_ends_the_shim_quietly(
    shim_procs: Procs, shim_tcp: MakeTcp, stdio: str
) -> None:
    def flood(conn: socket.socket) -> None:
        block = b"z" * MiB
        try:
            for _ in range(512):  # far more than any buffer; stops at the reset
                conn.sendall(block)
        except OSError:
            return
        raise AssertionError("the shim kept reading with nobody to write to")

    server = shim_tcp(flood)
    if stdio == "pipes":
        proc = start_pump(shim_procs, server.port)
        assert stdout_of(proc).read(1000) == b"z" * 1000
        stdout_of(proc).close()
    else:
        ours, theirs = socket.socketpair()
        proc = start_pump(shim_procs, server.port, stdin=theirs, stdout=theirs)
        theirs.close()
        assert ours.recv(1000, socket.MSG_WAITALL) == b"z" * 1000
        ours.close()
    assert proc.wait(GUARD) == 0
    server.check()
    err = stderr_of(proc).read()
    assert err.startswith(b"modes ")
    assert err.count(b"\n") == 1  # no traceback, no message


def test_node_reset_exits_5(shim_procs: Procs, shim_tcp: MakeTcp) -> None:
    def reset(conn: socket.socket) -> None:
        assert conn.recv(2, socket.MSG_WAITALL) == b"go"  # the pump runs
        conn.sendall(b"partial")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = shim_tcp(reset)  # closing with linger 0 sends RST
    proc = start_pump(shim_procs, server.port)
    stdin_of(proc).write(b"go")
    stdin_of(proc).flush()
    out = stdout_of(proc).read()
    assert proc.wait(GUARD) == 5
    server.check()
    assert out in (b"", b"partial")
    assert (
        b"islurm-proxy: connection to the node lost: Connection reset by peer"
        in stderr_of(proc).read()
    )


def test_connect_tcp_refused_and_unresolvable() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ShimError) as refused:
        node.connect_tcp("127.0.0.1", port)
    assert refused.value.code == 5
    assert "Connection refused" in refused.value.message
    with pytest.raises(ShimError) as unknown:
        node.connect_tcp("no-such-node.invalid", 22)
    assert unknown.value.code == 5
    assert "cannot resolve node no-such-node.invalid" in unknown.value.message


def test_connect_tcp_sets_nodelay(shim_tcp: MakeTcp) -> None:
    server = shim_tcp(lambda conn: None)
    sock = node.connect_tcp("localhost", server.port)  # ::1 may come first: nobody there
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getpeername()[:2] == ("127.0.0.1", server.port)
    finally:
        sock.close()
    server.check()


def test_is_pipe() -> None:
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        assert splice.is_pipe(r) and splice.is_pipe(w)
        assert not splice.is_pipe(a.fileno())
        assert not splice.is_pipe(-1)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
