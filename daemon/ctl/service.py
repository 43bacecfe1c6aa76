"""`islurmctl service install|uninstall|status`: systemd --user socket activation for islurmd.

Optional: without it islurm-proxy starts islurmd on demand. This module is islurm's one
interface to systemctl (`systemctl --user`, argv lists, bounded by a timeout)."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from islurm.config import paths
from islurm.config.files import write_text_atomic
from islurm.daemon.ctl.common import EXIT, Fail  # the same Fail islurmctl main catches

SOCKET_UNIT = "islurmd.socket"
SERVICE_UNIT = "islurmd.service"
UNITS = (SOCKET_UNIT, SERVICE_UNIT)
SYSTEMCTL_TIMEOUT = 30.0
PROBE_TIMEOUT = 5.0
# How long to wait for an on-demand islurmd to exit before the socket unit takes its place.
HANDOVER_TIMEOUT = 15.0
LINGER_HINT = "loginctl enable-linger"


class SystemdUnavailable(Exception):
    """`systemctl --user` cannot reach a user manager here; the message says why."""


@dataclass(frozen=True)
class SystemctlResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def detail(self) -> str:
        return self.stderr.strip() or self.stdout.strip() or f"exit code {self.returncode}"


def systemctl(*args: str, timeout: float = SYSTEMCTL_TIMEOUT) -> SystemctlResult:
    """Run `systemctl --user ARGS` (found on PATH); raise SystemdUnavailable if it cannot run."""
    exe = shutil.which("systemctl")
    if exe is None:
        raise SystemdUnavailable("systemctl is not installed (not on PATH)")
    argv = [exe, "--user", *args]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except subprocess.TimeoutExpired:
        raise SystemdUnavailable(
            f"`systemctl --user {' '.join(args)}` did not answer in {timeout:g} s"
        ) from None
    except OSError as exc:
        raise SystemdUnavailable(f"cannot run {exe}: {exc}") from None
    return SystemctlResult(argv, proc.returncode, proc.stdout, proc.stderr)


def probe() -> None:
    """Raise SystemdUnavailable unless a user manager answers (no systemd, no D-Bus, ...)."""
    result = systemctl("show-environment", timeout=PROBE_TIMEOUT)
    if result.returncode != 0:
        raise SystemdUnavailable(f"`systemctl --user show-environment`: {result.detail}")


def _must(*args: str) -> SystemctlResult:
    """systemctl after a successful probe: any failure now is an error of the command."""
    try:
        result = systemctl(*args)
    except SystemdUnavailable as exc:
        raise Fail(EXIT["error"], str(exc)) from None
    if result.returncode != 0:
        raise Fail(EXIT["error"], f"`systemctl --user {' '.join(args)}`: {result.detail}")
    return result


# -- rendering --------------------------------------------------------------------------------


def daemon_argv() -> list[str]:
    """The installed islurmd beside this Python (symlinks kept: the venv is found through
    them), else this Python running the daemon module."""
    if not sys.executable:
        raise ValueError("cannot tell which Python runs islurmctl (sys.executable is empty)")
    python = os.path.abspath(sys.executable)
    script = os.path.join(os.path.dirname(python), "islurmd")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [python, "-m", "islurm.daemon.main"]


def _check_text(value: str) -> None:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"control characters cannot be written into a unit file: {value!r}")


def quote_word(word: str) -> str:
    """One argument of an Exec*= line as systemd reads it: %-specifiers and $VARIABLES are
    escaped, words with blanks, quotes or backslashes are double-quoted (C escapes inside)."""
    _check_text(word)
    text = word.replace("%", "%%").replace("$", "$$")
    if text and not any(c in " \"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_program(path: str) -> str:
    """The program of an Exec*= line: systemd expands %-specifiers in it but not $, and
    refuses (fatally) a program path holding a quote, a backslash or a control character."""
    if not os.path.isabs(path):
        raise ValueError(f"systemd needs an absolute program path, got {path!r}")
    if any(c in "\"'\\" or ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError(
            f"systemd refuses to run a program whose path holds a quote, a backslash or a "
            f"control character: {path!r} (move islurm elsewhere, or rely on islurm-proxy "
            "starting islurmd on demand)"
        )
    text = path.replace("%", "%%")
    return f'"{text}"' if any(c.isspace() or c == ";" for c in text) else text


def exec_line(argv: list[str]) -> str:
    if not argv:
        raise ValueError("ExecStart needs a program")
    return " ".join([quote_program(argv[0]), *(quote_word(a) for a in argv[1:])])


def service_path_value(path_env: str) -> str:
    """PATH for the unit, escaped for `Environment="PATH=..."`: absolute entries only (a
    relative one would resolve against the daemon's working directory), first one wins."""
    seen: list[str] = []
    for entry in path_env.split(os.pathsep):
        if os.path.isabs(entry) and entry not in seen and entry.isprintable():
            seen.append(entry)
    value = os.pathsep.join(seen or ["/usr/local/bin", "/usr/bin", "/bin"])
    return value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')


def template(name: str) -> str:
    return (resources.files("islurm.config") / "systemd" / name).read_text(encoding="utf-8")


def render(argv: list[str], path_env: str) -> dict[str, str]:
    """Both unit files' text, placeholders filled in."""
    service = template(SERVICE_UNIT)
    service = service.replace("@ISLURMD@", exec_line(argv))
    service = service.replace("@PATH@", service_path_value(path_env))
    return {SOCKET_UNIT: template(SOCKET_UNIT), SERVICE_UNIT: service}


def unit_dir() -> Path:
    """$XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative value
        base = os.path.join(os.environ.get("HOME") or os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def write_atomically(path: Path, text: str) -> bool:
    """Write `path` via a temporary file and rename; return whether its content changed."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(path), text, 0o644)
    return True


# -- hand-over from an on-demand islurmd --------------------------------------------------------


def unit_socket_path() -> str:
    """Where islurmd.socket listens: %t is the user manager's $XDG_RUNTIME_DIR."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, "islurm", "islurmd.sock")


def _islurm_pid(pid: int) -> bool:
    try:
        return b"islurm" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


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
    fd = os.open(paths.lock_path(sock), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        stopped = _take_over(fd, sock)
        yield stopped
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _take_over(fd: int, sock: str) -> int | None:
    if _try_lock(fd):
        return None
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    pid = int(text) if text.isdigit() else 0
    if pid <= 0 or not _islurm_pid(pid):
        raise Fail(
            EXIT["error"],
            f"{paths.lock_path(sock)} is locked by a process that is not islurmd "
            f"(pid {text or '?'}); stop it, then run `islurmctl service install` again",
        )
    print(f"stopping the on-demand islurmd (pid {pid}); open sessions re-attach on their own")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + HANDOVER_TIMEOUT
    while not _try_lock(fd):
        if time.monotonic() > deadline:
            raise Fail(
                EXIT["error"],
                f"islurmd (pid {pid}) on {sock} did not stop within {HANDOVER_TIMEOUT:g} s",
            )
        time.sleep(0.05)
    return pid


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
        raise Fail(EXIT["error"], str(exc)) from None
    directory = unit_dir()
    changed, replaced = [], []
    for name, text in units.items():
        try:
            existed = (directory / name).exists()
            if write_atomically(directory / name, text):
                changed.append(name)
                replaced += [name] if existed else []
        except OSError as exc:
            raise Fail(EXIT["error"], f"cannot write {directory / name}: {exc}") from None
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
        with daemon_lock(unit_socket_path()):
            _must("enable", "--now", SOCKET_UNIT)
    except OSError as exc:
        raise Fail(EXIT["error"], f"cannot take over from islurmd: {exc}") from None
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
            raise Fail(EXIT["error"], f"cannot remove {f}: {exc}") from None
    if reachable:
        _must("daemon-reload")
    print("islurm-proxy starts islurmd on demand from now on")
    return 0


def parse_show(text: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ... UNIT...` output: KEY=VALUE blocks, one per unit, by Id."""
    units: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


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
        info["socket"] = listen or unit_socket_path()
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
