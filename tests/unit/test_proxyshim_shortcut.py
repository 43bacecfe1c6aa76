"""The laptop's remembered route (proxyshim/shortcut.py): the job banner contract, the
remembered file, and `islurm-proxy --via` taking `ssh -W` to a remembered endpoint (against the
scripted fake ssh of test_proxyshim_hop), or the full route when it no longer answers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from islurm.config import jobbanner
from islurm.proxyshim import hop, shortcut
from islurm.proxyshim.exits import EXIT_OK
from tests.unit.shimfakes import GUARD, Handler, MakeTcp, Start
from tests.unit.test_proxyshim_hop import FakeSsh, _via
from tests.unit.test_proxyshim_stale import dead_port

ROUTE = shortcut.key("login", hop.remote_command("islurm-proxy", "cpu", None, None), None)


def banner(job_id: str) -> bytes:
    return f"SSH-2.0-OpenSSH_9.2p1 Debian-2 {jobbanner.tag(job_id)}\r\n".encode()


# -- the contracts ----------------------------------------------------------------------------


def test_a_job_line_round_trips_and_others_are_not_one() -> None:
    assert hop.job_line("42") == b"islurm-job 1 42\n"
    assert hop.parse_job(b"islurm-job 1 42") == "42"
    for other in (b"islurm-job 2 42", b"islurm-job 1 4x", b"islurm-job 1", b"motd"):
        assert hop.parse_job(other) is None


def test_the_banner_tag_names_one_job() -> None:
    assert jobbanner.names(banner("42"), "42")
    assert jobbanner.names(banner("42").rstrip(b"\r\n"), "42")
    assert not jobbanner.names(banner("421"), "42")
    assert not jobbanner.names(banner("42"), "4")
    assert not jobbanner.names(b"SSH-2.0-OpenSSH_9.2p1\r\n", "42")
    assert not jobbanner.names(b"HTTP/1.1 400 islurm-job-42\r\n", "42")
    with pytest.raises(ValueError, match="not a job id"):
        jobbanner.tag("42; rm")


# -- the remembered file ----------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISLURM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_remembered_route_is_private_and_read_back(cache: Path) -> None:
    assert shortcut.recall(ROUTE) is None
    assert shortcut.remember(ROUTE, shortcut.Remembered("42", "c1", 40022)) is None
    found = shortcut.recall(ROUTE)
    assert found is not None and (found.job_id, found.host, found.port) == ("42", "c1", 40022)
    (path,) = (cache / "routes").iterdir()
    assert (cache / "routes").stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    other = shortcut.key("login", hop.remote_command("islurm-proxy", "gpu", None, None), None)
    assert shortcut.recall(other) is None
    shortcut.forget(ROUTE)
    assert shortcut.recall(ROUTE) is None


def test_a_route_is_taken_for_an_hour_then_the_full_route_checks_it_again(cache: Path) -> None:
    assert shortcut.remember(ROUTE, shortcut.Remembered("42", "c1", 40022)) is None
    (path,) = (cache / "routes").iterdir()
    for age, taken in (
        (10.0, True),
        (shortcut.ROUTE_TTL - 60, True),
        (shortcut.ROUTE_TTL + 60, False),
        (-600.0, False),
    ):
        when = time.time() - age
        os.utime(path, (when, when))
        assert (shortcut.recall(ROUTE) is not None) is taken, age
    # the full route writes it anew: taken again for an hour
    assert shortcut.remember(ROUTE, shortcut.Remembered("43", "c2", 40023)) is None
    found = shortcut.recall(ROUTE)
    assert found is not None and (found.job_id, found.host, found.port) == ("43", "c2", 40023)


def test_a_file_others_could_write_or_another_routes_file_is_not_trusted(cache: Path) -> None:
    shortcut.remember(ROUTE, shortcut.Remembered("42", "c1", 40022))
    (path,) = (cache / "routes").iterdir()
    path.chmod(0o620)
    assert shortcut.recall(ROUTE) is None
    path.chmod(0o600)
    (cache / "routes").chmod(0o770)
    assert shortcut.recall(ROUTE) is None
    (cache / "routes").chmod(0o700)
    text = path.read_text()
    path.write_text(text.replace("cpu", "gpu"))  # another route's file under this name
    assert shortcut.recall(ROUTE) is None
    for bad in ("42 c1 0", "42 c1 70000", "4x c1 22", "42 c1"):
        path.write_text(text.replace("42 c1 40022", bad))
        assert shortcut.recall(ROUTE) is None, bad
    path.write_text(text)
    assert shortcut.recall(ROUTE) is not None


# -- islurm-proxy --via with a remembered route -----------------------------------------------


def _node(job_id: str) -> Handler:
    def sshd(conn: socket.socket) -> None:
        conn.sendall(banner(job_id))
        assert conn.recv(4) == b"ping"
        conn.sendall(b"pong")

    return sshd


def _passed(ssh_side: socket.socket, job_id: str) -> None:
    """Our ssh's end: the socket handed over, the job's banner still queued on it."""
    data, fds, _, _ = socket.recv_fds(ssh_side, 1, 1)
    assert data == b"\0" and len(fds) == 1
    with socket.socket(fileno=fds[0]) as passed:
        passed.settimeout(GUARD)
        assert passed.recv(len(banner(job_id))) == banner(job_id)
        passed.sendall(b"ping")
        assert passed.recv(4) == b"pong"


def _connect(shim_start: Start, fake: FakeSsh, runtime: dict[str, str], job_id: str) -> bytes:
    """`islurm-proxy --via login cpu` succeeds and hands over job `job_id`'s socket; its
    stderr."""
    ssh_side, shim_side = socket.socketpair()
    with ssh_side, shim_side:
        code, err = _via(shim_start, fake, runtime, stdout=shim_side)
        assert code == EXIT_OK, err
        _passed(ssh_side, job_id)
    return err


def _env(runtime: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISLURM_CACHE_DIR", runtime["ISLURM_CACHE_DIR"])


def test_the_full_route_remembers_and_the_next_connect_asks_the_login_node_nothing(
    shim_dir: Path,
    runtime: dict[str, str],
    shim_tcp: MakeTcp,
    shim_start: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(runtime, monkeypatch)
    first = shim_tcp(_node("42"))
    lines = [hop.job_line("42").decode(), hop.endpoint_line("127.0.0.1", first.port).decode()]
    fake = FakeSsh(shim_dir, lines)
    try:
        err = _connect(shim_start, fake, runtime, "42")
        first.check()
        assert fake.ran("D") and not fake.ran("W")
        found = shortcut.recall(ROUTE)
        assert found is not None and (found.job_id, found.port) == ("42", first.port)

        # The job's sshd takes a new connection there: the next connect goes straight to it.
        second = shim_tcp(_node("42"))
        shortcut.remember(ROUTE, shortcut.Remembered("42", "127.0.0.1", second.port))
        fake.forget_runs()
        err = _connect(shim_start, fake, runtime, "42")
        second.check()
        assert fake.ran("W") and not fake.ran("D")  # no command on the login node
        argv = fake.argv("W")
        assert argv[-3:] == ["-W", f"127.0.0.1:{second.port}", "login"]
        for option in ("BatchMode=yes", "ControlMaster=no", "ControlPath=none"):
            assert argv[argv.index(option) - 1] == "-o"
        assert b"islurm" not in err  # nothing to say on a warm connect
    finally:
        fake.stop()


@pytest.mark.parametrize("why", ["port closed", "another job's sshd"])
def test_a_remembered_endpoint_that_no_longer_answers_takes_the_full_route(
    why: str,
    shim_dir: Path,
    runtime: dict[str, str],
    shim_tcp: MakeTcp,
    shim_start: Start,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _env(runtime, monkeypatch)
    if why == "port closed":
        stale_port = dead_port()
    else:
        other = shim_tcp(lambda conn: conn.sendall(banner("7")))
        stale_port = other.port
    shortcut.remember(ROUTE, shortcut.Remembered("42", "127.0.0.1", stale_port))
    node = shim_tcp(_node("43"))
    lines = [hop.job_line("43").decode(), hop.endpoint_line("127.0.0.1", node.port).decode()]
    fake = FakeSsh(shim_dir, lines)
    try:
        err = _connect(shim_start, fake, runtime, "43")
        node.check()
        assert fake.ran("W") and fake.ran("D")
        assert f"islurm: job 42 is not at 127.0.0.1:{stale_port} any more".encode() in err
        assert fake.answers() == b"ok\n"
        found = shortcut.recall(ROUTE)
        assert found is not None and (found.job_id, found.port) == ("43", node.port)
        assert os.listdir(runtime["XDG_RUNTIME_DIR"]) == []
    finally:
        fake.stop()


def test_forget_all_empties_the_routes_and_leaves_other_cached_things(cache: Path) -> None:
    assert shortcut.forget_all() == 0
    other = shortcut.key("login", hop.remote_command("islurm-proxy", "gpu", None, None), None)
    for route in (ROUTE, other):
        assert shortcut.remember(route, shortcut.Remembered("42", "c1", 40022)) is None
    assert shortcut.forget_all() == 2
    assert not cache.exists()  # nothing else was cached: the dir goes too
    shortcut.remember(ROUTE, shortcut.Remembered("42", "c1", 40022))
    (cache / "images").mkdir()
    assert shortcut.forget_all() == 1
    assert sorted(p.name for p in cache.iterdir()) == ["images"]
    assert shortcut.recall(ROUTE) is None
