"""`islurmctl service install|uninstall|status`: systemd --user socket activation for islurmd.

Optional: without it islurm-proxy starts islurmd on demand. systemctl is run by systemd.py,
the units are rendered by units.py."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from islurm.config import paths
from islurm.daemon.ctl.common import Fail  # the same Fail islurmctl main catches
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.ctl.systemd import (
    SystemctlResult,
    SystemdUnavailable,
    parse_show,
    probe,
    systemctl,
)
from islurm.daemon.ctl.units import SERVICE_UNIT, SOCKET_UNIT, UNITS, render, unit_dir
from islurm.daemon.ctl.units import write_atomically as write_unit
from islurm.daemon.rpc import lock
from islurm.proxyshim.spawn import daemon_argv

# How long to wait for an on-demand islurmd to exit before the socket unit takes its place.
HANDOVER_TIMEOUT = 15.0
LINGER_HINT = "loginctl enable-linger"


def _must(*args: str) -> SystemctlResult:
    """systemctl after a successful probe: any failure now is an error of the command."""
    try:
        result = systemctl(*args)
    except SystemdUnavailable as exc:
        raise Fail(Exit.ERROR, str(exc)) from None
    if result.returncode != 0:
        raise Fail(Exit.ERROR, f"`systemctl --user {' '.join(args)}`: {result.detail}")
    return result


# -- hand-over from an on-demand islurmd --------------------------------------------------------


@contextlib.contextmanager
def daemon_lock(sock: str) -> Iterator[int | None]:
    """Hold islurmd's lock for `sock`, first stopping an on-demand islurmd that holds it.

    systemd replaces a socket file that is in use when the socket unit starts, so a daemon
    still serving it would live on beside the new one (two daemons reaping each other's
    jobs). While we hold the lock, a daemon a shim starts meanwhile exits at once
    (AlreadyRunning) and the shim keeps retrying until the socket unit answers.
    Yields the pid of the daemon stopped, if any."""
    if not os.path.isdir(os.path.dirname(os.path.dirname(sock))):
        yield None  # no runtime dir: no daemon can be listening there
        return
    paths.ensure_private_dir(os.path.dirname(sock))
    fd = lock.open_lock(sock)
    try:
        try:
            stopped = lock.take_over(fd, sock, HANDOVER_TIMEOUT, announce=_say_stopping)
        except lock.HandoverFailed as exc:
            raise Fail(
                Exit.ERROR, f"{exc}; stop it, then run `islurmctl service install` again"
            ) from None
        yield stopped
    finally:
        os.close(fd)


def _say_stopping(pid: int) -> None:
    print(f"stopping the on-demand islurmd (pid {pid}); open sessions re-attach on their own")


# -- commands ---------------------------------------------------------------------------------


def _lingering() -> bool:
    import pwd

    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return False
    return os.path.exists(f"/var/lib/systemd/linger/{name}")


def cmd_install(args: argparse.Namespace) -> int:
    try:
        units = render(daemon_argv(), os.environ.get("PATH", ""))
    except ValueError as exc:
        raise Fail(Exit.ERROR, str(exc)) from None
    directory = unit_dir()
    changed, replaced = [], []
    for name, text in units.items():
        try:
            existed = (directory / name).exists()
            if write_unit(directory / name, text):
                changed.append(name)
                replaced += [name] if existed else []
        except OSError as exc:
            raise Fail(Exit.ERROR, f"cannot write {directory / name}: {exc}") from None
    for name in units:
        print(f"{'wrote' if name in changed else 'unchanged'} {directory / name}")
    try:
        probe()
    except SystemdUnavailable as exc:
        print(
            f"systemd's user manager is not reachable here ({exc}),\n"
            "so the units are written but not enabled. Nothing is lost: islurm-proxy starts\n"
            "islurmd on demand. Run `islurmctl service install` again in a session that has\n"
            f"a user manager; `{LINGER_HINT}` keeps yours running while you are logged out."
        )
        return 0
    _must("daemon-reload")
    try:
        with daemon_lock(paths.systemd_socket_path()):
            _must("enable", "--now", SOCKET_UNIT)
    except OSError as exc:
        raise Fail(Exit.ERROR, f"cannot take over from islurmd: {exc}") from None
    if SERVICE_UNIT in replaced:
        _must("try-restart", SERVICE_UNIT)  # a running islurmd picks up the new ExecStart
    print(f"enabled {SOCKET_UNIT}: systemd starts islurmd on the first connect")
    if not _lingering():
        print(
            "note: lingering is off, so systemd stops islurmd when your last session on this\n"
            "node ends (idle jobs are then not reaped until you come back);\n"
            f"`{LINGER_HINT}` keeps it running."
        )
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    directory = unit_dir()
    files = [directory / name for name in UNITS]
    try:
        probe()
        reachable = True
    except SystemdUnavailable as exc:
        reachable = False
        print(f"systemd's user manager is not reachable here ({exc}); removing the files only")
    if reachable and any(f.exists() for f in files):
        _must("disable", "--now", SOCKET_UNIT, SERVICE_UNIT)
    # `disable` removes this link; do it by hand when systemctl could not.
    wants = directory / "sockets.target.wants" / SOCKET_UNIT
    if wants.is_symlink() and Path(os.readlink(wants)) == directory / SOCKET_UNIT:
        wants.unlink()
    for f in files:
        try:
            f.unlink()
            print(f"removed {f}")
        except FileNotFoundError:
            print(f"not installed: {f}")
        except OSError as exc:
            raise Fail(Exit.ERROR, f"cannot remove {f}: {exc}") from None
    if reachable:
        _must("daemon-reload")
    print("islurm-proxy starts islurmd on demand from now on")
    return 0


def status_info(client_socket: str) -> dict[str, Any]:
    """Which way islurmd gets started here, and where its unit files are."""
    directory = unit_dir()
    info: dict[str, Any] = {
        "mode": "on-demand",
        "description": "on-demand (started by islurm-proxy)",
        "socket": client_socket,
        "units": {
            name: {"path": str(directory / name), "exists": (directory / name).is_file()}
            for name in UNITS
        },
        "systemd": {"available": False, "reason": None},
    }
    try:
        probe()
        result = systemctl(
            "show",
            *("-p", "Id", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState"),
            *("-p", "Listen"),
            *UNITS,
        )
    except SystemdUnavailable as exc:
        info["systemd"]["reason"] = str(exc)
        return info
    if result.returncode != 0:
        info["systemd"]["reason"] = f"`systemctl --user show`: {result.detail}"
        return info
    shown = parse_show(result.stdout)
    info["systemd"] = {"available": True, "reason": None}
    for name in UNITS:
        props = shown.get(name, {})
        info["systemd"][name] = {
            "load": props.get("LoadState", "unknown"),
            "active": props.get("ActiveState", "unknown"),
            "enabled": props.get("UnitFileState") or "unknown",
        }
    if info["systemd"][SOCKET_UNIT]["active"] == "failed":
        # e.g. islurmd kept failing (a bad config) and systemd gave up on the socket.
        info["warning"] = (
            f"{SOCKET_UNIT} has failed; once `systemctl --user status {SERVICE_UNIT}` shows "
            f"why and it is fixed: systemctl --user reset-failed {SOCKET_UNIT} {SERVICE_UNIT} "
            "&& islurmctl service install"
        )
    if info["systemd"][SOCKET_UNIT]["active"] == "active":
        info["mode"], info["description"] = "systemd", "systemd socket activation"
        listen = shown[SOCKET_UNIT].get("Listen", "").rsplit(" (", 1)[0]
        info["socket"] = listen or paths.systemd_socket_path()
        if listen and listen != client_socket:
            info["warning"] = (
                f"clients here look for islurmd at {client_socket}, not at {listen} "
                "(check $XDG_RUNTIME_DIR and $ISLURM_SOCKET)"
            )
    return info


def cmd_status(args: argparse.Namespace) -> int:
    info = status_info(getattr(args, "socket", None) or paths.socket_path())
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{'mode:':10}{info['description']}")
    print(f"{'socket:':10}{info['socket']}")
    sd = info["systemd"]
    if not sd["available"]:
        print(f"{'systemd:':10}not reachable ({sd['reason']})")
    else:
        for name in UNITS:
            u = sd[name]
            print(f"{'systemd:':10}{name} {u['active']}, {u['enabled']}")
    for unit in info["units"].values():
        print(f"{'unit:':10}{unit['path']} ({'present' if unit['exists'] else 'missing'})")
    if "warning" in info:
        print(f"warning: {info['warning']}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "run islurmd under systemd --user socket activation (optional)"
    p = sub.add_parser("service", help=help_, description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    i = actions.add_parser(
        "install",
        help="write islurmd.socket + islurmd.service and enable the socket",
        description="Write the units to $XDG_CONFIG_HOME/systemd/user and, where systemd's "
        "user manager answers, enable islurmd.socket. Elsewhere the files are written and "
        "islurm-proxy keeps starting islurmd on demand.",
    )
    i.set_defaults(fn=cmd_install)
    u = actions.add_parser("uninstall", help="disable and remove the units")
    u.set_defaults(fn=cmd_uninstall)
    s = actions.add_parser("status", help="which way islurmd is started, and the unit files")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_status)
