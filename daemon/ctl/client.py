"""islurmctl's side of the RPC: a small blocking JSON-lines client (no trio needed)."""

from __future__ import annotations

import itertools
import json
import socket
from typing import Any

from islurm.daemon.errors import Code
from islurm.proxyshim import rpc as shim_rpc
from islurm.proxyshim.splice import ShimError


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class DaemonUnreachable(Exception):
    pass


class Client:
    def __init__(self, sock_path: str, timeout: float = 30.0, start: bool = True) -> None:
        self.path = sock_path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.sock = self._connect(start)
        self._buf = b""

    def _connect(self, start: bool) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
            return s
        except OSError as exc:
            s.close()
            if not start:
                raise DaemonUnreachable(f"no islurmd at {self.path}: {exc}") from None
        try:  # the shim's way: start islurmd on demand, check it runs as us
            conn = shim_rpc.connect(self.path)
        except ShimError as exc:
            raise DaemonUnreachable(exc.message) from None
        s = socket.socket(fileno=conn.sock.detach())
        s.setblocking(True)
        s.settimeout(self.timeout)
        return s

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def read_message(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DaemonUnreachable("islurmd closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            raise RpcError(int(Code.INTERNAL), f"unexpected message from islurmd: {line!r}")
        return msg

    def call(self, method: str, **params: Any) -> Any:
        req_id = next(self._ids)
        self._send({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
        while True:
            msg = self.read_message()
            if msg.get("id") != req_id:
                continue  # a notification meant for a follow-up; callers wait for those
            if "error" in msg:
                err = msg["error"]
                raise RpcError(
                    int(err.get("code", -32603)), str(err.get("message")), err.get("data")
                )
            return msg.get("result")

    def wait_notification(self, method: str) -> dict[str, Any]:
        while True:
            msg = self.read_message()
            if msg.get("method") == method:
                params = msg.get("params")
                return params if isinstance(params, dict) else {}
