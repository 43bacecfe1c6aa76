"""The checks behind `islurmctl doctor`: each looks at one hop and returns a Check; none prints.

doctor.py runs them in order, reports them and maps the first failure to an exit code."""

from __future__ import annotations

import enum
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from islurm.config import paths
from islurm.config.settings import ConfigError, Settings, load_settings
from islurm.daemon.slurm.client import SlurmClient, SlurmError, SlurmUnreachable
from islurm.daemon.slurm.submission import sbatch_options
from islurm.sessionhooks import sshd

MIN_FREE = 100 * 2**20  # job logs and readiness records live in the state dir
SLURM_FIX = (
    "check that slurmctld is running (scontrol ping) and that this login node can reach it; "
    "ask your HPC admins"
)
_KEY = re.compile(r"(?:^|\s)(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+@openssh\.com)\s+AAAA")


class Status(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def label(self) -> str:
        return "FAIL" if self is Status.FAIL else self.value


@dataclass(frozen=True)
class Check:
    check: str
    status: Status
    detail: str
    fix: str = ""
    kind: str = "error"  # the islurmctl Exit a failure maps to, lower-case

    def as_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(check: str, detail: str) -> Check:
    return Check(check, Status.OK, detail)


def warn(check: str, detail: str, fix: str = "") -> Check:
    return Check(check, Status.WARN, detail, fix)


def fail(check: str, detail: str, fix: str, kind: str = "error") -> Check:
    return Check(check, Status.FAIL, one_line(detail), fix, kind)


def one_line(text: str) -> str:
    """Tools answer on several lines; a check's detail is one."""
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip()) or "(no message)"


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _private(path: str, mode: int) -> str:
    """Why `path` is not ours alone (owner, and no permission bits beyond `mode`), or ""."""
    st = os.stat(path)
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not by you"
    if stat.S_IMODE(st.st_mode) & ~mode:
        return f"{path} is mode {stat.S_IMODE(st.st_mode):04o}, must be {mode:04o}"
    return ""


# -- 1. config -------------------------------------------------------------------------------


def check_config(path: str) -> tuple[Check, Settings | None]:
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        where = f"edit {exc.path} line {exc.line}" if exc.line else f"edit {exc.path}"
        return fail("config", str(exc), f"{where} ({exc.key})", "config_invalid"), None
    except OSError as exc:
        why = f"cannot read {path}: {exc}"
        return fail("config", why, f"chmod 600 {path}", "config_invalid"), None
    names = ", ".join(settings.profiles)
    source = path if Path(path).exists() else f"no {path}; built-in defaults"
    return ok("config", f"{source}: {len(settings.profiles)} profiles ({names})"), settings


# -- 2. SSH pieces ---------------------------------------------------------------------------


def check_command(name: str, package: str, why: str) -> Check:
    found = shutil.which(name)
    if found is None:
        return fail(name, f"not on PATH ({why})", f"install {package} or put {name} on PATH")
    return ok(name, found)


def check_sshd(find: Callable[[], str] | None = None) -> Check:
    need = "the compute nodes need sshd too: each job runs its own"
    fix = "install openssh-server on the compute nodes (and here), or set ISLURM_SSHD to it"
    try:
        return ok("sshd", f"{(find or sshd.find_sshd)()} on this node; {need}")
    except sshd.SshdError as exc:
        return fail("sshd", f"{exc}; {need}", fix)


def check_ca(ca_dir: str) -> Check:
    name, key = "ssh CA", os.path.join(ca_dir, "ca")
    if not os.path.exists(key):
        made = f"{ca_dir} not created yet; islurmd creates it on first start"
        return warn(name, made, "`islurmctl known-hosts` creates it now")
    anew = f"delete {ca_dir} (islurmd makes a new CA), then redo your known_hosts line"
    if why := _private(ca_dir, 0o700):
        return fail(name, why, f"chmod 700 {ca_dir}" if "mode" in why else anew)
    if why := _private(key, 0o600):
        return fail(name, why, f"chmod 600 {key}; if others could read it, {anew}")
    if not os.path.exists(key + ".pub"):
        return fail(name, f"{key}.pub is missing", anew)
    return ok(name, f"{ca_dir} (dir 0700, key 0600)")


