"""The real tier: a real Slurm (started by cluster/testcluster.sh), islurm installed for an
unprivileged user, real OpenSSH client and sshd. It fails, never skips, if that cannot be had."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster" / "testcluster.sh"
PREPARE = REPO / "cluster" / "prepare-user.sh"
E2E_PREFIX = os.environ.get("ISLURM_E2E_PREFIX", "/opt/islurm-test")

TEST_CONFIG = """\
[daemon]
poll_busy = 0.25
poll_idle = 5

[update]
mode = "off"

[profiles.bad]
description = "options sbatch rejects"
sbatch = ["--partition=nosuchpartition", "--time=00:05:00"]

[profiles.short]
description = "a small CPU job for tests"
sbatch = ["--partition=interactive", "--cpus-per-task=1", "--mem=256M", "--time=00:20:00"]
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class Cluster:
    user: str
    user2: str
    nodes: tuple[str, ...]
    dir: str

    def script(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(CLUSTER), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the real tier runs as root: it installs and starts Slurm (make test)")
    was_up = (
        subprocess.run(
            ["bash", str(CLUSTER), "status"], capture_output=True, check=False
        ).returncode
        == 0
    )
    up = subprocess.run(
        ["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=1200, check=False
    )
    if up.returncode != 0:
        pytest.fail(f"the Slurm test cluster did not come up:\n{up.stdout}\n{up.stderr}")
    listing = subprocess.run(
        ["bash", str(CLUSTER), "env"], capture_output=True, text=True, check=True
    ).stdout
    env = dict(
        w.split("=", 1) for line in listing.splitlines() for w in shlex.split(line) if "=" in w
    )
    c = Cluster(
        user=env["ISLURM_TEST_USER"],
        user2=env["ISLURM_TEST_USER2"],
        nodes=tuple(env["ISLURM_TEST_NODES"].split()),
        dir=env["ISLURM_TEST_CLUSTER_DIR"],
    )
    yield c
    if not was_up:
        c.script("down")


@pytest.fixture(scope="session")
def product(cluster: Cluster) -> str:
    # The prefix is the tests' own: start from nothing, whatever layout an earlier run left.
    shutil.rmtree(os.path.join(E2E_PREFIX, "share", "islurm"), ignore_errors=True)
    r = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "e2e-install",
            f"E2E_PREFIX={E2E_PREFIX}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if r.returncode != 0:
        pytest.fail(f"installing islurm for the test user failed:\n{r.stdout}\n{r.stderr}")
    return E2E_PREFIX


@dataclass
class User:
    name: str
    prefix: str
    #: jobs with ids above this were submitted during the current test
    baseline: int = 0

    @property
    def home(self) -> str:
        return subprocess.run(
            ["getent", "passwd", self.name], capture_output=True, text=True, check=True
        ).stdout.split(":")[5]

    @property
    def uid(self) -> int:
        return int(
            subprocess.run(
                ["id", "-u", self.name], capture_output=True, text=True, check=True
            ).stdout
        )

    @property
    def ssh_config(self) -> str:
        """The login node's config (`ssh-config --local`: ssh takes the socket from the shim,
        ProxyUseFdpass)."""
        return f"{self.home}/.ssh/islurm_config"

    @property
    def relay_config(self) -> str:
        """The same hosts with the shim relaying the bytes (`ssh-config --local --relay`)."""
        return f"{self.home}/.ssh/islurm_relay_config"

    def argv(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        base = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
            "PATH": f"{self.prefix}/bin:/usr/bin:/bin",
        }
        base.update(env or {})
        return [
            "runuser",
            "-u",
            self.name,
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in base.items()),
            *argv,
        ]

    def run(
        self,
        argv: list[str],
        timeout: float = 120,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(argv, env),
            capture_output=True,
            timeout=timeout,
            input=input,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def popen(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(self.argv(argv), **kw)  # type: ignore[call-overload]
        return proc

    def ssh_argv(self, host: str, command: str, config: str | None = None) -> list[str]:
        return ["ssh", "-F", config or self.ssh_config, "-o", "BatchMode=yes", host, command]

    def ssh(
        self, host: str, command: str, timeout: float = 180, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return self.run(self.ssh_argv(host, command), timeout=timeout, input=input)

    def islurmctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return self.run(["islurmctl", *args], timeout=timeout)

    def jobs(self, all_states: bool = False) -> list[dict[str, str]]:
        """The user's jobs as Slurm (not islurm) reports them."""
        argv = ["squeue", "-u", self.name, "-h", "-o", "%i|%j|%T|%N|%k"]
        if all_states:
            argv.append("--states=all")
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
        keys = ("job_id", "name", "state", "node", "comment")
        rows = [
            dict(zip(keys, ln.split("|", 4), strict=True))
            for ln in out.stdout.splitlines()
            if ln.strip()
        ]
        return [r for r in rows if int(r["job_id"]) > self.baseline]

    def mark_baseline(self) -> None:
        out = subprocess.run(
            ["squeue", "-h", "--states=all", "-o", "%i"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
        self.baseline = max((int(i) for i in out if i.isdigit()), default=0)

    def logged_jobs(self, event: str) -> list[str]:
        """The job ids of islurmd's `event` log lines, in order (none if there is no log)."""
        log = Path(self.home) / ".local/state/islurm/log/islurmd.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(ln)["job_id"] for ln in lines if f'"{event}"' in ln]

    def live_jobs(self) -> list[dict[str, str]]:
        return [j for j in self.jobs() if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]

    def wait_no_jobs(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.live_jobs():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still there: {self.live_jobs()}")
            time.sleep(0.2)

    def daemon_pid(self, sock: str | None = None) -> int | None:
        """The pid of the user's islurmd serving `sock` (default: the per-user socket)."""
        sock = sock or f"/tmp/islurm-{self.uid}/islurmd.sock"
        lock = Path(os.path.splitext(sock)[0] + ".lock")
        try:
            pid = int(lock.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return None
        zombie = "\nState:\tZ" in status
        return pid if b"islurm" in cmdline and not zombie else None

    def stop_daemon(self, sock: str | None = None) -> None:
        pid = self.daemon_pid(sock)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.daemon_pid(sock) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.daemon_pid(sock) == pid:
            os.kill(pid, signal.SIGKILL)

    def reset(self) -> None:
        """No daemon, no jobs, no state: every test starts cold."""
        self.stop_daemon()
        subprocess.run(["scancel", "-u", self.name], capture_output=True, check=False)
        self.wait_no_jobs()
        state = f"{self.home}/.local/state/islurm"
        for _ in range(20):
            # A shim whose session just ended may start a daemon that writes its log while
            # this removes the dir ("Directory not empty"): stop it and try again.
            removed = subprocess.run(["rm", "-rf", state], capture_output=True, check=False)
            if removed.returncode == 0:
                return
            time.sleep(0.25)
            self.stop_daemon()
        raise AssertionError(f"cannot remove {state}: {removed.stderr.decode()}")

    def prepare(self, config_text: str, tmp_path: Path) -> None:
        cfg = tmp_path / "config.toml"
        cfg.write_text(config_text)
        r = subprocess.run(
            ["bash", str(PREPARE), self.name, self.prefix, str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, f"prepare-user failed: {r.stderr}"


@pytest.fixture(scope="session")
def login_node(cluster: Cluster) -> Iterator[int]:
    """A second sshd on a high loopback port: the login node the laptop reaches."""
    from tests.e2e.test_security import _free_port, _wait_listening  # they import us

    d = Path("/tmp/islurm-e2e-login")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "hostkey")])
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n"
        # UsePAM: without it sshd refuses the cluster user's locked password ("!") even for keys
        f"UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"AllowUsers {cluster.user}\nAuthorizedKeysFile .ssh/authorized_keys\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    subprocess.run(["/usr/sbin/sshd", "-f", str(d / "sshd_config")], check=True)
    _wait_listening(port)
    deadline = time.monotonic() + 10
    while not (d / "sshd.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # sshd writes its pid file just after it listens
    pid = int((d / "sshd.pid").read_text())
    yield port
    if b"sshd" in Path(f"/proc/{pid}/cmdline").read_bytes():
        os.kill(pid, 15)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def user(cluster: Cluster, product: str, tmp_path: Path) -> Iterator[User]:
    u = User(cluster.user, product)
    u.reset()
    u.prepare(TEST_CONFIG, tmp_path)
    u.mark_baseline()
    yield u
    u.reset()


def sh(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
