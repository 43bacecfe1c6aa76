"""ProxyUseFdpass: the shim hands ssh the connected socket (proxyshim/node.py hand_over) and
the generated login-node config asks ssh for it (config/sshconfig.py)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from islurm.config.sshconfig import ProxySpec, render
from islurm.proxyshim import node
from islurm.proxyshim.exits import EXIT_NODE
from islurm.proxyshim.report import ShimError


def test_the_connected_socket_reaches_the_other_end_and_carries_bytes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        ssh_side, shim_side = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with ssh_side, shim_side:
            conn = socket.create_connection(server.getsockname())
            peer, _ = server.accept()
            with conn, peer:
                node.hand_over(conn, channel_fd=shim_side.fileno())
                data, fds, _flags, _addr = socket.recv_fds(ssh_side, 1, 1)
                assert data == b"\0" and len(fds) == 1
                with socket.socket(fileno=fds[0]) as passed:
                    passed.sendall(b"ping")
                    assert peer.recv(4) == b"ping"
            assert shim_side.fileno() >= 0  # the shim's stdout is not closed by the hand-over


def test_a_stdout_that_is_not_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    """`islurm-proxy --fdpass` run by hand or without ProxyUseFdpass: a message, no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        conn = socket.create_connection(server.getsockname())
        with conn, open(tmp_path / "out", "wb") as plain:
            with pytest.raises(ShimError) as caught:
                node.hand_over(conn, channel_fd=plain.fileno())
            assert caught.value.code == EXIT_NODE
            assert "ProxyUseFdpass" in caught.value.message
            assert not plain.closed


def test_the_local_config_asks_ssh_for_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "config"
    proxy = ProxySpec(login=None, local_command=("/opt/islurm/bin/islurm-proxy",), fdpass=True)
    config.write_text(render(["cpu"], proxy, str(tmp_path / "known")))
    seen = subprocess.run(
        ["ssh", "-G", "-F", str(config), "slurm-cpu"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "proxyusefdpass yes" in seen
    assert "proxycommand /opt/islurm/bin/islurm-proxy --fdpass cpu" in seen
    relay = ProxySpec(login=None, local_command=("/opt/islurm/bin/islurm-proxy",))
    assert "ProxyUseFdpass" not in render(["cpu"], relay, "/k")
    remote = ProxySpec(login="login", fdpass=True)  # through ssh to the login node: never
    assert "ProxyUseFdpass" not in render(["cpu"], remote, "/k")


def test_the_laptop_config_goes_via_the_login_node_and_takes_the_socket(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shim = ("/home/me/.local/bin/islurm-proxy",)
    proxy = ProxySpec(
        login="login", local_command=shim, remote_command="bin/islurm-proxy", fdpass=True
    )
    assert proxy.hands_over
    config.write_text(render(["cpu"], proxy, str(tmp_path / "known")))
    seen = subprocess.run(
        ["ssh", "-G", "-F", str(config), "slurm-cpu"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "proxyusefdpass yes" in seen
    assert (
        "proxycommand /home/me/.local/bin/islurm-proxy --via login --remote bin/islurm-proxy cpu"
        in seen
    )