def check_authorized_keys(home: str) -> Check:
    name, ssh_dir = "authorized_keys", os.path.join(home, ".ssh")
    path = os.path.join(ssh_dir, "authorized_keys")
    add = "add your public key to ~/.ssh/authorized_keys"
    # The job's sshd runs with StrictModes: it ignores keys that others could change.
    for p in (home, ssh_dir, path):
        if os.path.exists(p) and os.stat(p).st_mode & 0o022:
            return fail(
                name, f"{p} is writable by others: sshd ignores your keys", f"chmod go-w {p}"
            )
    try:
        text = Path(path).read_text("utf-8", "replace")
    except FileNotFoundError:
        return fail(name, f"{path} does not exist: the job's sshd accepts no key", add)
    except OSError as exc:
        return fail(name, f"cannot read {path}: {exc}", f"chmod 600 {path}")
    keys = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#") and _KEY.search(ln)]
    if not keys:
        return fail(name, f"{path} holds no public key", add)
    return ok(name, f"{path}: {len(keys)} key{'s' if len(keys) != 1 else ''}")


# -- 3. state dir ----------------------------------------------------------------------------


def check_state_dir(path: str) -> Check:
    name, created = "state dir", ""
    elsewhere = "or set ISLURM_STATE_DIR to a directory the compute nodes share"
    if not os.path.lexists(path):
        try:
            os.makedirs(path, mode=0o700)
            created = "created, "
        except OSError as exc:
            return fail(name, f"cannot create {path}: {exc}", f"create it, {elsewhere}")
    if not os.path.isdir(path):
        return fail(name, f"{path} is not a directory", f"remove it, {elsewhere}")
    why = _private(path, 0o700)
    if "owned" in why:
        return fail(name, why, f"remove it, {elsewhere}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return fail(name, f"cannot write in {path}: {exc}", f"chmod u+rwx {path}, {elsewhere}")
    if why:
        return warn(name, why, f"chmod 700 {path}")
    return ok(name, f"{path} ({created}0700, writable)")


def check_free_space(path: str) -> Check:
    try:
        vfs = os.statvfs(path)
    except OSError as exc:
        return warn("free space", f"cannot tell for {path}: {exc}")
    free = vfs.f_bavail * vfs.f_frsize
    detail = f"{size(free)} free for {path}"
    if free < MIN_FREE:
        return warn("free space", f"{detail} (under {size(MIN_FREE)})", "free some space there")
    return ok("free space", detail)


def parse_quota(text: str) -> list[tuple[str, int, int, int, bool]]:
    """`quota -w` rows: (filesystem, used KB, soft KB, hard KB, over); a '*' marks over."""
    rows = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1].rstrip("*").isdigit() and f[2].isdigit() and f[3].isdigit():
            rows.append((f[0], int(f[1].rstrip("*")), int(f[2]), int(f[3]), f[1].endswith("*")))
    return rows


def check_quota(run: Callable[[list[str]], str | None] | None = None) -> Check:
    """Best effort: no `quota` command, or one that fails, is reported, never a failure."""
    out = (run or _run_quota)(["quota", "-w"])
    if out is None:
        return ok("home quota", "not checked (no usable `quota` command)")
    rows = parse_quota(out)
    if not rows:
        return ok("home quota", "none" if "none" in out.lower() else one_line(out)[:200])
    parts, tight = [], False
    for fs, used, soft, hard, over in rows:
        limit = soft or hard
        parts.append(f"{fs}: {size(used * 1024)} of {size(limit * 1024) if limit else 'no limit'}")
        tight |= over or (limit > 0 and used >= 0.9 * limit)
    if tight:
        return warn("home quota", "; ".join(parts) + " (nearly full)", "free some space")
    return ok("home quota", "; ".join(parts))


