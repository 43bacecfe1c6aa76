"""Stand-ins for the shim-alone measurements, each run as its own process (no shared GIL with
the bench that times them):

    python -m bench.fakes daemon SOCKET   a minimal islurmd: session.acquire for profile "pN"
                                          answers at once, ready on 127.0.0.1 port N
    python -m bench.fakes tcp BYTES       three loopback servers; prints {"banner": port,
                                          "source": port, "sink": port} on stdout

banner: sends an sshd-like banner on accept, then reads until EOF (start-up measurement).
source: sends a banner, then BYTES bytes, then closes (download). sink: sends a banner (its
"go"), reads until EOF, then closes (upload). The shim waits for "SSH-" before it moves any
byte (proxyshim/node.py await_banner): every server speaks first, as sshd does.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

CHUNK = 1 << 20
SOURCE_BANNER = b"SSH-2.0-bench_source\r\n"
SINK_BANNER = b"SSH-2.0-bench_sink\r\n"


def _serve(listener: socket.socket, handler: object) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()  # type: ignore[arg-type]


def _daemon_peer(conn: socket.socket) -> None:
    """One shim: answer its acquire with result + ready in one write, hold the lease until EOF.
    A session.check (the node hung up first) is answered by closing: the shim exits at once."""
    with conn:
        f = conn.makefile("rb")
        line = f.readline()
        if not line:
            return
        req = json.loads(line)
        profile = req["params"]["profile"]
        port = int(profile.lstrip("p"))
        reply = {"jsonrpc": "2.0", "id": req["id"], "result": {"lease": "L-b", "profile": profile}}
        ready = {
            "jsonrpc": "2.0",
            "method": "session.ready",
            "params": {
                "job_id": "1",
                "node": "c0",
                "host": "127.0.0.1",
                "port": port,
                "lease": "L-b",
            },
        }
        conn.sendall((json.dumps(reply) + "\n" + json.dumps(ready) + "\n").encode())
        f.readline()  # EOF (lease released) or session.check: either way, we are done


def daemon(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    print("ready", flush=True)
    _serve(listener, _daemon_peer)


def _banner(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"SSH-2.0-bench_fake\r\n")
        while conn.recv(CHUNK):
            pass


def _source(total: int) -> object:
    def handler(conn: socket.socket) -> None:
        with conn:
            conn.sendall(SOURCE_BANNER)
            zeros = memoryview(bytes(CHUNK))
            left = total
            while left > 0:
                left -= conn.send(zeros[: min(left, CHUNK)])

    return handler


def _sink(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(SINK_BANNER)
        buf = bytearray(CHUNK)
        while conn.recv_into(buf):
            pass


def tcp(total: int) -> None:
    ports = {}
    for name, handler in (("banner", _banner), ("source", _source(total)), ("sink", _sink)):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        ports[name] = listener.getsockname()[1]
        threading.Thread(target=_serve, args=(listener, handler), daemon=True).start()
    print(json.dumps(ports), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    role, arg = sys.argv[1], sys.argv[2]
    if role == "daemon":
        daemon(arg)
    else:
        tcp(int(arg))
