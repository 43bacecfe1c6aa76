"""The proxy shim's test doubles: a process reaper, a scripted fake islurmd and loopback TCP
servers standing in for a job's sshd (fixtures for them, named shim_*, are in conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

import islurm.proxyshim

# Not resolved: in the dev tree .dev/islurm/proxyshim is a symlink, and the script must cope.
SHIM_MAIN = str(Path(islurm.proxyshim.__file__).with_name("launch.py"))
GUARD = 60.0  # generous bound on every wait, so a broken shim fails a test instead of hanging it


class Procs:
    """Every process a test starts, stopped by pid at teardown."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
        self.popens.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
            proc.wait(GUARD)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Peer:
    """One connection accepted by the fake daemon; every step fails loudly on a surprise."""

    def __init__(self, conn: socket.socket, daemon: FakeDaemon) -> None:
        self.conn = conn
        self.daemon = daemon
        self.file = conn.makefile("rb")

    def expect(self, method: str, params: dict[str, object] | None = None) -> dict[str, object]:
        line = self.file.readline()
        if not line:
            raise AssertionError(f"EOF while expecting {method}")
        msg: dict[str, object] = json.loads(line)
        self.daemon.received.append(msg)
        if msg.get("jsonrpc") != "2.0" or msg.get("method") != method or "id" not in msg:
            raise AssertionError(f"expected a {method} request, got {msg!r}")
        if params is not None and msg.get("params") != params:
            raise AssertionError(f"{method}: expected params {params!r}, got {msg['params']!r}")
        return msg

    def send(self, obj: dict[str, object]) -> None:
        self.conn.sendall(json.dumps(obj).encode() + b"\n")

    def reply(self, request: dict[str, object], result: dict[str, object]) -> None:
        self.send({"jsonrpc": "2.0", "id": request["id"], "result": result})

    def error(self, request: dict[str, object], code: int, message: str) -> None:
        self.send(
            {"jsonrpc": "2.0", "id": request["id"], "error": {"code": code, "message": message}}
        )

    def notify(self, method: str, params: dict[str, object]) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_eof(self) -> None:
        """The shim holds the lease until it exits: expect silence, then EOF."""
        rest = self.file.read()
        if rest:
            raise AssertionError(f"unexpected data from the shim: {rest[:200]!r}")

    def close(self) -> None:
        self.file.close()
        self.conn.close()


class FakeDaemon:
    """A scripted islurmd on a Unix socket: the n-th connection runs the n-th script."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scripts: list[Callable[[Peer], None]] = []
        self.failures: list[str] = []
        self.received: list[dict[str, object]] = []
        self.connections = 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.threads: list[threading.Thread] = []
        self._closed = False
        acceptor = threading.Thread(target=self._accept, daemon=True)
        acceptor.start()

    def script(self, fn: Callable[[Peer], None]) -> Callable[[Peer], None]:
        self.scripts.append(fn)
        return fn

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            index = self.connections
            self.connections += 1
            if index >= len(self.scripts):
                self.failures.append(f"unexpected connection #{index + 1}")
                conn.close()
                continue
            thread = threading.Thread(
                target=self._run, args=(self.scripts[index], conn), daemon=True
            )
            self.threads.append(thread)
            thread.start()

    def _run(self, fn: Callable[[Peer], None], conn: socket.socket) -> None:
        peer = Peer(conn, self)
        try:
            fn(peer)
        except Exception as exc:
            self.failures.append(f"{fn.__name__}: {exc!r}")
        finally:
            peer.close()

    def check(self) -> None:
        """Wait for the scripts to finish; fail on anything they did not expect."""
        for thread in self.threads:
            thread.join(GUARD)
            assert not thread.is_alive(), "a fake daemon script is stuck"
        assert self.failures == []
        assert self.connections == len(self.scripts), "fewer connections than scripted"

    def close(self) -> None:
        self.listener.close()


class TcpServer:
    """A loopback server standing in for the job's sshd: `handler(conn)` serves each client."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            with conn:
                self.handler(conn)
        except BaseException as exc:
            self.errors.append(exc)

    def check(self) -> None:
        self.thread.join(GUARD)
        assert not self.thread.is_alive(), "the TCP server's handler is stuck"
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        self.listener.close()


#: what the shim_daemon and shim_tcp fixtures hand a test
MakeDaemon = Callable[[], FakeDaemon]
Handler = Callable[[socket.socket], None]
MakeTcp = Callable[[Handler], TcpServer]


class Start(Protocol):
    """The shim_start fixture: run the shim with ARGS, pipes on stdio unless told otherwise."""

    def __call__(
        self, *args: str, python_flags: tuple[str, ...] = (), **kwargs: object
    ) -> subprocess.Popen[bytes]: ...


def stdin_of(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    assert proc.stdin is not None, "stdin is not a pipe"
    return proc.stdin


def stdout_of(proc: subprocess.Popen[bytes]) -> io.BufferedReader:
    assert isinstance(proc.stdout, io.BufferedReader), "stdout is not a pipe"
    return proc.stdout


def stderr_of(proc: subprocess.Popen[bytes]) -> io.BufferedReader:
    assert isinstance(proc.stderr, io.BufferedReader), "stderr is not a pipe"
    return proc.stderr
