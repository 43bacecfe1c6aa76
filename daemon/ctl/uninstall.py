"""`islurmctl uninstall [--remote]`: remove exactly what `islurmctl setup` added.

The user's files (~/.ssh/config, editors' settings.json) go back to their backup when nobody
changed them since setup (byte-identical); when someone did, only our lines and keys are taken
out. Then our key (if setup made it), our directory, and with --remote everything of islurm's
on the login node (`islurmctl purge` there: jobs, daemon, units, state, sockets, image cache,
setup's lines in config.toml, the CA if setup created it), the venv and our public key."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from islurm.config import jsonc, sshsetup
from islurm.config.text import terminal_safe
from islurm.daemon.ctl import laptop
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.ctl.localfiles import Change, apply, diff
from islurm.proxyshim import shortcut


def say(message: str) -> None:
    print(terminal_safe(f"uninstall: {message}"), flush=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "remove what `islurmctl setup` added on this laptop (--remote: and the login node)"
    p = sub.add_parser("uninstall", help=help_, description=help_)
    p.add_argument("--remote", action="store_true", help="also remove islurm from the login node")
    p.add_argument("--dry-run", action="store_true", help="print the changes, touch nothing")
    p.add_argument("--remote-python", default="python3", help="Python on the login node")
    p.set_defaults(fn=cmd_uninstall)


def restored(path: Path, state: dict[str, Any]) -> str | None:
    """What a file setup changed must hold after uninstall (None: it did not exist)."""
    current = path.read_bytes().decode() if path.exists() else None
    backup = state.get("backups", {}).get(str(path))
    if current is not None and laptop.sha256(current) == state.get("after", {}).get(str(path)):
        return None if backup is None else Path(backup).read_bytes().decode()
    if current is None:
        return None
    if path.name == "config":
        return sshsetup.remove_include(current)
    for key_path in reversed(state.get("editor_settings", {}).get(str(path), [])):
        try:
            current = jsonc.remove_value(current, key_path)
        except (KeyError, jsonc.JsoncError):
            continue
    return current


def cmd_uninstall(args: argparse.Namespace) -> int:
    state = laptop.load_state()
    if state is None:
        raise Fail(Exit.NOT_FOUND, f"nothing to uninstall: no {laptop.state_path()}")
    changes = [Change(Path(p), restored(Path(p), state)) for p in state.get("backups", {})]
    if args.dry_run:
        print(diff(changes), end="")
        say(f"would remove {laptop.our_dir()}" + (" and our key" if state["key_created"] else ""))
        if args.remote:
            say("would end islurm's jobs on the login node and remove islurm's files there")
        return 0
    if args.remote:
        _remote(args, state)
    for path in apply(changes):
        say(f"restored {path}")
    if state.get("key_created"):
        key = laptop.key_path()
        for p in (key, key.with_name(key.name + ".pub")):
            p.unlink(missing_ok=True)
        say(f"removed the key {key} (setup made it)")
    shutil.rmtree(laptop.our_dir(), ignore_errors=True)
    say(f"removed {laptop.our_dir()}")
    if shortcut.forget_all():
        say(f"removed the remembered endpoints in {shortcut.directory()}")
    return 0


def _remote(args: argparse.Namespace, state: dict[str, Any]) -> None:
    from islurm.daemon.ctl.laptopssh import Login, SshError
    from islurm.daemon.ctl.setup import agent

    key = laptop.key_path()
    flags = []
    if state.get("remote_key_added") and key.with_name(key.name + ".pub").exists():
        flags += ["--remove-key", key.with_name(key.name + ".pub").read_text().strip()]
    if state.get("remote_ca_created"):
        flags.append("--remove-ca")
    if state.get("remote_config_created"):
        flags.append("--config-created")
    login = Login(laptop.target_of(state), key if key.exists() else None)
    say("login node: ending islurm's jobs, stopping islurmd, removing its files ...")
    try:
        done = login.json(agent(args.remote_python, "uninstall", *flags))
    except SshError as exc:
        raise Fail(Exit.ERROR, f"the login node: {exc} (nothing removed on the laptop)") from None
    purged = done.get("purge") or {}
    jobs = purged.get("jobs_cancelled", [])
    say(
        f"login node: venv {'removed' if done['venv'] else 'absent'}, "
        f"units {'removed' if purged.get('units') else 'none'}, "
        f"{len(jobs)} job(s) cancelled, "
        f"our public key {'removed' if done['key_removed'] else 'not there'}"
    )
    for path in purged.get("removed", []):
        say(f"login node: removed {path}")
    for why in purged.get("kept", []):
        say(f"login node: kept {why}")
