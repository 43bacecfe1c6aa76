"""islurm-proxy --endpoint PROFILE: the login node's end of the laptop route (hop.py).

Run by the login node's sshd as the remote command of the laptop's `ssh -D`, exec'd by the
user's shell, so its parent is that connection's sshd. Asks islurmd for a ready session with
``fdpass`` (islurmd pins that sshd: the job is held while the connection lives), prints the
endpoint, and leaves once the laptop has connected through the login node: no process of ours
stays on the login node and none carries the bytes. Stdlib only, import-light."""

import os

from islurm.proxyshim import hop, report, rpc
from islurm.proxyshim.exits import EXIT_DAEMON, EXIT_NODE, EXIT_OK
from islurm.proxyshim.report import ShimError


def _answer(fd: int = 0) -> bytes:
    """The laptop's one-line answer; b"" when it went away (EOF)."""
    data = b""
    while not data.endswith(b"\n") and len(data) < hop.MAX_LINE:
        chunk = os.read(fd, 1)  # byte by byte: nothing after the line is ours to take
        if not chunk:
            return b""
        data += chunk
    return data


def _say(line: bytes) -> None:
    try:
        while line:
            line = line[os.write(1, line) :]
    except OSError as exc:
        raise ShimError(EXIT_NODE, f"the laptop's ssh went away: {exc}") from None


def run(socket: str, profile: str, timeout: float | None, image: str | None) -> int:
    """Serve one laptop connect; the exit status for main."""
    conn, ready = rpc.acquire(socket, profile, timeout, image=image, fdpass=True)
    for attempt in range(1, hop.STALE_RETRIES + 1):
        try:
            job = hop.job_line(ready.job_id) if ready.job_id.isdigit() else b""
            _say(job + hop.endpoint_line(ready.host, ready.port))
            answer = _answer()
        except BaseException:
            conn.close()
            raise
        if answer == hop.OK:
            try:  # noqa: SIM105 - contextlib costs start-up time
                conn.send("session.handed", {"lease": ready.lease})
            except OSError:  # islurmd went away: the job's own session count keeps it
                pass
            conn.close()
            return EXIT_OK
        conn.close()
        if answer != hop.UNREACHABLE:
            return EXIT_OK  # the laptop left before connecting: the lease ends with us
        if attempt == hop.STALE_RETRIES:
            raise ShimError(
                EXIT_NODE,
                f"node {ready.node} port {ready.port} did not answer through the "
                f"login node, {attempt} times",
            )
        report.inform(f"node {ready.node} did not answer; asking islurmd again")
        conn, ready = rpc.acquire(
            socket, profile, timeout, unreachable=ready, image=image, fdpass=True
        )
    raise ShimError(EXIT_DAEMON, "unreachable")  # the loop returns or raises
