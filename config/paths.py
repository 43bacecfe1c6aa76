"""Where islurm keeps its files (docs/PROTOCOL.md §1).

Stdlib only and import-light: the proxy shim imports this module on every connect.
"""

from __future__ import annotations

import os

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107


class UnsafeDirError(OSError):
    """A directory that should be private to the user is not."""


def _home() -> str:
    return os.environ.get("HOME") or os.path.expanduser("~")


def state_dir() -> str:
    """The state dir: readiness records, logs. Shared between login and compute nodes."""
    explicit = os.environ.get("ISLURM_STATE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(_home(), ".local", "state")
    return os.path.join(base, "islurm")


def config_file() -> str:
    """The user's config.toml (it need not exist)."""
    explicit = os.environ.get("ISLURM_CONFIG")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(_home(), ".config")
    return os.path.join(base, "islurm", "config.toml")


def config_dir() -> str:
    return os.path.dirname(config_file())


def records_dir(state: str | None = None) -> str:
    return os.path.join(state or state_dir(), "jobs")


def log_dir(state: str | None = None) -> str:
    return os.path.join(state or state_dir(), "log")


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
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        candidate = os.path.join(runtime, "islurm", "islurmd.sock")
        if len(os.fsencode(candidate)) <= SUN_PATH_MAX:
            return candidate
    return os.path.join(f"/tmp/islurm-{os.getuid()}", "islurmd.sock")  # noqa: S108 - owner-checked


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
