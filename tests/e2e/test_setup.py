"""`islurmctl setup` from a "laptop" user to the cluster user through a second sshd playing the
login node (real OpenSSH both hops, real Slurm), then `islurmctl uninstall --remote`."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from islurm.config import setupconfig
from tests.e2e.conftest import Cluster, User
from tests.e2e.images import MARKER, debian_tarball
from tests.e2e.test_security import _free_port, _rogue_sshd, _wait_listening

LAPTOP = "islurmlaptop"
ASIDE = Path("/tmp/islurm-e2e-aside")
IMAGE = "/tmp/islurm-e2e-login/no-such-image.tar"  # for the dry runs: recorded, never started

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
    with _no_islurm_files(user):
        yield lap
    auth.write_text(before_auth)
    shutil.rmtree(remote_venv, ignore_errors=True)


def _top_islurm_paths(root: Path) -> list[Path]:
    """Every file or dir under `root` whose name says islurm (not descending into those)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if "islurm" in name:
                found.append(Path(dirpath, name))
        dirnames[:] = [d for d in dirnames if "islurm" not in d]
    return sorted(found)


def cluster_islurm_files(user: User) -> list[str]:
    """Anything of islurm's for the cluster user: in the home, the socket dirs in /tmp (and
    fallbacks), the runtime dir."""
    extra = [p for p in Path("/tmp").glob("*islurm*") if p.lstat().st_uid == user.uid]
    extra += [p for p in [Path(f"/run/user/{user.uid}/islurm")] if p.exists()]
    return [str(p) for p in [*_top_islurm_paths(Path(user.home)), *extra]]


