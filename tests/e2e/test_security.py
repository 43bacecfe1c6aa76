"""Issue 4 acceptance: strict host keys that never prompt, a private socket, hostile inputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Cluster, User

MARKER = "/tmp/islurm-pwned"


def _record(user: User, job_id: str) -> dict[str, object]:
    path = Path(f"{user.home}/.local/state/islurm/jobs/{job_id}.json")
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def test_strict_host_keys_cold_and_warm_on_two_jobs_in_a_row(user: User) -> None:
    config = Path(user.ssh_config).read_text()
    assert "StrictHostKeyChecking yes" in config and "HostKeyAlias islurm" in config
    keys = []
    for _ in range(2):
        cold = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")  # BatchMode: a prompt would fail
        assert cold.returncode == 0, cold.stderr.decode()
        job_id = cold.stdout.decode().strip()
        warm = user.ssh("slurm-cpu", "echo $SLURM_JOB_ID")
        assert warm.returncode == 0 and warm.stdout.decode().strip() == job_id
        keys.append(_record(user, job_id)["host_key"])
        assert user.islurmctl("cancel", "cpu").returncode == 0
        user.wait_no_jobs()
    assert keys[0] != keys[1]  # a fresh host key per job
    known = Path(f"{user.home}/.config/islurm/known_hosts").read_text()
    assert known.startswith("@cert-authority islurm ssh-ed25519 ")


def _rogue_sshd(user: User, tmp: Path, port: int, ca: str | None) -> subprocess.Popen[bytes]:
    """An sshd of the user's own, on a key not signed by their CA (or signed by another CA)."""
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    os.chown(tmp, user.uid, -1)
    key = tmp / "hostkey"
    user.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], timeout=30)
    extra = ""
    if ca is not None:
        user.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "ca")], timeout=30)
        user.run(
            [
                "ssh-keygen",
                "-q",
                "-s",
                str(tmp / "ca"),
                "-h",
                "-I",
                "rogue",
                "-n",
                "islurm",
                str(key) + ".pub",
            ],
            timeout=30,
        )
        extra = f"HostCertificate {key}-cert.pub\n"
    cfg = tmp / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\n{extra}PidFile none\n"
        "UsePAM no\nAuthorizedKeysFile .ssh/authorized_keys\n"
    )
    os.chown(cfg, user.uid, -1)
    return user.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stderr=subprocess.DEVNULL)


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "rogue sshd did not listen"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_endpoint_not_signed_by_the_users_ca_is_refused(user: User) -> None:
    assert user.ssh("slurm-cpu", "true").returncode == 0  # CA and known_hosts exist now
    for name, ca in (("unsigned", None), ("other-ca", "other")):
        port = _free_port()
        with _rogue_sshd(user, Path(user.home) / f"rogue-{name}", port, ca) as rogue:
            try:
                _wait_listening(port)
                # Same generated host block, endpoint swapped for the rogue sshd.
                r = user.run(
                    [
                        "ssh",
                        "-F",
                        user.ssh_config,
                        "-o",
                        "BatchMode=yes",
                        "-o",
                        "ProxyUseFdpass=no",  # nc relays; it passes no socket
                        "-o",
                        f"ProxyCommand=nc 127.0.0.1 {port}",
                        "slurm-cpu",
                        "true",
                    ]
                )
            finally:
                rogue.terminate()
                rogue.wait(timeout=10)
        assert r.returncode == 255, r.stderr
        assert b"Host key verification failed" in r.stderr, r.stderr


