"""`islurmd --selftest`: what an update runs in a new generation before switching to it.

Every module imports; the built-in config loads; a throw-away islurmd, started the way a shim
starts one (on demand, on a private socket, with private state, config and CA dirs and no
Slurm on PATH) answers a real shim's acquire (unknown profile) and reports this version and
protocol; then it is stopped. Nothing of the user's is read or written."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import signal
import sys
import tempfile
import time

import islurm

FAKE_PROFILE = "islurm-selftest-no-such-profile"


def _imports() -> str:
    names = [
        m.name
        for m in pkgutil.walk_packages(islurm.__path__, "islurm.")
        if not m.name.endswith("__main__")
    ]
    for name in names:
        importlib.import_module(name)
    return f"{len(names)} modules import"


def _config() -> str:
    from islurm.config.settings import load_settings

    return f"built-in config: {len(load_settings(None).profiles)} profiles"


def _private_env(tmp: str) -> None:
    """This process's (and the daemon's) environment: nothing of the user's."""
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir)
    keygen = shutil.which("ssh-keygen")
    if keygen:  # islurmd makes a CA on start; no squeue/sbatch: it can touch no job
        os.symlink(keygen, os.path.join(bindir, "ssh-keygen"))
    islurmd = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "islurmd")
    os.environ.update(
        PATH=bindir,
        ISLURM_STATE_DIR=os.path.join(tmp, "state"),
        ISLURM_CONFIG=os.path.join(tmp, "config.toml"),
        XDG_CONFIG_HOME=os.path.join(tmp, "config"),
        ISLURM_DAEMON_CMD=json.dumps([islurmd if os.path.exists(islurmd) else sys.executable]
                                     + ([] if os.path.exists(islurmd) else
                                        ["-m", "islurm.daemon.main"])),
    )  # fmt: skip
    site = os.path.join(tmp, "site.toml")
    with open(site, "w") as f:
        f.write('[update]\nmode = "off"\n')  # the throw-away daemon checks for nothing
    os.environ["ISLURM_SITE_CONFIG"] = site
    os.environ.pop("XDG_RUNTIME_DIR", None)
    os.environ.pop("ISLURM_SOCKET", None)


def _round_trip(sock: str) -> tuple[str, int]:
    from islurm.config import protocol
    from islurm.daemon import version
    from islurm.proxyshim import rpc
    from islurm.proxyshim.exits import EXIT_ACQUIRE
    from islurm.proxyshim.report import ShimError

    try:
        rpc.acquire(sock, FAKE_PROFILE, timeout=10)
    except ShimError as exc:
        if exc.code != EXIT_ACQUIRE or "unknown profile" not in exc.message:
            raise RuntimeError(f"shim round trip: unexpected answer: {exc.message}") from None
    else:
        raise RuntimeError("shim round trip: islurmd gave a session for a profile it lacks")
    conn = rpc.connect(sock)
    try:
        conn.send("daemon.status", {})
        msg = conn.wait(time.monotonic() + 10)
    finally:
        conn.close()
    result = msg.get("result") if msg else None
    if not isinstance(result, dict):
        raise RuntimeError(f"daemon.status: no result: {msg}")
    if result.get("version") != version.VERSION or result.get("protocol") != protocol.PROTOCOL:
        raise RuntimeError(
            f"islurmd reports {result.get('version')}/protocol {result.get('protocol')}, "
            f"expected {version.VERSION}/protocol {protocol.PROTOCOL}"
        )
    pid = result.get("pid")
    return f"shim round trip with islurmd {result['version']} (pid {pid})", int(str(pid))


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.05)


def run() -> int:
    tmp = tempfile.mkdtemp(prefix="islurm-selftest-", dir="/tmp")  # short: sun_path is small
    pid = None
    try:
        for check in (_imports, _config):
            print(f"ok: {check()}", flush=True)
        _private_env(tmp)
        said, pid = _round_trip(os.path.join(tmp, "run", "islurmd.sock"))
        print(f"ok: {said}", flush=True)
        return 0
    except Exception as exc:
        print(f"islurmd: self-test failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if pid is None:  # it may have started before something else failed: its lock says
            try:
                with open(os.path.join(tmp, "run", "islurmd.lock")) as f:
                    pid = int(f.read().strip() or 0) or None
            except (OSError, ValueError):
                pass
        if pid is not None:
            _stop(pid)
        shutil.rmtree(tmp, ignore_errors=True)