@contextlib.contextmanager
def _no_islurm_files(user: User) -> Iterator[None]:
    """The cluster user starts with no islurm file at all (the fixtures' own are put aside
    and back), so "uninstall leaves none" means something. Serialized by the e2e lock."""
    shutil.rmtree(ASIDE, ignore_errors=True)
    ASIDE.mkdir(mode=0o700)
    moved: list[tuple[Path, Path]] = []
    for p in map(Path, cluster_islurm_files(user)):
        if str(p).startswith("/tmp/") or str(p).startswith("/run/"):
            shutil.rmtree(p, ignore_errors=True)  # socket dirs: no daemon runs now
            continue
        to = ASIDE / str(len(moved))
        os.rename(p, to)
        moved.append((p, to))
    try:
        yield
    finally:
        for p, to in moved:
            if p.exists() or p.is_symlink():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            os.rename(to, p)
        shutil.rmtree(ASIDE, ignore_errors=True)


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
    _remembered_route_then_a_stale_one(laptop, user, cluster)

    # A rogue sshd (key not signed by the cluster user's CA) is refused on the laptop.
    port = _free_port()
    with _rogue_sshd(user, Path(user.home) / "rogue-laptop", port, None) as rogue:
        try:
            _wait_listening(port)
            r = laptop.run(
                [
                    *("ssh", "-o", "BatchMode=yes", "-o", "ProxyUseFdpass=no"),  # nc relays
                    *("-o", f"ProxyCommand=nc 127.0.0.1 {port}"),
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

    # The container choice: a diff first, a bad image refused, then the profile's image in the
    # login node's config (a file setup creates), `ssh slurm-cpu` in that image (a Debian
    # rootfs tarball, rootless podman), the same bytes on a second run.
    remote_cfg = Path(user.home) / ".config/islurm/config.toml"
    args = ("setup", "--login", "login", "--profiles", "cpu", "--no-connect")
    r = laptop.islurmctl(*args, "--container", "images/x.tar")
    assert r.returncode == 2 and b"--container: the image 'images/x.tar'" in r.stderr, r.stderr
    r = laptop.islurmctl(*args, "--container", IMAGE, "--dry-run", timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert f'+image = "{IMAGE}"' in r.stdout.decode() and "(login node)" in r.stdout.decode()
    assert not remote_cfg.exists() and _snapshot(home) == after_first
    image = str(debian_tarball())
    r = laptop.islurmctl(*args, "--container", image, timeout=180)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert remote_cfg.read_text() == setupconfig.block(["cpu"], image)
    ctl = f"{user.home}/.local/share/islurm/venv/bin/islurmctl"
    profiles = json.loads(user.run([ctl, "profiles", "--json"]).stdout)
    assert profiles["cpu"]["container"] == image and profiles["gpu"]["container"] == ""
    t0 = time.monotonic()
    r = laptop.run(["ssh", "-o", "BatchMode=yes", "slurm-cpu", f"cat /etc/{MARKER}"], timeout=300)
    assert r.returncode == 0 and "built by tests" in r.stdout.decode(), r.stderr.decode()
    print(f"ssh slurm-cpu into the image: {time.monotonic() - t0:.1f} s")
    with_image = (_snapshot(home), remote_cfg.read_bytes())
    r = laptop.islurmctl(*args, timeout=120)  # no flag, no terminal: the recorded image stays
    assert r.returncode == 0 and "wrote" not in r.stdout.decode(), r.stdout.decode()
    assert (_snapshot(home), remote_cfg.read_bytes()) == with_image

    # islurmd still runs and the job still runs: uninstall must end both.
    assert user.live_jobs() and user.daemon_pid() is not None
    r = laptop.islurmctl("uninstall", "--remote", timeout=180)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "2 job(s) cancelled" in out, out  # the job without and the one with the image
    assert _snapshot(home) == before
    assert _islurm_files(home) == []
    assert cluster_islurm_files(user) == [], out
    assert user.live_jobs() == [] and user.daemon_pid() is None
    assert "islurm@" not in (Path(user.home) / ".ssh/authorized_keys").read_text()
    assert not list((Path(user.home) / ".config/systemd/user").glob("islurmd.*"))


def _remembered_route_then_a_stale_one(laptop: User, user: User, cluster: Cluster) -> None:
    """The next connect takes the remembered route (proxyshim/shortcut.py): `ssh -W` to the
    job's sshd through the login node, nothing run there, islurmd not asked. Once that job is
    gone, the connect notices in the same run and takes the full route to a new job."""
    routes = Path(laptop.home) / ".cache/islurm/routes"
    (route,) = routes.iterdir()
    assert route.stat().st_mode & 0o777 == 0o600 and routes.stat().st_mode & 0o777 == 0o700
    job_id = route.read_text().splitlines()[2].split()[0]
    assert [j["job_id"] for j in user.live_jobs()] == [job_id]
    handed = user.logged_jobs("session.handed")
    assert handed[-1:] == [job_id]  # the full route was taken and logged: the marker works
    for _ in range(3):
        r = laptop.run(["ssh", "-o", "BatchMode=yes", "slurm-cpu", "hostname"], timeout=120)
        assert r.stdout.decode().strip() == cluster.nodes[0], r.stderr.decode()
        assert b"islurm" not in r.stderr, r.stderr  # nothing to tell on a warm connect
    assert user.logged_jobs("session.handed") == handed  # islurmd heard of none of the three
    # The job's own count held it meanwhile; now it goes: scancel from outside.
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while any(j["job_id"] == job_id for j in user.live_jobs()):
        assert time.monotonic() < deadline, "the cancelled job stays"
        time.sleep(0.2)
    r = laptop.run(["ssh", "-o", "BatchMode=yes", "slurm-cpu", "hostname"], timeout=180)
    assert r.stdout.decode().strip() == cluster.nodes[0], r.stderr.decode()
    assert f"islurm: job {job_id} is not at".encode() in r.stderr, r.stderr
    (new_job,) = [j["job_id"] for j in user.live_jobs()]
    assert new_job != job_id and user.logged_jobs("session.handed")[-1] == new_job
    assert route.read_text().splitlines()[2].split()[0] == new_job


def _read_until(fd: int, wanted: bytes | None, seen: bytearray, timeout: float = 60) -> None:
    """Read the pty into `seen` until `wanted` shows (None: until the other side closes)."""
    deadline = time.monotonic() + timeout
    while wanted is None or wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {wanted!r} in {bytes(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: every writer closed the pty
                chunk = b""
            if not chunk:
                assert wanted is None, f"closed before {wanted!r}: {bytes(seen)!r}"
                return
            seen += chunk


def test_setup_asks_on_a_terminal_and_never_without_one(laptop: User, user: User) -> None:
    """A real pty: the questions appear and the answers are used (a dry run, so it touches
    nothing); without a terminal nothing is asked and a missing --login is an error."""
    home = Path(laptop.home)
    before = _snapshot(home)
    r = laptop.islurmctl("setup")
    assert r.returncode == 2 and b"give --login HOST" in r.stderr, r.stderr
    assert b"login node (as" not in r.stdout + r.stderr

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        laptop.argv(["islurmctl", "setup", "--dry-run"]), stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    seen = bytearray()
    try:
        for prompt, answer in [
            (b"login node (as your ssh reaches it): ", b"login\n"),
            (b"your user name on the cluster (empty: your ssh default): ", b"\n"),
            (b"container image for the profiles", IMAGE.encode() + b"\n"),
        ]:
            _read_until(master, prompt, seen)
            os.write(master, answer)
        _read_until(master, None, seen, timeout=180)
        assert proc.wait(timeout=60) == 0, bytes(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = bytes(seen).decode(errors="replace")
    assert f'+image = "{IMAGE}"' in text and "would install islurm" in text, text
    assert _snapshot(home) == before
    assert cluster_islurm_files(user) == []
