"""JSON-RPC 2.0 over the Unix socket: per-connection reader/writer, notifications, leases.

jsonrpcserver's async_dispatch does not work under trio (it calls asyncio.gather), so methods
are synchronous and thin; anything that waits runs as a follow-up task after the reply and
streams notifications on the same connection."""

from __future__ import annotations

import array
import json
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import structlog
import trio

from islurm.daemon.rpc.framing import TooLong, read_lines
from islurm.daemon.rpc.unix_listener import peer_credentials

log = structlog.get_logger("islurm.rpc")

MAX_DEPTH = 32
OUTBOX = 256  # queued lines per connection before a non-reading client is dropped

Dispatch = Callable[[str, "Connection"], str]


class _WithSocket:
    """An outgoing line that carries a socket (SCM_RIGHTS on its first byte)."""

    def __init__(self, line: bytes, sock: trio.socket.SocketType) -> None:
        self.line, self.sock = line, sock


Outgoing = bytes | _WithSocket


class TooDeep(ValueError):
    pass


def _check_depth(value: object, limit: int = MAX_DEPTH) -> None:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                raise TooDeep(f"JSON nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(value: str) -> float:
    number = float(value)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number {value} is out of range")
    return number


def deserialize(text: str) -> Any:
    """json.loads with a nesting bound (a parse error for jsonrpcserver if exceeded)."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise TooDeep("JSON nested too deeply") from None
    _check_depth(value)
    return value


def error_line(code: int, message: str, req_id: object = None) -> bytes:
    return (
        json.dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": req_id})
        + "\n"
    ).encode()


class Connection:
    """One client connection: its outbox, its leases and the work started for it."""

    def __init__(self, outbox: trio.MemorySendChannel[Outgoing], pid: int) -> None:
        self._outbox = outbox
        self.pid = pid
        self.leases: set[str] = set()
        self.followups: list[Callable[[], Awaitable[None]]] = []
        self.closed = trio.Event()
        self.unsent = 0  # lines queued but not yet written to the socket
        self.drained = trio.Event()  # set while nothing is unsent
        self.drained.set()
        self.sockets: set[trio.socket.SocketType] = set()  # queued to be passed, then closed

    def notify(self, method: str, params: dict[str, Any]) -> None:
        line = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + "\n"
        self.send(line.encode())

    def notify_with_socket(
        self, method: str, params: dict[str, Any], sock: trio.socket.SocketType
    ) -> None:
        """Send a notification with `sock` attached (SCM_RIGHTS), ours to close once sent."""
        line = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}) + "\n"
        self.sockets.add(sock)
        self.send(_WithSocket(line.encode(), sock))

    def send(self, line: Outgoing) -> None:
        if self.closed.is_set():
            self.close_sockets()
            return
        try:
            self._outbox.send_nowait(line)
            self.unsent += 1
            if self.drained.is_set():
                self.drained = trio.Event()
        except trio.WouldBlock:
            log.warning("rpc.client_not_reading", pid=self.pid)
            self.closed.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed.set()
        if self.closed.is_set():
            self.close_sockets()

    def close_sockets(self) -> None:
        """Close the sockets queued and not sent (the connection is gone)."""
        while self.sockets:
            self.sockets.pop().close()

    def written(self) -> None:
        self.unsent -= 1
        if not self.unsent:
            self.drained.set()

    def after_reply(self, work: Callable[[], Awaitable[None]]) -> None:
        self.followups.append(work)


class RpcServer:
    def __init__(self, dispatch: Dispatch, on_close: Callable[[Connection], None]) -> None:
        self.dispatch = dispatch
        self.on_close = on_close
        self.connections = 0
        self.refused = 0
        self.accepting = True
        self._scope: trio.CancelScope | None = None
        self._live: set[Connection] = set()

    @property
    def open_connections(self) -> int:
        return len(self._live)

    def stop_accepting(self) -> None:
        self.accepting = False
        if self._scope is not None:
            self._scope.cancel()

    async def flush(self) -> None:
        """Return once every open connection has written what it queued (shutdown: the last
        notifications reach their clients before the daemon exits)."""
        for conn in list(self._live):
            await conn.drained.wait()

    async def serve(
        self,
        listener: trio.SocketListener,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                async with listener:
                    while True:
                        stream = await listener.accept()
                        nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection. Nothing may escape: one bad client must not stop the daemon."""
        try:
            pid, uid, _ = peer_credentials(stream.socket)
            if uid != os.getuid():
                self.refused += 1
                log.warning("rpc.refused", peer_uid=uid, peer_pid=pid, reason="uid differs")
                await stream.aclose()
                return
            await self._serve_connection(stream, pid)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("rpc.connection_lost", error=str(exc))
        except Exception:
            log.exception("rpc.connection_crashed")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve_connection(self, stream: trio.SocketStream, pid: int) -> None:
        self.connections += 1
        send, receive = trio.open_memory_channel[Outgoing](OUTBOX)
        conn = Connection(send, pid)
        self._live.add(conn)
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._writer, stream, receive, conn)
                async with trio.open_nursery() as flows:
                    flows.start_soon(self._close_when_done, conn, flows.cancel_scope)
                    async with aclosing(read_lines(stream)) as incoming:
                        async for line in incoming:
                            if isinstance(line, TooLong):
                                conn.send(
                                    error_line(-32600, f"request too long ({line.size} bytes)")
                                )
                                continue
                            reply = self._answer(line, conn)
                            if reply:
                                conn.send(reply)
                            for work in conn.followups:
                                flows.start_soon(work)
                            conn.followups.clear()
                    # EOF: the client is done sending; its flows (and leases) end with it.
                    flows.cancel_scope.cancel()
                # Let the writer flush what is queued, briefly, then close.
                outer.cancel_scope.deadline = trio.current_time() + 2.0
                await send.aclose()
        finally:
            conn.closed.set()
            conn.close_sockets()
            conn.drained.set()  # what is unsent now never will be
            self._live.discard(conn)
            self.on_close(conn)

    def _answer(self, line: bytes, conn: Connection) -> bytes | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return error_line(-32700, "request is not UTF-8")
        if not text.strip():
            return None
        try:
            out = self.dispatch(text, conn)
        except Exception:
            log.exception("rpc.dispatch_crashed")
            return error_line(-32603, "internal error")
        return (out + "\n").encode() if out else None

    @staticmethod
    async def _close_when_done(conn: Connection, scope: trio.CancelScope) -> None:
        await conn.closed.wait()
        scope.cancel()

    @staticmethod
    async def _writer(
        stream: trio.SocketStream, receive: trio.MemoryReceiveChannel[Outgoing], conn: Connection
    ) -> None:
        try:
            async with receive:
                async for item in receive:
                    if isinstance(item, _WithSocket):
                        await _send_with_socket(stream, item)
                        conn.sockets.discard(item.sock)
                    else:
                        await stream.send_all(item)
                    conn.written()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            conn.closed.set()
        except OSError as exc:  # sendmsg (send_all wraps its errors as BrokenResourceError)
            log.debug("rpc.send_failed", error=str(exc))
            conn.closed.set()


async def _send_with_socket(stream: trio.SocketStream, item: _WithSocket) -> None:
    """The line, its first bytes with the socket attached; then the socket is closed here
    (the receiver holds its own descriptor once sendmsg returned)."""
    try:
        fds = array.array("i", [item.sock.fileno()])
        sent = await stream.socket.sendmsg(
            [item.line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())]
        )
        if sent < len(item.line):
            await stream.send_all(item.line[sent:])
    finally:
        item.sock.close()
