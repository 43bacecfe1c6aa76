"""The session hook: runs as the job's batch script on the compute node.

It starts a per-job sshd (fresh host key, this user only, keys only) on the leased port or a
free one, writes the readiness record when sshd listens, and cleans everything up on TERM.
Stdlib only: it runs with whatever Python the login node's install points at.

Its start-up is part of every cold connect: the job runs it through sessionhooks/launch.py
under `python -I -S` (no site import); it parses its own argv without argparse when it can,
and imports only what a job without an image needs to reach "sshd listening": no
`subprocess`, `tempfile`, `shutil`, `dataclasses`, `typing`, nor `json`, `signal`, `socket`,
which load `re` and `enum` (`_json` through config/jsonlite.py, `_signal`, `_socket` do):
`python -X importtime` put them at 40 ms of a 70 ms start. The container layer loads only for
a job with an image."""

from __future__ import annotations

import _socket
import os
import pwd
import sys
import time

from islurm.config import jobbanner, paths, records
from islurm.sessionhooks import args as hookargs
from islurm.sessionhooks import hostkey, jobinfo, sshd, teardown, terminals
from islurm.sessionhooks.container.errors import ContainerError
from islurm.sessionhooks.joblog import SSHD_LOG, LineReader, fixed, say
from islurm.sessionhooks.sessions import SessionCount
from islurm.sessionhooks.walltime import WalltimeWarnings, format_left

TYPE_CHECKING = False  # `typing` costs the job's start 2-5 ms
if TYPE_CHECKING:
    import signal as _signal
    from types import FrameType

    from islurm.sessionhooks.container.job import JobContainer
else:  # the C module: `signal` loads `enum` (no stubs for _signal)
    import _signal

LISTEN_TIMEOUT = 20.0


class HookFailed(Exception):
    """The job cannot serve, for the reason given (recorded for islurmd as it is)."""


def load_modules(names: list[str], jobdir: str) -> dict[str, str]:
    """The profile's environment modules, loaded once (modules.py loads re, shlex and
    subprocess: only for a profile that has modules)."""
    from islurm.sessionhooks import modules

    try:
        return modules.load(names, jobdir)
    except modules.ModuleError as exc:
        raise HookFailed(str(exc)) from None


BIND_ATTEMPTS = 5
GPU_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "HIP_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
)
END_TIME_RECHECK = 900.0  # an admin may extend a job's limit: look again this often


#: the signals that end the hook, by the names signal.Signals gives them (no `enum` at start)
SIGNAL_NAMES: dict[int, str] = {
    _signal.SIGTERM: "SIGTERM",
    _signal.SIGINT: "SIGINT",
    _signal.SIGHUP: "SIGHUP",
    _signal.SIGUSR1: "SIGUSR1",
}


class Stop(Exception):
    """A signal asked the hook to end."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(SIGNAL_NAMES.get(signum, f"signal {signum}"))


def pick_port(preferred: int) -> int:
    """The leased port if it is free here (verified by binding), else a free one."""
    for candidate in (preferred, 0):
        if candidate < 0:
            continue
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        try:
            s.bind(("0.0.0.0", candidate))  # noqa: S104 - sshd listens on all addresses
            return int(s.getsockname()[1])
        except OSError:
            say(f"port {candidate} is taken on this node; asking the kernel for a free one")
        finally:
            s.close()
    raise OSError("no free port")


def wake_on_signals() -> int:
    """A pipe the C part of Python's signal handling writes a byte to (set_wakeup_fd): a
    select() that includes it returns for a signal that lands just before it blocks, which
    would otherwise wait, unhandled, for sshd's next line or the deadline (a TERM was seen
    ignored for minutes that way: 1-7 in 150 hook runs TERMed right after "ready")."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(write_end)
    return read_end


def start_listening(
    cfg_base: sshd.SshdConfig, cfg_path: str, preferred: int, binary: str
) -> tuple[sshd.Sshd, int]:
    """Start sshd; retry on another port if the chosen one was taken meanwhile."""
    last = ""
    for attempt in range(BIND_ATTEMPTS):
        port = pick_port(preferred if attempt == 0 else 0)
        cfg = cfg_base.with_port(port)
        fd = os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(cfg.render())
        proc = sshd.start(binary, cfg_path)
        for line in LineReader(proc).lines(fixed(time.monotonic() + LISTEN_TIMEOUT)):
            SSHD_LOG.line(line)
            last = line
            if "Server listening on" in line:
                return proc, port
        proc.stop()
        say(f"sshd did not listen on port {port} (attempt {attempt + 1}): {last}")
    raise sshd.SshdError(f"sshd did not start: {last or 'it wrote nothing'}")


