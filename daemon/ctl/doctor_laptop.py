"""`islurmctl doctor` on a laptop set up by `islurmctl setup`: each hop from here (ssh config
precedence, our known-hosts line against the login node's CA, the login node, the version
installed there), then the login node's own doctor."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from islurm.config import sshsetup
from islurm.daemon.ctl import laptop
from islurm.daemon.ctl.doctor import exit_code, print_check
from islurm.daemon.ctl.doctor_checks import Check, fail, ok
from islurm.daemon.ctl.laptopssh import Login, SshError, resolve


def laptop_checks(state: dict[str, Any], login: Login) -> list[Check]:
    from islurm.daemon.ctl import wheel

    out = []
    known_file = laptop.our_dir() / "known_hosts"
    for p in state["profiles"]:
        host = sshsetup.host_name(p)
        try:
            problems = sshsetup.check_resolved(
                host, sshsetup.parse_ssh_g(resolve(host)), str(known_file)
            )
        except SshError as exc:
            problems = [str(exc)]
        fix = "re-run `islurmctl setup`; our Include must be the first line of ~/.ssh/config"
        out.append(
            fail(f"ssh config {host}", "; ".join(problems), fix)
            if problems
            else ok(f"ssh config {host}", f"strict host-key checking against {known_file}")
        )
    dest = login.target.destination
    try:
        line = login.run([sshsetup.REMOTE_CTL, "known-hosts"], timeout=60).stdout.decode()
    except SshError as exc:
        fix = f"check `ssh {dest}` works; then `islurmctl setup --login {state['login']}`"
        return [*out, fail("login node", f"{dest}: {exc}", fix, "daemon_unreachable")]
    out.append(ok("login node", f"{dest} answers"))
    ours = known_file.read_text() if known_file.exists() else ""
    out.append(
        ok("known hosts", "our @cert-authority line matches the login node's CA")
        if ours.strip() == line.strip()
        else fail(
            "known hosts", f"{known_file} does not hold the login node's CA line", "re-run setup"
        )
    )
    version = wheel.running_version()
    probe = login.run([sshsetup.REMOTE_CTL, "--version"], timeout=60).stdout.decode().strip()
    out.append(
        ok("remote version", f"islurm {probe} on both sides")
        if probe == version
        else fail("remote version", f"login node {probe}, laptop {version}", "re-run setup")
    )
    return out


def run(argv: list[str], as_json: bool) -> int:
    state = laptop.load_state()
    assert state is not None
    key = laptop.key_path()
    login = Login(laptop.target_of(state), key if key.exists() else None)
    checks = laptop_checks(state, login)
    if not as_json:
        for c in checks:
            print_check(c)
    if any(c.status.value == "fail" for c in checks):
        if as_json:
            print(json.dumps([c.as_json() for c in checks], indent=2))
        return exit_code(checks)
    if as_json:
        r = subprocess.run(login.argv([sshsetup.REMOTE_CTL, *argv]), capture_output=True)
        try:
            remote = json.loads(r.stdout)
        except ValueError:
            remote = [{"check": "remote doctor", "status": "fail", "detail": r.stderr.decode()}]
        print(json.dumps([c.as_json() for c in checks] + remote, indent=2))
        return r.returncode
    print("-- on the login node:", flush=True)
    return login.passthrough([sshsetup.REMOTE_CTL, *argv])
