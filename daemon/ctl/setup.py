"""`islurmctl setup --login HOST`: from a laptop to `ssh slurm-cpu` in one command.

Our key, islurm on the login node at this version, our ssh config pulled in first by one
Include, the editors' Remote-SSH settings, checked with `ssh -G`, then one real connect.
Every laptop file is computed first (`--dry-run` prints the diff) and written only where it
differs, so a re-run changes nothing. What setup made is recorded for `islurmctl uninstall`."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from islurm.config import editors, sshsetup
from islurm.config.jsonc import JsoncError
from islurm.config.text import terminal_safe
from islurm.daemon.ctl import laptop, remote_agent, setup_container
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.ctl.laptopssh import Login, SshError, connect, direct_route, keygen, resolve
from islurm.daemon.ctl.localfiles import Change, apply, diff, write_private
from islurm.proxyshim import shortcut

DEFAULT_PROFILES = ("cpu", "gpu")


def say(message: str) -> None:
    print(terminal_safe(f"setup: {message}"), flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "set up this laptop (and the login node) for `ssh slurm-<profile>`"
    p = sub.add_parser("setup", help=help_, description=help_)
    p.add_argument("--login", help="the login node as your ssh reaches it (a host or alias)")
    p.add_argument("--user", help="your user name on the cluster, if not your ssh default")
    p.add_argument("--profiles", help="comma-separated profiles (default: cpu,gpu if defined)")
    p.add_argument(
        "--container",
        metavar="IMAGE",
        help="the image the profiles' sessions run in (a path, docker://..., or a name from "
        '[containers.images]); "" for none; kept in the login node\'s config.toml',
    )
    p.add_argument("--dry-run", action="store_true", help="print the changes, touch nothing")
    p.add_argument("--wheel", help="install this islurm wheel remotely (default: repack ours)")
    p.add_argument(
        "--wheelhouse",
        help="a directory of dependency wheels for the login node's Python (no index needed)",
    )
    p.add_argument("--remote-python", default="python3", help="Python >= 3.11 on the login node")
    p.add_argument("--no-connect", action="store_true", help="skip the final test connect")
    p.set_defaults(fn=cmd_setup)


def _ask(question: str, default: str | None) -> str | None:
    """Ask on a terminal only; without one the default stands (None: must be given)."""
    if not sys.stdin.isatty():
        return default
    hint = f" [{default}]" if default else ""
    answer = input(f"{question}{hint}: ").strip()
    return answer or default


def agent(python: str, *args: str) -> list[str]:
    """The remote command running remote_agent.py's source with `python -c`."""
    return [python, "-c", Path(remote_agent.__file__).read_text(), *args]


def _stream(paths: list[Path]) -> bytes:
    out = b""
    for p in paths:
        data = p.read_bytes()
        out += f"{p.name}\n{len(data)}\n".encode() + data
    return out + b"\n"


def cmd_setup(args: argparse.Namespace) -> int:
    login_host = args.login or _ask("login node (as your ssh reaches it)", None)
    if not login_host:
        raise Fail(Exit.USAGE, "give --login HOST: the login node as your ssh reaches it")
    user = args.user or _ask("your user name on the cluster (empty: your ssh default)", None)
    target = sshsetup.Target(login_host, user or None)
    state = laptop.load_state() or {}
    if state and laptop.target_of(state) != target:
        raise Fail(
            Exit.USAGE,
            f"this laptop is set up for {laptop.target_of(state).destination}: "
            "run `islurmctl uninstall` first",
        )
    image = setup_container.choose(args.container, state.get("container"), _ask)
    try:
        return _setup(args, target, state, image)
    except SshError as exc:
        raise Fail(Exit.ERROR, str(exc)) from None