def login_node_addresses() -> tuple[str, ...]:
    """Where every session comes from (the shim on the login node, and islurmd's banner
    check): exempt from sshd's per-source penalties, which would otherwise lock users out."""
    host = os.environ.get("SLURM_SUBMIT_HOST", "")
    if not host:
        return ()
    try:
        infos = _socket.getaddrinfo(host, None, type=_socket.SOCK_STREAM)
    except OSError:
        return ()
    return tuple(sorted({str(info[4][0]) for info in infos}))


def job_environment() -> dict[str, str]:
    """What every ssh session in the job gets: the job's SLURM_* set and GPU variables, less
    credentials (SLURM_JWT, Slurm's auth/jwt token, and anything named like a secret): they
    would land in the sshd_config and every session's environment."""
    secret = ("JWT", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CRED")
    return {
        k: v
        for k, v in os.environ.items()
        if (k.startswith("SLURM_") and not any(s in k for s in secret)) or k in GPU_VARS
    }


def serve(
    proc: sshd.Sshd,
    job_id: str,
    profile: str,
    leads: list[float],
    end_time: float | None,
    sessions: SessionCount | None = None,
) -> None:
    """Log sshd's output until it exits; keep the session count; warn the job's terminals
    before its time limit."""
    reader = LineReader(proc, watch_exit=True)
    try:
        _serve(reader, proc, job_id, profile, leads, end_time, sessions)
    finally:
        reader.close()


def _serve(
    reader: LineReader,
    proc: sshd.Sshd,
    job_id: str,
    profile: str,
    leads: list[float],
    end_time: float | None,
    sessions: SessionCount | None,
) -> None:
    warnings = WalltimeWarnings(leads, end_time)
    recheck = time.time() + END_TIME_RECHECK

    def wake() -> float:
        """The monotonic time of the next task. Asked before each wait for sshd's output: a
        logout line asks for a recount half a second later (sessions.py), which must not
        wait for the next line or the end-time check (a count left at 1 held its job)."""
        due = warnings.next_due()
        recount = sessions.due if sessions is not None else None
        at = min(t for t in (due, recheck, recount) if t is not None)
        return time.monotonic() + max(0.0, at - time.time())

    while True:
        for line in reader.lines(wake):
            SSHD_LOG.line(line)
            if sessions is not None:
                sessions.saw(line)
        if reader.eof:
            return
        now = time.time()
        if sessions is not None and sessions.due is not None and now >= sessions.due:
            sessions.recount()
        if now >= recheck:  # an admin may have changed the time limit
            warnings.end_time = jobinfo.end_time(job_id) or warnings.end_time
            recheck = now + END_TIME_RECHECK
        left = warnings.fire(now)
        if left is not None:
            message = (
                f"*** islurm: job {job_id} ({profile}) reaches its time limit in "
                f"{format_left(left)}. Save your work. ***"
            )
            count = terminals.write_all(terminals.session_terminals(proc.pid), message)
            say(f"walltime warning sent to {count} terminal(s): {message}")


def tell_ending(sshd_pid: int, job_id: str, profile: str, end: float | None) -> None:
    """The job is told to end (TERM): say why on its sessions' terminals, which have no relay
    on the login node to say it when they run without one."""
    why = (
        "reached its time limit"
        if end is not None and time.time() >= end - 10
        else "was cancelled (or preempted)"
    )
    message = f"*** islurm: job {job_id} ({profile}) {why}; this session is ending. ***"
    count = terminals.write_all(terminals.session_terminals(sshd_pid), message)
    say(f"end notice sent to {count} terminal(s): {message}")


def main(argv: list[str] | None = None) -> int:
    args = hookargs.parse(argv)
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        say("SLURM_JOB_ID is not set: the session hook runs inside a Slurm job")
        return 2
    node = os.environ.get("SLURMD_NODENAME") or _socket.gethostname()
    user = pwd.getpwuid(os.getuid()).pw_name
    for signum in SIGNAL_NAMES:
        _signal.signal(signum, _on_signal)
    LineReader.signal_fd = wake_on_signals()
    started = time.time()  # within a second of the job's start: the hook is its batch script
    try:
        jobs = paths.records_dir(paths.ensure_state_dirs(args.state_dir))
    except OSError as exc:
        say(f"error: {exc}")  # nowhere safe to write a record: the job's log is all there is
        return 1
    try:
        jobdir = job_dir(job_id)
    except OSError as exc:
        _fail(jobs, job_id, f"no private directory for the job's sshd files: {exc}")
        return 1
    proc: sshd.Sshd | None = None
    container: JobContainer | None = None
    code = 0
    end: float | None = None
    try:
        # First: a module that does not load fails the job before anything else starts.
        env = job_environment()
        if args.module:
            env.update(load_modules(args.module, jobdir))
        key = os.path.join(jobdir, "ssh_host_ed25519_key")
        # The daemon passes the profile's time limit; Slurm is asked only when it could not.
        end = started + args.time_limit if args.time_limit else jobinfo.end_time(job_id)
        comment = f"islurm-job-{job_id}@{node}"
        host_pub, cert = hostkey.host_key(jobs, job_id, key, comment, end, args.premade_key, say)
        binary = sshd.find_sshd()
        penalties = sshd.per_source_penalties_supported(binary, args.state_dir)
        if args.image:  # started before sshd: no session can arrive before its container
            from islurm.sessionhooks.container.job import job_container

            container = job_container(
                job_id, args.image, args.runtime, args.bind, jobdir, env, node, say
            )
        force = container.start() if container else None
        base = sshd.SshdConfig(
            port=0,
            host_key=key,
            user=user,
            host_cert=cert,
            env=env,
            per_source_penalties=penalties,
            penalty_exempt=login_node_addresses() if penalties else (),
            force_command=force,
            banner_tag=jobbanner.tag(job_id),
        )
        proc, port = start_listening(
            base, os.path.join(jobdir, "sshd_config"), args.port_lease, binary
        )
        rec = records.Record(job_id=job_id, node=node, port=port, pid=proc.pid, host_key=host_pub)
        records.write_json(
            records.path(jobs, job_id, records.RECORD), rec.to_json(user, args.profile, time.time())
        )
        say(f"ready: sshd pid {proc.pid} on {node}:{port}")
        sessions = SessionCount(jobs, job_id, proc.pid, user)
        serve(proc, job_id, args.profile, args.warn_before, end, sessions)
        proc.wait()
        say(f"sshd exited with code {proc.returncode}")
        _fail(jobs, job_id, f"the job's sshd exited with code {proc.returncode}")
        code = 1
    except Stop as stop:
        say(f"stopping on {stop}")
        if proc is not None:
            tell_ending(proc.pid, job_id, args.profile, end)
    except (sshd.SshdError, ContainerError, HookFailed) as exc:
        _fail(jobs, job_id, str(exc))
        code = 1
    except (OSError, ValueError) as exc:
        _fail(jobs, job_id, f"the session hook failed: {exc}")
        code = 1
    finally:
        while True:  # another signal's Stop may land before the handlers are off: again
            try:
                teardown.ignore(SIGNAL_NAMES)
                break
            except Stop:
                continue
        teardown.run(jobs, job_id, proc, container, jobdir)
        SSHD_LOG.close()
    return code


def job_dir(job_id: str) -> str:
    """A new directory for the job's sshd files, 0700, node-local: in $TMPDIR (Slurm may point
    it at the job's own) or /tmp; what tempfile.mkdtemp does, without its imports."""
    last: OSError = FileNotFoundError("no temporary directory")
    for base in dict.fromkeys((os.environ.get("TMPDIR", ""), "/tmp")):  # noqa: S108
        if not os.path.isabs(base):
            continue
        for _ in range(100):
            path = os.path.join(base, f"islurm-job{job_id}-{os.urandom(5).hex()}")
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                last = exc
                break
    raise last


def _fail(jobs: str, job_id: str, message: str) -> None:
    say(f"error: {message}")
    records.write_json(records.path(jobs, job_id, records.ERROR), {"message": message})


if __name__ == "__main__":
    sys.exit(main())
