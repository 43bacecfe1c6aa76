"""islurmctl's side of the RPC: the shim's stdlib client (proxyshim/rpc.py `Conn`: framing,
bounded lines, the peer-uid check, starting islurmd on demand) with blocking calls on top."""

from __future__ import annotations

import time
from typing import Any

from islurm.daemon.errors import Code
from islurm.proxyshim import rpc as shim_rpc
from islurm.proxyshim.jsonline import ProtocolError
from islurm.proxyshim.report import ShimError


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
        try:
            conn = shim_rpc.connect(sock_path) if start else shim_rpc.attempt(sock_path)
        except ShimError as exc:
            raise DaemonUnreachable(exc.message) from None
        if conn is None:
            raise DaemonUnreachable(f"no islurmd at {sock_path}: nobody listens")
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_message(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError after `timeout` s (default: the client's) of silence."""
        wait = self.timeout if timeout is None else timeout
        try:
            msg = self.conn.wait(time.monotonic() + wait)
        except shim_rpc.DaemonGone:
            raise DaemonUnreachable("islurmd closed the connection") from None
        except ProtocolError as exc:
            raise RpcError(int(Code.INTERNAL), str(exc)) from None
        if msg is None:
            raise TimeoutError(f"islurmd said nothing for {wait:g} s")
        return msg

    def call(self, method: str, **params: Any) -> Any:
        req_id = self.conn.send(method, params)
        while True:
            msg = self.read_message()
            if msg.get("id") != req_id:
                continue  # a notification meant for a follow-up; callers wait for those
            if "error" in msg:
                err = msg["error"]
                if not isinstance(err, dict):
                    raise RpcError(int(Code.INTERNAL), f"islurmd sent a bad error: {err!r}")
                raise RpcError(
                    int(err.get("code", Code.INTERNAL)), str(err.get("message")), err.get("data")
                )
            return msg.get("result")

    def wait_notification(self, method: str) -> dict[str, Any]:
        while True:
            msg = self.read_message()
            if msg.get("method") == method:
                params = msg.get("params")
                return params if isinstance(params, dict) else {}
