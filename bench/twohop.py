"""Two hops, as from a laptop: a second sshd on loopback plays the login node.

    laptop  ssh bench-laptop = ProxyCommand islurm-proxy --via bench-login cpu, ProxyUseFdpass:
            the remembered route (proxyshim/shortcut.py): the shim runs `ssh -W NODE:PORT
            bench-login` on a socketpair, checks the job's banner, hands ssh its end and exits
    full    the same, with the remembered routes removed before each connect: the shim runs
            `ssh -D` to the "login node", whose `islurm-proxy --endpoint` asks islurmd for the
            endpoint; the login sshd opens the connection to the job's sshd (as for -J), the
            shim hands the socket to ssh and exits (proxyshim/hop.py)
    floor   ssh bench-jump = ProxyJump bench-login: the login sshd forwards straight to the
            job's sshd (-W), no islurm process in the path

Both end at the same job's sshd, with the same generated options; the "laptop" is the bench
user itself (its key is in its own authorized_keys). The login sshd runs as root on a free
high port with its own host key; `UsePAM yes` because the test users' passwords are locked
("!"), which sshd otherwise takes as a locked account even for key logins."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.connect import CONFIRM_FRESH, Ctx
from bench.env import User, log, stop_pid
from bench.remote import transfer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoginSshd:
    """The loopback "login node": started and stopped (by pid) by the bench."""

    def __init__(self, workdir: str, user: User) -> None:
        self.dir = Path(workdir, "login")
        self.dir.mkdir(mode=0o700)
        key = self.dir / "hostkey"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.port = _free_port()
        (self.dir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {key}\n"
            f"PidFile {self.dir}/sshd.pid\nUsePAM yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n"
            f"AllowUsers {user.name}\nAllowTcpForwarding yes\nMaxStartups 100:30:200\n"
            "MaxSessions 100\n"
        )
        self.known_hosts = os.path.join(workdir, "login_known_hosts")
        pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        Path(self.known_hosts).write_text(f"[127.0.0.1]:{self.port} {pub}\n")
        os.chmod(self.known_hosts, 0o644)
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir
        subprocess.run(["/usr/sbin/sshd", "-f", str(self.dir / "sshd_config")], check=True)
        deadline = time.monotonic() + 10
        while not (self.dir / "sshd.pid").exists():  # written just after it listens
            if time.monotonic() > deadline:
                raise RuntimeError("the login sshd did not start")
            time.sleep(0.05)
        self.pid = int((self.dir / "sshd.pid").read_text())
        log(f"login node: sshd pid {self.pid} on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if b"sshd" in Path(f"/proc/{self.pid}/cmdline").read_bytes():
                stop_pid(self.pid)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(ctx: Ctx, pairs: int, reps: int, total: int) -> dict[str, list[float]]:
    """Warm connects in interleaved pairs (order alternating), then `total` bytes each way."""
    log(f"two-hops: {pairs} warm pairs laptop / ssh -J, then {reps} x {total >> 20} MiB each way")
    out: dict[str, list[float]] = {"laptop": [], "jump": [], "full": [], "full-jump": []}
    hosts = [("laptop", "bench-laptop"), ("jump", "bench-jump")]
    for _, host in hosts:  # untimed: page cache, the login sshd's first session
        ctx.ssh_ok(host)
    routes = Path(ctx.user.home, ".cache", "islurm", "routes")
    if not any(routes.iterdir()):
        raise RuntimeError(f"the laptop's connect remembered no route in {routes}")
    handed = _handed(ctx)
    last = time.monotonic()
    for i in range(pairs):
        # Each laptop connect is a lone one for the daemon (its banner check is not fresh).
        time.sleep(max(0.0, last + CONFIRM_FRESH + 0.1 - time.monotonic()))
        for name, host in hosts if i % 2 == 0 else hosts[::-1]:
            out[name].append(ctx.ssh_ok(host) * 1000)
        last = time.monotonic()
    out["full-routes-during-remembered"] = [float(_handed(ctx) - handed)]
    for i in range(pairs):  # the full route: what a first connect (or a new job) takes
        time.sleep(max(0.0, last + CONFIRM_FRESH + 0.1 - time.monotonic()))
        for name in ("full", "full-jump") if i % 2 == 0 else ("full-jump", "full"):
            if name == "full":
                for f in routes.iterdir():
                    f.unlink()
            host = "bench-laptop" if name == "full" else "bench-jump"
            out[name].append(ctx.ssh_ok(host) * 1000)
        last = time.monotonic()
    for i in range(reps):
        for name, host in hosts if i % 2 == 0 else hosts[::-1]:
            transfer(ctx, name, host, total, out)
    return out


def _handed(ctx: Ctx) -> int:
    """islurmd's `session.handed` lines so far: one per full laptop route."""
    log = Path(ctx.user.state, "log", "islurmd.log")
    return log.read_text().count('"session.handed"') if log.exists() else 0
