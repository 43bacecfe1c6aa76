"""Shared fixtures: the daemon's faked banner checks and a short socket dir; for the proxy
shim's tests (named shim_*) short socket dirs, a process reaper, a scripted fake islurmd and
loopback TCP servers standing in for a job's sshd."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from islurm.daemon import manager, readiness
from islurm.daemon.records import Endpoint
from tests.unit.fakes import resolve
from tests.unit.shimfakes import SHIM_MAIN, FakeDaemon, MakeDaemon, MakeTcp, Procs, Start, TcpServer


@pytest.fixture
def banners(monkeypatch: pytest.MonkeyPatch) -> list[Endpoint]:
    """Every sshd answers its banner check; the endpoints checked are recorded."""
    checked: list[Endpoint] = []

    async def confirm(endpoint: Endpoint) -> bool:
        checked.append(endpoint)
        await trio.lowlevel.checkpoint()
        return True

    monkeypatch.setattr(readiness, "confirm", confirm)
    monkeypatch.setattr(readiness, "ipv4_address", resolve)
    # A known endpoint is re-checked with a bare connect (readiness.still_listening).
    monkeypatch.setattr(manager, "still_listening", confirm)
    return checked


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short private directory: sun_path holds 107 bytes, tmp_path can be longer."""
    path = tempfile.mkdtemp(prefix="isl", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shim_dir() -> Iterator[Path]:
    """A short private directory: sun_path holds only 107 bytes, pytest's tmp_path can be long."""
    path = tempfile.mkdtemp(prefix="isl")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shim_procs() -> Iterator[Procs]:
    procs = Procs()
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def shim_daemon(shim_dir: Path) -> Iterator[MakeDaemon]:
    made: list[FakeDaemon] = []

    def make() -> FakeDaemon:
        daemon = FakeDaemon(str(shim_dir / "d.sock"))
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            daemon.close()


@pytest.fixture
def shim_tcp() -> Iterator[MakeTcp]:
    made: list[TcpServer] = []

    def make(handler: Callable[[socket.socket], None]) -> TcpServer:
        server = TcpServer(handler)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()


@pytest.fixture
def shim_env(shim_dir: Path) -> dict[str, str]:
    """Environment for a shim under test: its socket in shim_dir; starting a daemon fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISLURM_", "XDG_"))}
    env["ISLURM_SOCKET"] = str(shim_dir / "d.sock")
    env["ISLURM_STATE_DIR"] = str(shim_dir / "state")
    env["ISLURM_CACHE_DIR"] = str(shim_dir / "cache")
    env["ISLURM_DAEMON_CMD"] = json.dumps(["/nonexistent/islurmd-must-not-start"])
    return env


@pytest.fixture
def shim_start(shim_procs: Procs, shim_env: dict[str, str]) -> Start:
    """Start the shim the way the generated ssh config does: python -I -S .../launch.py ARGS."""

    def start(
        *args: str, python_flags: tuple[str, ...] = (), **kwargs: object
    ) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("env", shim_env)
        argv = [sys.executable, "-I", "-S", *python_flags, SHIM_MAIN, *args]
        return shim_procs.start(argv, **kwargs)

    return start


@pytest.fixture(autouse=True)
def no_update_checks(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Daemons under test check for no update: a site file says mode off (no network)."""
    site = tmp_path_factory.getbasetemp() / "site-update-off.toml"
    site.write_text('[update]\nmode = "off"\n')
    monkeypatch.setenv("ISLURM_SITE_CONFIG", str(site))


@pytest.fixture
def runtime(shim_dir: Path, shim_env: dict[str, str]) -> dict[str, str]:
    """The shim's env with a private runtime dir (where its socket dir goes)."""
    run = shim_dir / "run"
    run.mkdir(mode=0o700)
    return {**shim_env, "XDG_RUNTIME_DIR": str(run)}
