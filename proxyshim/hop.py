"""The laptop route's contract: what the laptop's shim (via.py) and the login node's
(endpoint.py) say to each other on the stdio of the one ssh session between them.

    laptop   ssh -D <private socket> LOGIN 'exec islurm-proxy --endpoint PROFILE'
    login    → "islurm-job 1 JOBID\\n"  (the endpoint's job; a laptop of an older islurm
             skips it as noise, and one of a newer islurm works without it)
    login    → "islurm-endpoint 1 HOST PORT\\n"  (after islurmd's session is ready)
    laptop   connects to HOST:PORT through ssh's SOCKS socket: the login node's sshd opens
             the TCP connection itself (as `ssh -J` would), and the job's banner is awaited
    laptop   → "ok\\n", then hands the socket to its ssh (ProxyUseFdpass) and exits
             → "unreachable\\n": no banner came; the login side asks islurmd again (at most
             STALE_RETRIES times) and sends a new job and endpoint line
    login    on "ok": `session.handed` (islurmd holds the job while the login node's sshd
             for this connection runs), then exits; the bytes never pass an islurm process.
    laptop   remembers JOBID HOST PORT (shortcut.py): the next connect opens that endpoint
             with `ssh -W HOST:PORT LOGIN`, as `ssh -J` would, and asks the login node
             nothing; the job's sshd banner must name JOBID (config/jobbanner.py), or the
             full route above is taken. The job holds itself: it counts its sessions.

Stdlib only and import-light: both ends start on every ssh."""

ENDPOINT = b"islurm-endpoint"
JOB = b"islurm-job"
VERSION = b"1"
OK = b"ok\n"
UNREACHABLE = b"unreachable\n"
MAX_LINE = 1024  # longer lines are not ours (a login script's noise is skipped, not parsed)
MAX_NOISE = 64 * 1024  # bytes of other output skipped before the endpoint line, at most
STALE_RETRIES = 3

# Words sent to the login node's shell unquoted: any shell (sh, bash, zsh, csh, fish) reads
# them as themselves. Anything else is refused rather than quoted for one shell's rules.
SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/+:@=,")


def endpoint_line(host: str, port: int) -> bytes:
    """The login side's line: `islurm-endpoint 1 HOST PORT`."""
    return b" ".join((ENDPOINT, VERSION, host.encode(), str(port).encode())) + b"\n"


def job_line(job_id: str) -> bytes:
    """The login side's line before the endpoint: `islurm-job 1 JOBID`."""
    return b" ".join((JOB, VERSION, job_id.encode())) + b"\n"


def parse_job(line: bytes) -> str | None:
    """The job id from a job line; None if the line is not one, or not of this version."""
    words = line.split()
    if len(words) != 3 or words[0] != JOB or words[1] != VERSION or not words[2].isdigit():
        return None
    return words[2].decode("ascii")


def parse_endpoint(line: bytes) -> tuple[str, int] | None:
    """(host, port) from an endpoint line; None if the line is not one (noise)."""
    words = line.split()
    if len(words) != 4 or words[0] != ENDPOINT:
        return None
    if words[1] != VERSION:
        raise ValueError(f"the login node's islurm speaks route version {words[1]!r}, not 1")
    host, port = words[2], words[3]
    if not port.isdigit() or not 0 < int(port) < 65536 or not 0 < len(host) <= 255:
        raise ValueError("the login node sent a malformed endpoint")
    try:
        return host.decode("ascii"), int(port)
    except UnicodeDecodeError:
        raise ValueError("the login node sent a malformed endpoint") from None


def remote_command(remote: str, profile: str, image: str | None, timeout: float | None) -> str:
    """The login node's command: its shell execs the shim, so the shim's parent is the sshd
    of this connection (which islurmd then holds the job by)."""
    words = [remote, "--endpoint"]
    if image is not None:
        words += ["--image", image]
    if timeout is not None:
        words += ["--timeout", repr(timeout)]
    words.append(profile)
    for word in words:
        if not word or not set(word) <= SAFE:
            raise ValueError(f"{word!r} cannot be passed to the login node's shell")
    return "exec " + " ".join(words)