def _run_quota(argv: list[str]) -> str | None:
    # `quota` has no interface module of its own: doctor is its only user.
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# -- 4. daemon -------------------------------------------------------------------------------


def check_socket_dir(sock: str) -> Check:
    name, d, kind = "socket dir", os.path.dirname(sock), "daemon_unreachable"
    other = "or set ISLURM_SOCKET / XDG_RUNTIME_DIR to a private place"
    if not os.path.lexists(d):
        return ok(name, f"{d} not created yet (islurmd creates it 0700)")
    if os.path.islink(d) or not os.path.isdir(d):
        return fail(name, f"{d} is not a directory", f"remove it, {other}", kind)
    if why := _private(d, 0o700):
        return fail(name, why, f"chmod 700 {d}" if "mode" in why else f"remove it, {other}", kind)
    if os.path.exists(sock) and (why := _private(sock, 0o600)):
        return fail(name, why, f"chmod 600 {sock}", kind)
    return ok(name, f"{d} (0700, yours)")


def check_daemon(status: Callable[[], Mapping[str, Any]], log: str) -> Check:
    try:
        s = status()
    except Exception as exc:  # the client's errors: unreachable, refused, malformed
        fix = f"see {log}; run `islurmd` in a terminal to see why it does not start"
        return fail("daemon", f"islurmd does not answer: {exc}", fix, "daemon_unreachable")
    return ok(
        "daemon",
        f"islurmd {s.get('version')} answers (pid {s.get('pid')}, {s.get('mode')} mode, "
        f"up {float(s.get('uptime') or 0):.0f} s)",
    )


# -- 5. Slurm, 6. profiles -------------------------------------------------------------------


def unreachable(check: str, exc: SlurmError) -> Check:
    why = f"Slurm controller unreachable: {exc.message}"
    return fail(check, why, SLURM_FIX, "slurm_unreachable")


def check_slurm(slurm: SlurmClient) -> Check:
    t0 = time.monotonic()
    try:
        rows = trio.run(slurm.query)
    except SlurmUnreachable as exc:
        return unreachable("slurm", exc)
    except SlurmError as exc:
        fix = "install the Slurm client tools (squeue, sbatch) or put them on PATH"
        return fail("slurm", f"squeue failed: {exc.message}", fix)
    live = [r for r in rows if not r.state.is_ended]  # squeue --states=all: recent ends too
    took, mine = time.monotonic() - t0, sum(1 for r in live if r.profile)
    return ok(
        "slurm", f"squeue answered in {took:.2f} s (you have {len(live)} jobs, {mine} islurm's)"
    )


def check_profile(slurm: SlurmClient, settings: Settings, name: str, state_dir: str) -> Check:
    check, profile = f"profile {name}", settings.profiles.get(name)
    if profile is None:
        known = ", ".join(settings.profiles)
        return fail(check, f"no such profile (known: {known})", "pick one: islurmctl profiles")
    log = os.path.join(paths.log_dir(state_dir), "job-%j.log")
    options = sbatch_options(profile, log_path=log, workdir=os.path.expanduser("~"))
    try:
        said = trio.run(slurm.test_submit, options)
    except SlurmUnreachable as exc:
        return unreachable(check, exc)
    except SlurmError as exc:
        where = f"[profiles.{name}] sbatch in {settings.path}"
        fix = (
            f"choose a partition from `sinfo -s` and set it in {where}"
            if "partition" in exc.message.lower()
            else f"edit the profile's sbatch options: {where}"
        )
        return fail(check, f"sbatch --test-only refused it: {exc.message}", fix)
    except OSError as exc:  # SlurmCli.test_submit lets a missing sbatch through
        return fail(check, f"cannot run sbatch: {exc}", "install the Slurm client tools")
    verdict = re.sub(r"^(?:sbatch: )?Job \d+ to start", "would start", one_line(said))
    return ok(check, f"{' '.join(profile.sbatch)}: {verdict}")
