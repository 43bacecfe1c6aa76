"""The tag a job's sshd adds to its SSH banner (docs/PROTOCOL.md §2 "The laptop route"): one
definition for the hook, which sets it (sshd_config `VersionAddendum`), and the laptop's shim,
which checks it before it reuses a remembered endpoint (proxyshim/shortcut.py).

The tag names the job, so an endpoint whose job ended and whose port another of the user's
jobs took since (every job's host certificate carries the same principal) is told apart
before any of ssh's bytes go to it. It proves nothing (anyone who reaches the port reads it):
the host certificate, checked by ssh, is what proves the endpoint. Stdlib only, no imports:
the shim imports this on every laptop connect."""

PREFIX = "islurm-job-"


def tag(job_id: str) -> str:
    """The banner tag of job `job_id` (digits: Slurm's job id)."""
    if not job_id.isdigit():
        raise ValueError(f"not a job id: {job_id!r}")
    return PREFIX + job_id


def names(banner: bytes, job_id: str) -> bool:
    """Whether `banner` (the sshd's first line, as sent) is an SSH banner tagged for the job."""
    line = banner.split(b"\n", 1)[0].rstrip(b"\r")
    return line.startswith(b"SSH-") and line.endswith(b" " + tag(job_id).encode())