def _setup(
    args: argparse.Namespace, target: sshsetup.Target, state: dict[str, Any], image: str | None
) -> int:
    dry = args.dry_run
    key = laptop.key_path()
    key_created = bool(state.get("key_created"))
    if not key.exists():
        if dry:
            say(f"would create the key {key} (ed25519)")
        else:
            key.parent.mkdir(mode=0o700, exist_ok=True)
            keygen(key, f"islurm@{platform.node() or 'laptop'}")
            key_created = True
            say(f"created the key {key}")
    pub = key.with_name(key.name + ".pub").read_text().strip() if key.exists() else None

    # Our public key goes in with the access the user already has (ssh may ask, if it can).
    first = Login(target, interactive=sys.stdin.isatty() and not dry)
    add = ["--add-key", pub] if pub and not dry else []
    info = first.json(agent(args.remote_python, "probe", *add))
    if not info["python_ok"]:
        raise Fail(
            Exit.ERROR,
            f"{args.remote_python} on {target.login} is {info['python']}; islurm needs >= 3.11 "
            "(pass --remote-python)",
        )
    if info["key_added"]:
        say(f"installed {key}.pub in ~/.ssh/authorized_keys on {target.login}")
    login = Login(target, key if key.exists() else None)
    installed = _install(args, login, info, dry)
    remote = _remote_facts(login, target, installed, args, dry)
    remote["user"] = info["user"]
    config_created = _remote_config(args, login, info, remote["profiles"], image, state)
    if not dry:
        _service_and_doctor(login)

    changes, record = _laptop_files(target, remote, state)
    if dry:
        print(diff(changes) or "setup: the laptop's files are right already", end="")
        return 0
    record.update(
        container=image,
        remote_config_created=config_created,
        key_created=key_created,
        remote_key_added=bool(state.get("remote_key_added") or info["key_added"]),
        remote_ca_created=bool(state.get("remote_ca_created") or not info["ca_exists"]),
    )
    _backup_and_apply(changes, record, state)
    if shortcut.forget_all():  # what the login node gives may have changed: ask it again
        say("forgot the remembered endpoints: the next connect asks the login node")
    _verify(remote["profiles"])
    if not args.no_connect:
        host = sshsetup.host_name(remote["profiles"][0])
        say(f"connecting through {host} (a job may wait in the queue) ...")
        node, took = connect(host, remote["timeout"] + 120)
        say(f"{host}: landed on {node} in {took:.1f} s")
    say("done: `ssh slurm-<profile>`, or pick it in VS Code's Remote-SSH")
    return 0


def _install(args: argparse.Namespace, login: Login, info: dict[str, Any], dry: bool) -> bool:
    """islurm on the login node at our version; whether it is there (now or before)."""
    from islurm.daemon.ctl import wheel

    with tempfile.TemporaryDirectory(prefix="islurm-wheel-") as tmp:
        try:
            w = wheel.given(args.wheel) if args.wheel else wheel.pack_installed(Path(tmp))
        except wheel.WheelError as exc:
            raise Fail(Exit.ERROR, str(exc)) from None
        if info["wheel_sha256"] == w.sha256:
            say(f"islurm {w.version} is installed on the login node already")
            return True
        if dry:
            say(f"would install islurm {w.version} on the login node ({sshsetup.REMOTE_VENV})")
            return info["installed"] is not None
        extra = sorted(Path(args.wheelhouse).glob("*.whl")) if args.wheelhouse else []
        flags = ["--offline"] if args.wheelhouse else []
        say(f"installing islurm {w.version} on the login node ({sshsetup.REMOTE_VENV}) ...")
        data = _stream([w.path, *extra])
        done = login.json(agent(args.remote_python, "install", w.sha256, *flags), data)
        say(f"installed islurm {done['installed']} on the login node")
        return True


def _remote_facts(
    login: Login, target: sshsetup.Target, installed: bool, args: argparse.Namespace, dry: bool
) -> dict[str, Any]:
    """The CA line for our known-hosts file, the profiles and their longest connect timeout."""
    import json

    wanted = [p for p in (args.profiles or "").split(",") if p]
    if not installed:  # only in a dry run: nothing to ask yet
        line = f"# the @cert-authority line `islurmctl known-hosts` prints on {target.login}\n"
        return {"known_hosts": line, "profiles": wanted or ["cpu"], "timeout": 1800.0}
    line = login.run([sshsetup.REMOTE_CTL, "known-hosts"]).stdout.decode()
    if not line.startswith("@cert-authority "):
        raise Fail(Exit.ERROR, f"the login node's known-hosts line looks wrong: {line!r}")
    available = json.loads(login.run([sshsetup.REMOTE_CTL, "profiles", "--json"]).stdout)
    if not wanted:
        default = ",".join(p for p in DEFAULT_PROFILES if p in available) or min(available)
        answer = _ask(f"profiles ({', '.join(sorted(available))})", default) if not dry else None
        wanted = [p.strip() for p in (answer or default).split(",") if p.strip()]
    unknown = [p for p in wanted if p not in available]
    if unknown:
        raise Fail(Exit.NOT_FOUND, f"unknown profile(s) on {target.login}: {', '.join(unknown)}")
    timeout = max(float(available[p].get("connect_timeout", 1800)) for p in wanted)
    return {"known_hosts": line, "profiles": wanted, "timeout": timeout}