def test_another_user_cannot_use_the_socket_and_the_owner_still_can(
    user: User, cluster: Cluster
) -> None:
    assert user.islurmctl("status").returncode == 0
    other = User(cluster.user2, user.prefix)
    sock = f"/tmp/islurm-{user.uid}/islurmd.sock"
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700
    assert os.stat(sock).st_mode & 0o777 == 0o600
    # Layer 1: the directory keeps other users out.
    denied = other.run(["islurmctl", "--socket", sock, "status"])
    assert denied.returncode != 0
    # Layer 2: even with the filesystem opened up, the daemon checks the peer's uid.
    os.chmod(os.path.dirname(sock), 0o711)
    os.chmod(sock, 0o666)
    try:
        probe = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "try:\n"
            '    s.sendall(b\'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}\\n\')\n'
            "    print('answer', s.recv(4096))\n"
            "except (ConnectionResetError, BrokenPipeError):\n"  # refused before we wrote
            "    print('closed')\n"
        )
        refused = other.run(["python3", "-c", probe, sock])
    finally:
        os.chmod(sock, 0o600)
        os.chmod(os.path.dirname(sock), 0o700)
    # Closed without an answer (a reset, or EOF).
    assert refused.stdout.strip() in (b"closed", b"answer b''"), refused
    log = Path(f"{user.home}/.local/state/islurm/log/islurmd.log").read_text()
    assert '"rpc.refused"' in log and f'"peer_uid": {other.uid}' in log
    assert user.islurmctl("status").returncode == 0


# Runs as the socket's owner: for each length-prefixed line from stdin it sends the line and a
# sentinel request, then returns every reply that came before the sentinel's.
RELAY = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rb")
inp, out = sys.stdin.buffer, sys.stdout.buffer
n = 0
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    line = inp.read(int.from_bytes(head, "big"))
    n += 1
    sentinel = json.dumps({"jsonrpc": "2.0", "id": f"sentinel-{n}", "method": "daemon.status"})
    s.sendall(line + sentinel.encode() + b"\n")
    replies = []
    while True:
        reply = f.readline()
        if not reply:
            sys.exit(3)
        if json.loads(reply).get("id") == f"sentinel-{n}":
            break
        replies.append(reply)
    blob = b"".join(replies)
    out.write(len(blob).to_bytes(4, "big") + blob); out.flush()
