"""Where islurm keeps its files (docs/PROTOCOL.md §1).

Stdlib only and import-light: the proxy shim imports this module on every connect.
"""

import os

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107


class UnsafeDirError(OSError):
    """A directory that should be private to the user is not."""


def _home() -> str:
    return os.environ.get("HOME") or os.path.expanduser("~")


def xdg_dir(var: str, *default: str) -> str:
    """$`var` if it is an absolute path (the XDG spec says to ignore a relative one), else
    the `default` path under the home directory."""
    value = os.environ.get(var, "")
    return value if os.path.isabs(value) else os.path.join(_home(), *default)


def config_home() -> str:
    """$XDG_CONFIG_HOME, default ~/.config."""
    return xdg_dir("XDG_CONFIG_HOME", ".config")


def runtime_dir() -> str | None:
    """$XDG_RUNTIME_DIR if set to an absolute path (it has no default)."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    return value if os.path.isabs(value) else None


def state_dir() -> str:
    """The state dir: readiness records, logs. Shared between login and compute nodes."""
    explicit = os.environ.get("ISLURM_STATE_DIR")
    if explicit:
        return explicit
    return os.path.join(xdg_dir("XDG_STATE_HOME", ".local", "state"), "islurm")


def cache_dir() -> str:
    """What may be lost and is made again (the laptop's remembered routes; images on the login
    node): $ISLURM_CACHE_DIR, else $XDG_CACHE_HOME/islurm, else ~/.cache/islurm."""
    explicit = os.environ.get("ISLURM_CACHE_DIR")
    if explicit:
        return explicit
    return os.path.join(xdg_dir("XDG_CACHE_HOME", ".cache"), "islurm")


def config_file() -> str:
    """The user's config.toml (it need not exist)."""
    explicit = os.environ.get("ISLURM_CONFIG")
    if explicit:
        return explicit
    return os.path.join(config_home(), "islurm", "config.toml")


def config_dir() -> str:
    return os.path.dirname(config_file())


def records_dir(state: str | None = None) -> str:
    return os.path.join(state or state_dir(), "jobs")


def log_dir(state: str | None = None) -> str:
    return os.path.join(state or state_dir(), "log")


def direct_ledger(state: str | None = None) -> str:
    """islurmd's list of sessions handed to ssh (daemon/direct.py), for the next islurmd."""
    return os.path.join(state or state_dir(), "direct.json")


def ensure_state_dirs(state: str | None = None) -> str:
    """The state dir and its jobs and log dirs, each created 0700 and verified the user's own
    (UnsafeDirError otherwise). Returns the state dir."""
    state = state or state_dir()
    for d in (state, records_dir(state), log_dir(state)):
        ensure_private_dir(d)
    return state


def socket_path() -> str:
    """The daemon's Unix socket: node-local, never on the shared state dir."""
    explicit = os.environ.get("ISLURM_SOCKET")
    if explicit:
        return explicit
    runtime = runtime_dir()
    if runtime and os.path.isdir(runtime):
        candidate = os.path.join(runtime, "islurm", "islurmd.sock")
        if len(os.fsencode(candidate)) <= SUN_PATH_MAX:
            return candidate
    return os.path.join(_tmp_socket_dir(), "islurmd.sock")


def systemd_socket_path() -> str:
    """Where islurmd.socket listens (`%t/islurm/islurmd.sock`): %t is the user manager's
    runtime dir, $XDG_RUNTIME_DIR, which logind makes /run/user/UID."""
    runtime = runtime_dir() or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, "islurm", "islurmd.sock")


TMP = "/tmp"  # noqa: S108 - every directory islurm uses under it is owner-checked


def _tmp_socket_dir() -> str:
    """TMP/islurm-<uid> (the tmux and ssh-agent convention) unless someone else squats it;
    then a random-named private directory recorded in the user's state dir for this node."""
    usual = os.path.join(TMP, f"islurm-{os.getuid()}")
    try:
        st = os.lstat(usual)
    except FileNotFoundError:
        return usual
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        return usual  # ensure_private_dir fixes its mode
    return _fallback_socket_dir()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # contextlib.suppress: one import more for every shim start
        return


def _is_private_dir(path: str) -> bool:
    import stat as _stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return _stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _fallback_socket_dir() -> str:
    """The recorded directory if it is still ours, private and not a symlink; else a new one.
    Two processes racing here agree: the record is published with link(2), first one wins."""
    run = ensure_private_dir(os.path.join(state_dir(), "run"))
    record = os.path.join(run, f"socket-dir.{os.uname().nodename}")
    for _ in range(3):
        try:
            with open(record, encoding="utf-8") as f:
                found = f.read().strip()
        except FileNotFoundError:
            found = ""
        if found and os.path.dirname(found) == TMP and _is_private_dir(found):
            return found
        if found:  # vanished (tmp cleaner, reboot) or tampered with: replace it
            _unlink_quietly(record)
        fresh = os.path.join(TMP, f"islurm-{os.getuid()}-{os.urandom(6).hex()}")
        os.mkdir(fresh, 0o700)
        tmp = f"{record}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(fresh + "\n")
            os.link(tmp, record)
        except FileExistsError:
            os.rmdir(fresh)  # another process recorded its directory first: use that one
            continue
        finally:
            _unlink_quietly(tmp)
        return fresh
    raise UnsafeDirError(f"cannot settle on a private socket directory (see {record})")


def lock_path(sock: str) -> str:
    """The daemon's lock beside its socket: islurmd.sock -> islurmd.lock (pid inside)."""
    return os.path.splitext(sock)[0] + ".lock"


def ensure_private_dir(path: str) -> str:
    """Create `path` 0700 if missing; refuse it if another user owns it or others can enter it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:  # a file, or a dangling symlink, sits there
        raise UnsafeDirError(f"{path} exists and is not a directory") from exc
    st = os.lstat(path)
    import stat as _stat  # local: keeps the shim's cold import list short

    if not _stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(f"{path} is not a directory (a symlink?)")
    if st.st_uid != os.getuid():
        raise UnsafeDirError(f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