def _remote_config(
    args: argparse.Namespace,
    login: Login,
    info: dict[str, Any],
    profiles: list[str],
    image: str | None,
    state: dict[str, Any],
) -> bool:
    """The image in the login node's config.toml (a diff in a dry run); whether setup created
    that file (uninstall removes it then, when nothing else is in it)."""
    created = bool(state.get("remote_config_created")) or (info["config"] is None and bool(image))
    new = setup_container.new_config(info, profiles, image, created)
    if new == info["config"]:
        return created and new is not None
    if args.dry_run:
        print(setup_container.show(info, new), end="")
        return created
    flags = ["--remove"] if new is None else []
    sha = setup_container.sha256(info["config"])
    login.json(agent(args.remote_python, "write-config", sha, *flags), (new or "").encode())
    say(f"{'removed' if new is None else 'wrote'} {info['config_path']} on the login node")
    try:
        login.run([sshsetup.REMOTE_CTL, "reload"])
    except SshError as exc:
        say(f"islurmd did not reload its config: {exc.stderr or exc}")
    return created and new is not None


def _service_and_doctor(login: Login) -> None:
    try:
        login.run([sshsetup.REMOTE_CTL, "service", "install"])
        say("systemd --user units installed on the login node (socket activation)")
    except SshError as exc:
        say(f"no systemd --user units (islurmd starts on demand): {exc.stderr or exc}")
    say("islurmctl doctor --quick on the login node:")
    code = login.passthrough([sshsetup.REMOTE_CTL, "doctor", "--quick"])
    if code != 0:
        say(f"the login node's doctor found problems (exit {code}): see above")


def _laptop_files(
    target: sshsetup.Target, remote: dict[str, Any], state: dict[str, Any]
) -> tuple[list[Change], dict[str, Any]]:
    """Every laptop file setup writes, as it must read afterwards; and the state to record."""
    ssh_dir, ours = laptop.ssh_dir(), laptop.our_dir()
    hosts = [sshsetup.host_name(p) for p in remote["profiles"]]
    route = direct_route(target.destination)
    say(
        "route: the login node's sshd connects to the job, as with ssh -J (no relay there)"
        if route
        else "route: the login node's islurm-proxy relays (this ssh has no ProxyUseFdpass)"
    )
    user_config = ssh_dir / "config"
    old = user_config.read_bytes().decode() if user_config.exists() else None
    changes = [
        Change(
            ours / "config",
            sshsetup.render_config(target, remote["profiles"], remote["user"], route),
        ),
        Change(ours / "known_hosts", remote["known_hosts"]),
        Change(user_config, sshsetup.add_include(old)),
    ]
    added: dict[str, list[list[str]]] = dict(state.get("editor_settings", {}))
    settings = editors.remote_ssh_settings(hosts, remote["timeout"])
    for name, folder in editors.editor_dirs(sys.platform, str(Path.home()), os.environ).items():
        path = Path(editors.settings_file(folder))
        if not Path(folder).is_dir():
            continue
        text = path.read_bytes().decode() if path.exists() else ""
        try:
            new = editors.merge(text, settings)
        except JsoncError as exc:
            say(f"{name}: not changing {path}: {exc}")
            continue
        changes.append(Change(path, new))
        added.setdefault(str(path), [list(p) for p, _ in settings])
    record = {
        "login": target.login,
        "user": target.user,
        "profiles": remote["profiles"],
        "editor_settings": added,
    }
    return changes, record


def _backup_and_apply(changes: list[Change], record: dict[str, Any], state: dict[str, Any]) -> None:
    """The user's files are backed up before setup first changes them (kept in our dir for
    uninstall, which puts them back when nobody edited them since)."""
    ours = laptop.our_dir()
    ours.mkdir(parents=True, exist_ok=True)
    os.chmod(ours, 0o700)
    backups: dict[str, str | None] = dict(state.get("backups", {}))
    for i, c in enumerate(changes):
        key = str(c.path)
        if c.path.parent == ours or key in backups or not c.needed:
            continue
        old = c.old()
        if old is None:
            backups[key] = None
        else:
            copy = ours / "backup" / f"{i}-{c.path.name}"
            write_private(copy, old)
            backups[key] = str(copy)
    record["backups"] = backups
    record["after"] = {str(c.path): laptop.sha256(c.new) for c in changes if str(c.path) in backups}
    state_change = Change(laptop.state_path(), laptop.render_state(record))
    for path in apply([*changes, state_change]):
        say(f"wrote {path}")


def _verify(profiles: list[str]) -> None:
    """ssh itself must resolve every host of ours to strict checking against our file."""
    known = str(laptop.our_dir() / "known_hosts")
    problems = []
    for p in profiles:
        host = sshsetup.host_name(p)
        problems += sshsetup.check_resolved(host, sshsetup.parse_ssh_g(resolve(host)), known)
    if problems:
        raise Fail(
            Exit.ERROR,
            "ssh -G disagrees, setup does not finish: "
            + "; ".join(problems)
            + " (`islurmctl uninstall` undoes setup)",
        )
    say(f"ssh -G: strict host-key checking against {known} for {len(profiles)} host(s)")