"""

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
    max_leaves=20,
)
PROFILES = {"cpu", "gpu", "short", "bad", "--all"} | {
    "development-cpu",
    "development-gpu",
    "production-cpu",
    "production-gpu",
    "gpu-intensive",
}
PARAMS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.sampled_from(["profile", "target", "job_id", "timeout", "client_pid", "zz"]),
        st.one_of(
            st.integers(),
            st.text(max_size=12).filter(lambda t: t not in PROFILES),
            st.floats(),
            st.none(),
            st.lists(st.text(max_size=3), max_size=2),
        ),
        max_size=3,
    ),
)
LINES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda m, p, i: json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).encode(),
        st.sampled_from(
            [
                "session.acquire",
                "session.list",
                "session.cancel",
                "session.attach",
                "session.check",
                "daemon.status",
                "nope",
                "",
            ]
        ),
        PARAMS,
        st.one_of(st.integers(), st.text(max_size=5), st.none()),
    ),
    st.integers(70_000, 200_000).map(lambda n: b"x" * n),  # over the line bound
    st.integers(100, 20_000).map(lambda n: b"[" * n),  # nested too deeply
)


def test_fuzzed_requests_get_errors_and_the_daemon_stays_up_and_bounded(user: User) -> None:
    assert user.islurmctl("status").returncode == 0
    pid = user.daemon_pid()
    assert pid is not None
    sock_path = f"/tmp/islurm-{user.uid}/islurmd.sock"
    rss_before = psutil.Process(pid).memory_info().rss
    relay = user.popen(["python3", "-c", RELAY, sock_path], stdin=-1, stdout=-1)
    assert relay.stdin is not None and relay.stdout is not None
    stdin, stdout = relay.stdin, relay.stdout
    seen = {"lines": 0, "answers": 0}

    @settings(
        max_examples=3000,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(line=LINES)
    def send(line: bytes) -> None:
        payload = line.replace(b"\n", b" ") + b"\n"
        stdin.write(len(payload).to_bytes(4, "big") + payload)
        stdin.flush()
        head = stdout.read(4)
        assert len(head) == 4, "the daemon closed the connection"
        for reply in stdout.read(int.from_bytes(head, "big")).splitlines():
            message = json.loads(reply)  # strictly valid JSON, always
            assert message.get("jsonrpc") == "2.0"
            assert ("result" in message) != ("error" in message)
            seen["answers"] += 1
        seen["lines"] += 1

    with relay:
        try:
            send()
        finally:
            stdin.close()
            relay.wait(timeout=30)
    assert seen["lines"] >= 1000 and seen["answers"] >= 900, seen
    assert user.daemon_pid() == pid  # the same process, still up
    rss_after = psutil.Process(pid).memory_info().rss
    assert rss_after < rss_before + 20 * 1024 * 1024, (rss_before, rss_after)
    assert user.jobs(all_states=True) == []  # nothing the fuzz sent submitted a job
    assert user.islurmctl("status").returncode == 0


def test_hostile_names_and_paths_never_execute(user: User, tmp_path: Path) -> None:
    hostile = [
        "a;touch /tmp/islurm-pwned",
        "$(touch /tmp/islurm-pwned)",
        "x y",
        "a\nb",
        "`touch /tmp/islurm-pwned`",
        "'; touch /tmp/islurm-pwned; '",
    ]
    if os.path.exists(MARKER):
        os.unlink(MARKER)
    for name in hostile:
        r = user.run(["islurm-proxy", name], timeout=60)
        assert r.returncode != 0 and r.stdout == b""
        assert b"unknown profile" in r.stderr or b"profile" in r.stderr, r.stderr
        r = user.run(["islurmctl", "cancel", name])
        assert r.returncode != 0
    # The same strings in a config: names are refused with file:line:key; values that reach
    # command lines (container path, sbatch option values) travel verbatim as argv elements.
    bad = Path(user.home) / "bad.toml"
    bad.write_text('[profiles."a;touch /tmp/islurm-pwned"]\nsbatch = ["-p", "x"]\n')
    bad.chmod(0o644)
    r = user.run(["islurmctl", "--config", str(bad), "profiles"])
    assert r.returncode == 7 and b"bad.toml:1:" in r.stderr, r.stderr
    user.stop_daemon()
    user.prepare(
        "[profiles.cpu]\n"
        'sbatch = ["--partition=interactive", "--time=00:10:00",'
        ' "--export=ALL,SLURM_ISLURM_TEST=$(touch /tmp/islurm-pwned);`id`"]\n'
        "[profiles.boxed]\n"
        'sbatch = ["--partition=interactive", "--time=00:10:00"]\n'
        'image = "/images/x y;$(touch /tmp/islurm-pwned).sqsh"\n',
        tmp_path,
    )
    r = user.ssh("slurm-cpu", "printenv SLURM_ISLURM_TEST")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "$(touch /tmp/islurm-pwned);`id`"
    # The image path reaches the job verbatim: it does not exist, and the error names it.
    r = user.ssh("slurm-boxed", "true")
    assert r.returncode != 0
    assert "/images/x y;$(touch /tmp/islurm-pwned).sqsh" in r.stderr.decode(), r.stderr.decode()
    assert not os.path.exists(MARKER)


def test_no_secret_reaches_a_log(user: User) -> None:
    assert user.ssh("slurm-cpu", "true").returncode == 0
    logs = Path(f"{user.home}/.local/state/islurm/log")
    text = "".join(p.read_text(errors="replace") for p in logs.iterdir())
    assert text  # there is something to look at
    assert "PRIVATE KEY" not in text
    ca_key = Path(f"{user.home}/.config/islurm/ca/ca").read_text()
    body = "".join(ca_key.splitlines()[1:-1])
    assert body[:40] not in text.replace("\n", "")
    assert oct(Path(f"{user.home}/.config/islurm/ca/ca").stat().st_mode & 0o777) == "0o600"
    assert oct(Path(f"{user.home}/.config/islurm/ca").stat().st_mode & 0o777) == "0o700"
