"""Reaching the job's sshd: a TCP connect within a deadline, then its banner before any of
ssh's bytes are sent. Stdlib only and import-light (`_socket`, never `socket`)."""

import _socket
import errno
import os
import select
import sys
import time

from islurm.proxyshim.exits import EXIT_NODE
from islurm.proxyshim.report import ShimError

NODE_CONNECT_TIMEOUT = 10.0


def connect_tcp(host: str, port: int, timeout: float = NODE_CONNECT_TIMEOUT) -> _socket.socket:
    """Connect to the sshd in the job, trying each address in turn within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        # A str host would load the IDNA codec: bytes keep start-up short.
        infos = _socket.getaddrinfo(
            host.encode(), port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, _socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        raise ShimError(EXIT_NODE, f"cannot resolve node {host}: {exc}") from None
    why = "no address"
    for family, type_, proto, _name, address in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = f"timed out after {timeout:g} s"
            break
        sock = _socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(address)
            if err == errno.EINPROGRESS:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
                if poller.poll(int(remaining * 1000) + 1):
                    err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                else:
                    err = errno.ETIMEDOUT
            if err == 0:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                return sock
            why = os.strerror(err)
        except OSError as exc:
            why = exc.strerror or str(exc)
        sock.close()
    raise ShimError(EXIT_NODE, f"cannot connect to node {host} port {port}: {why}")


def await_banner(sock: _socket.socket, timeout: float = NODE_CONNECT_TIMEOUT) -> None:
    """Wait until the node's sshd has spoken (its banner stays queued for the pump), so that
    a port whose sshd is gone, or someone else's server, gets none of ssh's bytes and the
    connect can be retried."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    try:
        if not poller.poll(int(timeout * 1000) + 1):
            raise ShimError(EXIT_NODE, f"no answer from the node's sshd within {timeout:g} s")
        head = sock.recv(4, _socket.MSG_PEEK)
    except OSError as exc:
        raise ShimError(EXIT_NODE, f"the node's sshd went away: {exc.strerror or exc}") from None
    if head != b"SSH-":
        what = "closed the connection" if not head else "is not an sshd"
        raise ShimError(EXIT_NODE, f"the endpoint {what} before the session started")


def adopt(fd: int, host: str, port: int) -> _socket.socket | None:
    """The connection islurmd made ready (a spare, daemon/spares.py) as a socket, if it is a
    TCP connection to host:port whose sshd has spoken and not hung up; else None (closed):
    connect as usual."""
    try:
        sock = _socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return None
    try:
        peer = sock.getpeername()
        usable = sock.type == _socket.SOCK_STREAM and peer[:2] == (host, port)
        if usable:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
            for _fd, events in poller.poll(0):
                usable = not events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        if usable:  # its banner is queued: the peek does not wait
            usable = sock.recv(4, _socket.MSG_PEEK | _socket.MSG_DONTWAIT) == b"SSH-"
    except (OSError, TypeError):
        usable = False
    if not usable:
        sock.close()
        return None
    return sock


def hand_over(sock: _socket.socket, channel_fd: int = 1) -> None:
    """ProxyUseFdpass: give the connected socket to ssh over our stdout (a Unix socket ssh
    made for it), after which no process of ours carries the session's bytes."""
    channel = None
    try:
        channel = _socket.socket(fileno=channel_fd)  # ENOTSOCK: run without ProxyUseFdpass
        fd = sock.fileno().to_bytes(4, sys.byteorder)
        channel.sendmsg([b"\0"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd)])
    except OSError as exc:
        raise ShimError(
            EXIT_NODE, f"cannot hand the connection to ssh (ProxyUseFdpass?): {exc}"
        ) from None
    finally:
        if channel is not None:
            channel.detach()  # fd 1 stays open: it is ssh's, not ours to close
