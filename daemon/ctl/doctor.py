"""`islurmctl doctor`: check every hop of `ssh slurm-<profile>` in order and say how to fix
what is broken: config, SSH pieces, state dir, daemon, Slurm, each profile, a real test job."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from islurm.config import paths
from islurm.config.text import terminal_safe
from islurm.daemon.ctl.exits import Exit

if TYPE_CHECKING:
    from islurm.daemon.ctl.doctor_checks import Check
    from islurm.daemon.slurm.client import SlurmClient

TEST_JOB_TIMEOUT = 120.0
BANNER_TIMEOUT = 10.0


class RpcClient(Protocol):
    """What doctor needs of islurmctl's Client (ctl/client.py); tests pass a scripted one."""

    def call(self, method: str, **params: Any) -> Any: ...
    def read_message(self, timeout: float | None = None) -> dict[str, Any]: ...
    def wait_notification(self, method: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


@dataclass
class Doctor:
    """Everything the checks reach: paths, and the two clients (Slurm, islurmd)."""

    config: str
    socket: str
    slurm: SlurmClient
    connect: Callable[[], RpcClient]
    profiles: list[str] | None = None
    quick: bool = False
    say: Callable[[str], None] = field(
        default=lambda m: print(f"doctor: {terminal_safe(m)}", file=sys.stderr)
    )
    read_banner: Callable[[str, int], str] = field(default=lambda h, p: read_banner(h, p))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_ = "check every hop from ssh to a job's sshd and say how to fix what is broken"
    p = sub.add_parser("doctor", help=help_, description=help_)
    p.add_argument(
        "--profile",
        action="append",
        dest="profiles",
        metavar="P",
        help="check only this profile (repeatable; default: all)",
    )
    p.add_argument("--quick", action="store_true", help="skip the real test job")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    import structlog

    from islurm.daemon.ctl.client import Client
    from islurm.daemon.slurm.client import SlurmCli

    if not structlog.is_configured():  # the Slurm client logs; stdout is the report's
        import logging

        structlog.configure(
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        )
    sock = args.socket or paths.socket_path()
    doctor = Doctor(
        config=args.config or paths.config_file(),
        socket=sock,
        slurm=SlurmCli(),
        connect=lambda: Client(sock),
        profiles=args.profiles,
        quick=args.quick,
    )
    return report(doctor, as_json=args.json)


def report(doctor: Doctor, *, as_json: bool = False) -> int:
    """Run the checks, print them (as they finish, or as JSON at the end); the exit code."""
    checks = run(doctor, emit=(lambda c: None) if as_json else print_check)
    if as_json:
        print(json.dumps([c.as_json() for c in checks], indent=2))
    return exit_code(checks)


def format_check(c: Check) -> str:
    detail = f"{c.detail} ({c.fix})" if c.fix and c.status.value == "warn" else c.detail
    line = f"{c.status.label:<4}  {c.check}: {detail}"
    return line + (f"\n      fix: {c.fix}" if c.status.value == "fail" else "")


def print_check(c: Check) -> None:
    print(terminal_safe(format_check(c)), flush=True)


def exit_code(checks: list[Check]) -> Exit:
    """OK unless something failed; else the exit code of the first failure's kind."""
    for c in checks:
        if c.status.value == "fail":
            return Exit.__members__.get(c.kind.upper(), Exit.ERROR)
    return Exit.OK


def run(doctor: Doctor, emit: Callable[[Check], None]) -> list[Check]:
    from islurm.daemon.ctl import doctor_checks as dc

    out: list[Check] = []

    def add(c: Check) -> Check:
        out.append(c)
        emit(c)
        return c

    config, settings = dc.check_config(doctor.config)
    add(config)
    add(dc.check_command("ssh", "openssh-client", "your sessions' ssh"))
    add(dc.check_command("ssh-keygen", "openssh-client", "signs each job's host key"))
    add(dc.check_sshd())
    add(dc.check_ca(os.path.join(paths.config_dir(), "ca")))
    add(dc.check_authorized_keys(os.path.expanduser("~")))
    state = paths.state_dir()
    add(dc.check_state_dir(state))
    add(dc.check_free_space(state if os.path.isdir(state) else os.path.expanduser("~")))
    add(dc.check_quota())
    # Ask the daemon first (that starts it), then judge the directory it made; report in order.
    daemon = dc.check_daemon(
        lambda: _status(doctor), os.path.join(paths.log_dir(state), "islurmd.log")
    )
    add(dc.check_socket_dir(doctor.socket))
    add(daemon)
    slurm = add(dc.check_slurm(doctor.slurm))
    if settings is None or slurm.status is dc.Status.FAIL:
        why = "the config does not load" if settings is None else "Slurm does not answer"
        add(dc.warn("profiles", f"not checked: {why}"))
        return out
    passed = []
    for name in doctor.profiles or list(settings.profiles):
        c = add(dc.check_profile(doctor.slurm, settings, name, state))
        if c.status is dc.Status.OK:
            passed.append(name)
        if name in settings.profiles and settings.profiles[name].container:
            from islurm.daemon.ctl.doctor_containers import check_image_profile

            profile = settings.profiles[name]
            for check in check_image_profile(settings, profile, doctor.quick, doctor.say):
                add(check)
    if doctor.quick:
        return out
    if daemon.status is dc.Status.FAIL or not passed:
        why = "islurmd does not answer" if passed else "no profile passed sbatch --test-only"
        add(dc.warn("test job", f"not run: {why}"))
        return out
    add(test_job(doctor, passed[0]))
    return out


def _status(doctor: Doctor) -> dict[str, Any]:
    client = doctor.connect()
    try:
        status: dict[str, Any] = client.call("daemon.status")
        return status
    finally:
        client.close()


def read_banner(host: str, port: int, timeout: float = BANNER_TIMEOUT) -> str:
    """The first line the server sends; an sshd says `SSH-2.0-...` before anything else."""
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        while b"\n" not in data and len(data) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


def _known_ids(doctor: Doctor, client: RpcClient) -> set[str]:
    """Jobs that exist before the test: islurmd's view, and Slurm's (the daemon may have
    started a moment ago and not polled yet; a user's job must never pass for the test's)."""
    import trio

    jobs = client.call("session.list").get("jobs", [])
    return {str(j.get("job_id")) for j in jobs} | {r.job_id for r in trio.run(doctor.slurm.query)}


@dataclass
class _Probe:
    before: set[str] = field(default_factory=set)
    job_id: str | None = None

    def fix(self) -> str:
        if self.job_id is None:
            return "see `islurmctl status` and the daemon log"
        log = os.path.join(paths.log_dir(), f"job-{self.job_id}.log")
        return f"see the job's log {log} and `squeue -j {self.job_id}`"


class _Failed(Exception):
    def __init__(self, message: str, fix: str, kind: str = "error") -> None:
        super().__init__(message)
        self.message, self.fix, self.kind = message, fix, kind


def test_job(doctor: Doctor, profile: str, timeout: float = TEST_JOB_TIMEOUT) -> Check:
    """A real session through islurmd: acquire, read the sshd banner, release; then cancel the
    job only if this run submitted it (neither islurmd nor Slurm knew it before)."""
    from islurm.daemon.ctl import doctor_checks as dc
    from islurm.daemon.ctl.client import RpcError
    from islurm.daemon.slurm.client import SlurmError

    name, t0, probe = f"test job ({profile})", time.monotonic(), _Probe()
    status = "see `islurmctl status` and the daemon log"
    try:
        control = doctor.connect()
    except Exception as exc:  # DaemonUnreachable
        return dc.fail(name, f"islurmd does not answer: {exc}", status, "daemon_unreachable")
    try:
        probe.before = _known_ids(doctor, control)
        detail = _session(doctor, profile, probe, timeout)
        result = dc.ok(name, detail.format(took=time.monotonic() - t0))
    except _Failed as f:
        result = dc.fail(name, f.message, f.fix, f.kind)
    except SlurmError as exc:
        result = dc.fail(name, f"squeue failed: {exc.message}", dc.SLURM_FIX)
    except TimeoutError:
        result = dc.fail(name, f"not ready after {timeout:.0f} s", probe.fix())
    except RpcError as exc:
        result = dc.fail(name, f"islurmd refused: {exc.message}", status)
    except Exception as exc:  # DaemonUnreachable, a broken connection
        result = dc.fail(name, f"islurmd: {exc}", status, "daemon_unreachable")
    except BaseException:  # ^C: still take back what we submitted
        with contextlib.suppress(Exception):
            _cancel_if_ours(control, probe)
        control.close()
        raise
    try:
        note = _cancel_if_ours(control, probe)
    except Exception as exc:
        jid = probe.job_id
        return dc.fail(name, f"could not cancel job {jid}: {exc}", f"scancel {jid}")
    finally:
        control.close()
    if note and result.status is dc.Status.OK:
        return dc.ok(name, f"{result.detail}; {note}")
    return result


def _session(doctor: Doctor, profile: str, probe: _Probe, timeout: float) -> str:
    """Acquire, wait, read the banner, release. The detail with `{took}` left to fill in."""
    lease = doctor.connect()
    try:
        lease.call("session.acquire", profile=profile, timeout=timeout)
        # The daemon gives up after `timeout` itself; past that plus a grace it is stuck.
        ready = _wait_ready(lease, doctor.say, probe, time.monotonic() + timeout + 10)
        where = f"job {probe.job_id} on {ready.get('node')} ({ready['host']}:{ready['port']})"
        try:
            banner = doctor.read_banner(str(ready["host"]), int(ready["port"]))
        except OSError as exc:
            raise _Failed(f"{where}: no sshd banner: {exc}", probe.fix()) from None
    finally:
        lease.close()  # releases the lease
    if not banner.startswith("SSH-2.0-"):
        raise _Failed(f"{where} answered {banner!r}, not an SSH banner", probe.fix())
    whose = "; your running job, left running" if probe.job_id in probe.before else ""
    return f"{where}: sshd answered {banner} in {{took:.1f}} s{whose}"


def _wait_ready(
    lease: RpcClient, say: Callable[[str], None], probe: _Probe, deadline: float
) -> dict[str, Any]:
    """Progress to stderr until session.ready (its params) or session.failed (raises)."""
    from islurm.daemon.ctl.doctor_checks import SLURM_FIX
    from islurm.daemon.errors import Code

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        msg = lease.read_message(timeout=left)
        raw = msg.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if params.get("job_id"):
            probe.job_id = str(params["job_id"])
        method = msg.get("method")
        if method == "session.progress":
            say(str(params.get("message", "")))
        elif method == "session.ready":
            return params
        elif method in ("session.failed", "session.ended"):
            message = str(params.get("message", "the session failed"))
            if params.get("code") == Code.SLURM_UNREACHABLE:
                raise _Failed(message, SLURM_FIX, "slurm_unreachable")
            raise _Failed(message, probe.fix())


def _cancel_if_ours(control: RpcClient, probe: _Probe) -> str:
    """Cancel the test's job if this run submitted it and it still runs; say what was done."""
    jid = probe.job_id
    if jid is None or jid in probe.before:
        return ""
    jobs = control.call("session.list").get("jobs", [])
    if jid not in {str(j.get("job_id")) for j in jobs}:
        return f"job {jid} already ended"
    control.call("session.cancel", target=jid)
    done = control.wait_notification("session.cancel.done")
    if done.get("error"):
        raise RuntimeError(done["error"].get("message"))
    return f"cancelled job {jid} (doctor submitted it)"
