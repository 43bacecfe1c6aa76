"""Readiness of one job's sshd: its host key signed on request, its record appears (a stat),
its banner answers. An endpoint is handed out only while its record stands and the job runs."""

from __future__ import annotations

import socket

import structlog
import trio

from islurm.daemon import sshca
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.parse import in_hostlist
from islurm.daemon.slurm.states import JobState

log = structlog.get_logger("islurm.readiness")

BANNER_TIMEOUT = 3.0
RESOLVE_TIMEOUT = 5.0
MAX_UNANSWERED = 50  # probes of a record whose sshd does not answer before giving up
#: A job starts here 0.5-1 s after sbatch (slurmctld's scheduling loop): stat its record this
#: often from the probe's start for FAST_START seconds, whatever the last poll said.
FAST_START = 3.0
#: What the table may still say of a job that started since the last poll (polls are 0.5 s
#: apart while someone waits): its hook's record, written once sshd listens in the running
#: job, is newer news than that poll.
NOT_YET_SEEN_RUNNING = frozenset({JobState.PENDING, JobState.CONFIGURING})


async def read_banner(host: str, port: int, limit: float = BANNER_TIMEOUT) -> bytes:
    """The first line sshd sends ("SSH-2.0-..."); raises OSError or TooSlowError."""
    with trio.fail_after(limit):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = await stream.receive_some(256)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")


async def ipv4_address(node: str) -> str:
    """The node's IPv4 address as this login node resolves it: the job's sshd listens on IPv4
    only, so nobody else's IPv6 listener on the same port is ever reached."""
    with trio.fail_after(RESOLVE_TIMEOUT):
        infos = await trio.socket.getaddrinfo(
            node, None, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
    for *_, address in infos:
        return str(address[0])
    raise OSError(f"{node} has no IPv4 address")


async def still_listening(endpoint: Endpoint, limit: float = 1.0) -> bool:
    """Cheap re-check of an endpoint already confirmed once: the kernel completes a TCP
    connect from the listen backlog, so this proves sshd's socket is alive without waiting for
    sshd (OpenSSH re-executes itself per connection: a banner costs it ~20 ms)."""
    try:
        with trio.fail_after(limit):
            stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        await stream.aclose()
    except (OSError, trio.TooSlowError) as exc:
        log.info("readiness.gone", job_id=endpoint.job_id, error=str(exc))
        return False
    return True


def record_stands(job: Job, endpoint: Endpoint, records: RecordStore) -> bool:
    """An endpoint may be handed out only while the job runs (or Slurm, last asked, had not
    started it yet) and its record is still the one the endpoint came from (a stat and a small
    read: the hook removes it when sshd stops). Waiting for the next poll to say RUNNING cost
    a cold connect up to 0.5 s."""
    running = job.state.is_running or job.state in NOT_YET_SEEN_RUNNING
    return running and endpoint.matches(records.read(job.job_id))


async def confirm(endpoint: Endpoint) -> bool:
    try:
        banner = await read_banner(endpoint.host, endpoint.port)
    except (OSError, trio.TooSlowError) as exc:
        log.info("readiness.banner_failed", job_id=endpoint.job_id, error=str(exc))
        return False
    return banner.startswith(b"SSH-2.0-")


async def sign_if_asked(job: Job, records: RecordStore, ca_dir: str | None) -> None:
    """Answer the job's request for a host certificate (the CA never leaves this node)."""
    request = records.sign_request(job.job_id)
    if request is None:
        return
    if ca_dir is None:
        job.mark_hook_failed("islurmd has no SSH CA to sign the job's host key")
        return
    key, until = request
    try:
        cert = await sshca.sign_host_key(ca_dir, key, job.job_id, until)
    except (sshca.CaError, OSError) as exc:
        log.error("ca.sign_failed", job_id=job.job_id, error=str(exc))
        job.mark_hook_failed(f"cannot sign the job's host key: {exc}")
        return
    records.write_certificate(job.job_id, cert)


async def _endpoint(job: Job, records: RecordStore) -> Endpoint | None:
    rec = records.read(job.job_id)
    if rec is None:
        return None
    if job.node and not in_hostlist(rec.node, job.node):
        # Slurm says the job runs elsewhere: not a record this job's hook wrote. (A job on
        # several nodes is named as a hostlist; its hook runs on the first of them.)
        if rec != job.refused_record:
            log.warning("records.wrong_node", job_id=job.job_id, record=rec.node, slurm=job.node)
            job.refused_record = rec
        return None
    try:
        host = await ipv4_address(rec.node)
    except (OSError, trio.TooSlowError) as exc:
        log.info("readiness.resolve_failed", job_id=job.job_id, node=rec.node, error=str(exc))
        return None
    return Endpoint(job.job_id, rec.node, host, rec.port, rec.pid, rec.host_key)


async def probe_until_ready(
    job: Job,
    records: RecordStore,
    ca_dir: str | None = None,
    fast: float = 0.01,
    slow: float = 0.1,
) -> None:
    """Watch the job's files while someone waits; sign its host key when it asks; end with
    `job.endpoint` or `job.hook_error` set. Stats are cheap: often while the job runs."""
    job.probing = True
    fast_until = trio.current_time() + FAST_START
    try:
        unanswered = 0
        while job.live and job.endpoint is None and job.hook_error is None and job.leases:
            await sign_if_asked(job, records, ca_dir)
            if job.hook_error is None and records.exists(job.job_id):
                error = records.read_error(job.job_id)
                if error:
                    job.mark_hook_failed(error)
                    return
                endpoint = await _endpoint(job, records)
                if endpoint is not None and await confirm(endpoint):
                    job.mark_ready(endpoint, trio.current_time())
                    log.info("job.ready", job_id=job.job_id, host=endpoint.host, port=endpoint.port)
                    return
                unanswered += 1
                if unanswered >= MAX_UNANSWERED:
                    job.mark_hook_failed("the job's sshd wrote its record but does not answer")
                    return
            soon = job.state.is_running or unanswered or trio.current_time() < fast_until
            await trio.sleep(fast if soon else slow)
    finally:
        job.probing = False
