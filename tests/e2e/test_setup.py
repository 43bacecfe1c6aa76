"""`islurmctl setup` from a "laptop" user to the cluster user through a second sshd playing the
login node (real OpenSSH both hops, real Slurm), then `islurmctl uninstall --remote`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, User
from tests.e2e.test_security import _free_port, _rogue_sshd, _wait_listening

LAPTOP = "islurmlaptop"

USER_SSH_CONFIG = """\
# my own settings: they come first and would win over anything appended below
Host *
    StrictHostKeyChecking accept-new
    UserKnownHostsFile ~/.ssh/other_hosts

Host login
    HostName 127.0.0.1
    Port {port}
    User {cluster_user}
"""

USER_SETTINGS = """\
{
    // my editor, my rules
    "editor.fontSize": 13, /* keep */
    "files.exclude": {
        "**/.git": true,
    },
    "remote.SSH.connectTimeout": 20,
}
"""


@pytest.fixture(scope="module")
def login_node(cluster: Cluster) -> Iterator[int]:
    """A second sshd on a high loopback port: the login node the laptop reaches."""
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
def laptop(user: User, login_node: int) -> Iterator[User]:
    """The laptop user: key access to the login node already, a ~/.ssh/config that starts
    with a `Host *` weakening host-key checking, VS Code settings with comments."""
    if subprocess.run(["id", "-u", LAPTOP], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--create-home", "--user-group", LAPTOP], check=True)
    lap = User(LAPTOP, user.prefix)
    home = Path(lap.home)
    for sub in (".ssh", ".config"):
        shutil.rmtree(home / sub, ignore_errors=True)
    lap.run(["mkdir", "-p", "-m", "700", f"{home}/.ssh", f"{home}/.config/Code/User"])
    lap.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{home}/.ssh/id_ed25519"])
    own_key = (home / ".ssh/id_ed25519.pub").read_text().strip()
    auth = Path(user.home) / ".ssh/authorized_keys"
    before_auth = auth.read_text()
    with auth.open("a") as f:
        f.write(own_key + "\n")
    hostkey = Path("/tmp/islurm-e2e-login/hostkey.pub").read_text().split()[:2]
    _write(lap, home / ".ssh/other_hosts", f"[127.0.0.1]:{login_node} {' '.join(hostkey)}\n")
    _write(
        lap,
        home / ".ssh/config",
        USER_SSH_CONFIG.format(port=login_node, cluster_user=user.name),
    )
    _write(lap, home / ".config/Code/User/settings.json", USER_SETTINGS)
    remote_venv = Path(user.home) / ".local/share/islurm"
    shutil.rmtree(remote_venv, ignore_errors=True)
    yield lap
    auth.write_text(before_auth)
    shutil.rmtree(remote_venv, ignore_errors=True)


def _write(u: User, path: Path, text: str) -> None:
    path.write_text(text)
    os.chown(path, u.uid, -1)
    path.chmod(0o600)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def _islurm_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if "islurm" in p.name]


def test_dry_run_prints_the_diff_and_touches_nothing(laptop: User, user: User) -> None:
    home = Path(laptop.home)
    before = _snapshot(home)
    r = laptop.islurmctl("setup", "--login", "login", "--profiles", "cpu", "--dry-run")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "+Include ~/.ssh/islurm.d/config" in out
    assert '+    "remote.SSH.showLoginTerminal": true,' in out
    assert "would create the key" in out and "would install islurm" in out
    assert _snapshot(home) == before
    assert not (Path(user.home) / ".local/share/islurm").exists()


def test_setup_twice_connect_list_then_uninstall_restores_everything(
    laptop: User, user: User, cluster: Cluster
) -> None:
    home = Path(laptop.home)
    before = _snapshot(home)
    t0 = time.monotonic()
    r = laptop.islurmctl("setup", "--login", "login", "--profiles", "cpu", timeout=300)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "ssh -G: strict host-key checking" in out
    assert f"landed on {cluster.nodes[0]}" in out, out
    print(f"first setup: {time.monotonic() - t0:.1f} s")

    # Our Include wins over the user's `Host *`, which still governs every other host.
    resolved = laptop.run(["ssh", "-G", "slurm-cpu"]).stdout.decode()
    assert "stricthostkeychecking true\n" in resolved
    assert f"userknownhostsfile {home}/.ssh/islurm.d/known_hosts\n" in resolved
    other = laptop.run(["ssh", "-G", "elsewhere"]).stdout.decode()
    assert "stricthostkeychecking accept-new\n" in other
    cfg = (home / ".ssh/config").read_text()
    assert cfg.startswith("# islurm:") and cfg.endswith(before[".ssh/config"].decode())
    settings = (home / ".config/Code/User/settings.json").read_text()
    assert "// my editor, my rules" in settings and '"**/.git": true,' in settings
    assert '"remote.SSH.connectTimeout": 1860,' in settings
    assert (home / ".ssh/islurm").stat().st_mode & 0o777 == 0o600

    # Both hops, strict checking, no prompt: a real ssh as the laptop user.
    r = laptop.run(["ssh", "-o", "BatchMode=yes", "slurm-cpu", "hostname"], timeout=120)
    assert r.stdout.decode().strip() == cluster.nodes[0], r.stderr.decode()

    # A rogue sshd (key not signed by the cluster user's CA) is refused on the laptop.
    port = _free_port()
    with _rogue_sshd(user, Path(user.home) / "rogue-laptop", port, None) as rogue:
        try:
            _wait_listening(port)
            r = laptop.run(
                [
                    *("ssh", "-o", "BatchMode=yes", "-o", f"ProxyCommand=nc 127.0.0.1 {port}"),
                    *("slurm-cpu", "true"),
                ]
            )
        finally:
            rogue.terminate()
            rogue.wait(timeout=10)
    assert r.returncode == 255 and b"Host key verification failed" in r.stderr, r.stderr

    # From the laptop, islurmctl answers for the login node.
    r = laptop.islurmctl("list", "--json")
    jobs = json.loads(r.stdout)
    assert [(j["profile"], j["state"]) for j in jobs] == [("cpu", "RUNNING")], r.stdout
    r = laptop.islurmctl("doctor", "--quick", timeout=120)
    report = r.stdout.decode()
    assert "ok    ssh config slurm-cpu" in report and "ok    remote version" in report, report

    # A second run changes nothing.
    after_first = _snapshot(home)
    r = laptop.islurmctl("setup", "--login", "login", "--profiles", "cpu", "--no-connect")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert "installed on the login node already" in r.stdout.decode()
    assert "wrote" not in r.stdout.decode()
    assert _snapshot(home) == after_first

    user.stop_daemon()
    r = laptop.islurmctl("uninstall", "--remote", timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert _snapshot(home) == before
    assert _islurm_files(home) == []
    assert not (Path(user.home) / ".local/share/islurm").exists()
    assert "islurm@" not in (Path(user.home) / ".ssh/authorized_keys").read_text()
    assert not list((Path(user.home) / ".config/systemd/user").glob("islurmd.*"))
