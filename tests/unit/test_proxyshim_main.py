"""islurm-proxy's command line, its ways of being started, and what it must not import."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import islurm.proxyshim
from islurm.proxyshim.main import UsageError, parse_args
from tests.unit.shimfakes import MakeDaemon, MakeTcp, Peer, Start

GUARD = 60.0
BANNER = b"SSH-2.0-fake_sshd\r\n"

# Too slow to import on every ssh (engineering notes), or pulled in only by such modules.
FORBIDDEN = {
    "trio", "structlog", "jsonrpcserver", "psutil", "asyncio", "subprocess", "logging",
    "argparse", "re", "socket", "json", "signal", "enum", "typing", "contextlib",
    "importlib.metadata",
}  # fmt: skip


def imported_modules(stderr: bytes) -> set[str]:
    """Module names from `python -X importtime` output."""
    names = set()
    for line in stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


# -- the command line -------------------------------------------------------------------------


def test_parse_args_forms() -> None:
    opts = parse_args(["cpu"])
    assert (opts.action, opts.profile, opts.socket, opts.timeout) == ("run", "cpu", None, None)
    opts = parse_args(["--socket", "/s", "--timeout", "90", "gpu"])
    assert (opts.profile, opts.socket, opts.timeout) == ("gpu", "/s", 90.0)
    opts = parse_args(["--timeout=1.5", "--socket=/t", "--", "-odd-profile"])
    assert (opts.profile, opts.socket, opts.timeout) == ("-odd-profile", "/t", 1.5)
    assert parse_args(["cpu", "--help"]).action == "help"
    assert parse_args(["-h"]).action == "help"
    assert parse_args(["--version", "--bogus"]).action == "version"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ([], "missing PROFILE"),
        (["a", "b"], "one PROFILE expected, got 2: a b"),
        (["--frobnicate", "cpu"], "unknown option --frobnicate"),
        (["cpu", "--socket"], "--socket needs a value"),
        (["--socket=", "cpu"], "--socket needs a path"),
        (["--timeout", "soon", "cpu"], "--timeout wants seconds, not 'soon'"),
        (["--timeout", "-1", "cpu"], "positive number"),
        (["--timeout", "nan", "cpu"], "positive number"),
        (["--timeout", "inf", "cpu"], "positive number"),
        ([""], "PROFILE is empty"),
        (["--via"], "--via needs a value"),
        (["--via", "-oProxyCommand=x", "cpu"], "--via needs a value, not '-oProxyCommand=x'"),
        (["--via", "login", "--fdpass", "cpu"], "exclude each other"),
        (["--endpoint", "--fdpass", "cpu"], "exclude each other"),
        (["--via", "login", "--remote", "bin/islurm proxy", "cpu"], "login node's shell"),
        (["--via", "login", "c$(id)"], "login node's shell"),
    ],
)
def test_parse_args_errors(args: list[str], complaint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(args)
    assert complaint in str(caught.value)


def test_usage_error_exits_2_on_stderr_only(shim_start: Start) -> None:
    proc = shim_start("--bogus", "cpu")
    out, err = proc.communicate(timeout=GUARD)
    assert (proc.returncode, out) == (2, b"")
    assert err.decode().splitlines() == [
        "islurm-proxy: unknown option --bogus",
        "usage: islurm-proxy [--socket PATH] [--timeout SECONDS] [--image IMAGE] [--fdpass]"
        " PROFILE",
        "       islurm-proxy --via LOGIN [--remote PATH] [--ssh-config FILE] [--timeout SECONDS]",
        "                    [--image IMAGE] PROFILE",
    ]


def test_help_and_version(shim_start: Start) -> None:
    proc = shim_start("--help")
    out, err = proc.communicate(timeout=GUARD)
    assert (proc.returncode, err) == (0, b"")
    assert out.startswith(
        b"usage: islurm-proxy [--socket PATH] [--timeout SECONDS] [--image IMAGE] [--fdpass]"
        b" PROFILE\n"
    )
    assert b"--timeout SECONDS" in out and b"exit status" in out
    proc = shim_start("--version")
    out, err = proc.communicate(timeout=GUARD)
    assert (proc.returncode, err) == (0, b"")
    assert out.startswith(b"islurm-proxy ") and out.endswith(b"\n")


def test_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "islurm.proxyshim", "--version"],
        capture_output=True,
        timeout=GUARD,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.startswith(b"islurm-proxy ")


@pytest.mark.parametrize("script", ["launch.py", "main.py"])  # main.py: older ssh configs
def test_script_finds_its_package_through_symlinks(
    script: str, shim_dir: Path, shim_env: dict[str, str]
) -> None:
    # A site-packages whose islurm/proxyshim links elsewhere, as .dev/ does: sys.path must get
    # the directory three levels above the script as given, not as resolved.
    package = Path(islurm.proxyshim.__file__).resolve().parent
    site = shim_dir / "site-packages"
    (site / "islurm").mkdir(parents=True)
    (site / "islurm" / "proxyshim").symlink_to(package)
    (site / "islurm" / "config").symlink_to(package.parent / "config")
    env = dict(shim_env, ISLURM_SOCKET=str(shim_dir / "nowhere" / "s.sock"))
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(site / "islurm" / "proxyshim" / script), "cpu"],
        capture_output=True,
        env=env,
        timeout=GUARD,
        check=False,
    )
    # It got as far as trying to start islurmd, so islurm.* imported.
    assert (proc.returncode, proc.stdout) == (3, b"")
    assert b"cannot start islurmd" in proc.stderr


# -- import discipline ------------------------------------------------------------------------


def test_importtime_parser_sees_what_json_drags_in() -> None:
    # The check below can fail: the same parser spots `re` behind `import json`.
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", "-c", "import json"],
        capture_output=True,
        timeout=GUARD,
        check=True,
    )
    assert {"json", "re"} <= imported_modules(proc.stderr)


def test_a_full_session_imports_nothing_slow(
    shim_daemon: MakeDaemon, shim_tcp: MakeTcp, shim_start: Start
) -> None:
    daemon = shim_daemon()

    def sshd(conn: socket.socket) -> None:
        conn.sendall(BANNER)
        assert conn.recv(4, socket.MSG_WAITALL) == b"bye\n"

    server = shim_tcp(sshd)

    @daemon.script
    def acquire(peer: Peer) -> None:
        peer.reply(peer.expect("session.acquire"), {"lease": "L-1", "profile": "cpu"})
        peer.notify("session.progress", {"message": "starting", "waited": 0.0})
        peer.notify(
            "session.ready",
            {"job_id": "9", "node": "n1", "host": "127.0.0.1", "port": server.port, "lease": "L-1"},
        )
        peer.wait_eof()

    proc = shim_start("cpu", python_flags=("-X", "importtime"))
    out, err = proc.communicate(b"bye\n", timeout=GUARD)
    daemon.check()
    server.check()
    assert (proc.returncode, out) == (0, BANNER)  # the whole path ran: acquire, lease, splice
    assert b"islurm: starting\n" in err
    modules = imported_modules(err)
    assert {"_socket", "select", "islurm.proxyshim.rpc", "islurm.proxyshim.splice"} <= modules
    assert modules & FORBIDDEN == set()


def test_environment_of_the_shim_is_not_needed_for_imports() -> None:
    # PYTHONPATH is ignored under -I: the script must not rely on it.
    env = dict(os.environ, PYTHONPATH="/nonexistent")
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(Path(islurm.proxyshim.__file__).with_name("launch.py")),
            "--version",
        ],
        capture_output=True,
        env=env,
        timeout=GUARD,
        check=False,
    )
    assert proc.returncode == 0
