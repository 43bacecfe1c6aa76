"""Readiness of one job's sshd: its record appears (a stat), then its banner answers."""

from __future__ import annotations

import structlog
import trio

from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore

log = structlog.get_logger("islurm.readiness")

BANNER_TIMEOUT = 3.0


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


async def confirm(endpoint: Endpoint) -> bool:
    try:
        banner = await read_banner(endpoint.host, endpoint.port)
    except (OSError, trio.TooSlowError) as exc:
        log.info("readiness.banner_failed", job_id=endpoint.job_id, error=str(exc))
        return False
    return banner.startswith(b"SSH-2.0-")


async def probe_until_ready(
    job: Job, records: RecordStore, fast: float = 0.02, slow: float = 0.1
) -> None:
    """Watch for the job's record while someone waits; set job.endpoint or job.hook_error.

    The stat is cheap, so this checks often while the job runs and less while it pends."""
    job.probing = True
    try:
        attempts = 0
        while job.live and job.endpoint is None and job.hook_error is None and job.leases:
            if records.exists(job.job_id):
                error = records.read_error(job.job_id)
                if error:
                    job.hook_error = error
                    job.touch()
                    return
                endpoint = records.read(job.job_id)
                if endpoint is not None and await confirm(endpoint):
                    job.endpoint = endpoint
                    job.confirmed_at = trio.current_time()
                    job.node = job.node or endpoint.node
                    log.info("job.ready", job_id=job.job_id, host=endpoint.host, port=endpoint.port)
                    job.touch()
                    return
                attempts += 1
                if attempts >= 50:
                    job.hook_error = "the job's sshd wrote its record but does not answer"
                    job.touch()
                    return
            await trio.sleep(fast if job.state.is_running or attempts else slow)
    finally:
        job.probing = False
