"""`islurmctl purge`: remove islurm from this (login) node, its own files only. Run by the
laptop's `islurmctl uninstall --remote` before it removes the venv; by hand it works the same.

In order: the user's islurm jobs are cancelled and waited for (they write into the state dir
until they end), the systemd --user units go, islurmd is stopped (we hold its lock, so no new
one starts meanwhile), then the state dir (records, logs, job logs), the socket dirs, the
image cache (when it is the default one), the CA (with --remove-ca: setup created it) and
setup's block in config.toml. The config file itself goes only when setup created it and
nothing of the user's is in it; the config dir only when empty. Whatever stays is said."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from islurm.config import paths, setupconfig
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.slurm.states import JobState

if TYPE_CHECKING:
    from islurm.daemon.slurm.client import SlurmClient

JOBS_TIMEOUT = 90.0  # s for cancelled jobs to end (Slurm's KillWait plus the hooks' cleanup)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "remove islurm's jobs, units, daemon and files from this node (uninstall --remote)"
    p = sub.add_parser("purge", help=help_, description=help_)
    p.add_argument("--remove-ca", action="store_true", help="remove the SSH CA too")
    p.add_argument(
        "--config-created",
        action="store_true",
        help="config.toml was created by setup: remove it if nothing else is in it",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_purge)


async def end_jobs(slurm: SlurmClient) -> list[str]:
    """Cancel the user's islurm jobs and wait until Slurm reports them ended; their ids."""
    import trio

    live = [r for r in await slurm.query() if r.identity and not _gone(r.state)]
    ids = [r.job_id for r in live]
    await slurm.cancel(ids)
    with trio.move_on_after(JOBS_TIMEOUT) as wait:
        while ids:
            rows = {r.job_id: r for r in await slurm.query()}
            if all(i not in rows or _gone(rows[i].state) for i in ids):
                break
            await trio.sleep(0.5)
    if wait.cancelled_caught:
        raise Fail(Exit.ERROR, f"islurm's jobs {', '.join(ids)} did not end in {JOBS_TIMEOUT:g} s")
    return ids


def _gone(state: JobState) -> bool:
    """Ended, its cleanup too: a COMPLETING job's hooks may still write in the state dir."""
    return state.is_ended and state is not JobState.COMPLETING


def _own_dir(path: str) -> bool:
    """A real directory (not a symlink) owned by us: safe to remove as islurm's."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def socket_dirs(state: str) -> list[str]:
    """Every directory islurm may keep a socket in on this node (they need not exist)."""
    found = [
        os.path.join(paths.TMP, f"islurm-{os.getuid()}"),
        os.path.dirname(paths.systemd_socket_path()),  # <runtime dir>/islurm
    ]
    run = Path(state, "run")
    for record in sorted(run.glob("socket-dir.*")) if run.is_dir() else []:
        recorded = record.read_text().strip()
        if os.path.dirname(recorded) == paths.TMP and os.path.basename(recorded).startswith(
            f"islurm-{os.getuid()}-"
        ):
            found.append(recorded)
    return found


def config_after(text: str | None, created: bool) -> str | None:
    """config.toml without setup's block; None: remove the file (setup made it, and nothing
    of the user's is in it)."""
    if text is None:
        return None
    rest = setupconfig.without_block(text)
    return None if created and not rest.strip() else rest


def remove_files(remove_ca: bool, config_created: bool, cache_dir: str) -> dict[str, list[str]]:
    """The file part of purge (no daemon may run): what was removed and what was kept."""
    removed: list[str] = []
    kept: list[str] = []
    state = paths.state_dir()
    dirs = [*socket_dirs(state), state]
    default_cache = os.path.dirname(_default_cache())
    if cache_dir and os.path.abspath(cache_dir) != _default_cache():
        kept.append(f"{cache_dir}: the image cache you configured (remove it yourself)")
    dirs.append(default_cache)
    if remove_ca:
        dirs.append(os.path.join(paths.config_dir(), "ca"))
    for d in dirs:
        if _own_dir(d):
            shutil.rmtree(d)
            removed.append(d)
    cfg = Path(paths.config_file())
    text = cfg.read_bytes().decode() if cfg.exists() else None
    after = config_after(text, config_created)
    if text is not None and after is None:
        cfg.unlink()
        removed.append(str(cfg))
    elif text is not None:
        if after != text:
            cfg.write_bytes((after or "").encode())
        kept.append(f"{cfg}: your own settings are in it")
    with contextlib.suppress(OSError):  # not empty: files of the user's (kept above)
        os.rmdir(paths.config_dir())
        removed.append(paths.config_dir())
    ca = os.path.join(paths.config_dir(), "ca")
    if os.path.isdir(ca):
        kept.append(f"{ca}: the SSH CA was there before setup")
    return {"removed": removed, "kept": kept}


def _default_cache() -> str:
    from islurm.daemon.imagecache import default_dir

    return default_dir()


def _stop_units() -> bool:
    from islurm.daemon.ctl import service
    from islurm.daemon.ctl.units import UNITS, unit_dir

    if not any((unit_dir() / name).exists() for name in UNITS):
        return False
    with contextlib.redirect_stdout(sys.stderr):
        service.cmd_uninstall(argparse.Namespace())
    return True


def cmd_purge(args: argparse.Namespace) -> int:
    from islurm.config.settings import ConfigError, load_settings
    from islurm.daemon.ctl import service
    from islurm.daemon.slurm.client import SlurmCli, SlurmError

    try:
        cache_dir = load_settings(paths.config_file()).containers.cache_dir
    except ConfigError:
        cache_dir = ""  # a broken config does not stop the removal
    import trio

    try:
        jobs = trio.run(end_jobs, SlurmCli())
    except SlurmError as exc:
        raise Fail(Exit.SLURM_UNREACHABLE, f"cannot end islurm's jobs: {exc.message}") from None
    units = _stop_units()
    stopped: list[int] = []
    with contextlib.redirect_stdout(sys.stderr), contextlib.ExitStack() as stack:
        for sock in {paths.socket_path(), paths.systemd_socket_path()}:
            pid = stack.enter_context(service.daemon_lock(sock))
            stopped += [pid] if pid else []
        # The locks are held: a daemon a shim starts now exits at once.
        done = remove_files(args.remove_ca, args.config_created, cache_dir)
    report: dict[str, Any] = {"jobs_cancelled": jobs, "units": units, "daemons": stopped, **done}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"cancelled {len(jobs)} job(s); units {'removed' if units else 'none'}")
    for path in done["removed"]:
        print(f"removed {path}")
    for why in done["kept"]:
        print(f"kept {why}")
    return 0
