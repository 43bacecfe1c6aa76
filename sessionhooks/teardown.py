"""The hook's last act (on TERM, or when sshd exits): nothing of the job stays on the node.

Every signal the hook handles is ignored first: Slurm signals every process of the job, and a
second signal's `Stop` must not cut the cleanup short. Then each step runs whatever the one
before it did: a failure is said in the job's log and the next step still runs, so the job's
directory (its host key among the files) goes even when the record store or the container
runtime fails. Stdlib only, import-light."""

from __future__ import annotations

from islurm.config import records
from islurm.sessionhooks.joblog import say

TYPE_CHECKING = False  # `typing` costs the job's start 2-5 ms
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Callable, Iterable

    from islurm.sessionhooks.container.job import JobContainer
    from islurm.sessionhooks.sshd import Sshd
else:  # the C module: `signal` loads `enum`
    import _signal

#: the job's files in the record store that go with the job (the error record stays: it tells
#: islurmd why the job could not serve). The session count goes too: the hook is its only
#: writer, and islurmd, which removes a job's files when it sees the job end, may have done so
#: before the count's last write or not have been running then (it was left behind so).
RECORDS = (records.RECORD, records.SIGN_REQUEST, records.CERTIFICATE, records.SESSIONS)


def ignore(signums: Iterable[int]) -> None:
    """Ignore these signals from now on. A handler may still run (and raise) while this is
    done: the caller retries then, around this call, until every one is off."""
    for signum in signums:
        _signal.signal(signum, _signal.SIG_IGN)


def run(
    jobs: str,
    job_id: str,
    proc: Sshd | None,
    container: JobContainer | None,
    jobdir: str,
) -> list[str]:
    """Remove the job's records (islurmd learns first), stop sshd, remove the container, then
    the job's directory. Returns what failed (each also said in the job's log)."""
    steps: list[tuple[str, Callable[[], object]]] = [
        ("remove the job's records", lambda: records.remove(jobs, job_id, RECORDS)),
    ]
    if proc is not None:
        steps.append(("stop sshd", proc.stop))
    if container is not None:
        steps.append(("remove the job's container", container.stop))
    steps.append((f"remove {jobdir}", lambda: _remove_tree(jobdir)))
    failed = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # any failure: the next step must still run
            say(f"cleanup: cannot {what}: {exc}")
            failed.append(what)
    return failed


def _remove_tree(path: str) -> None:
    import shutil  # only here: a job's start does not need it

    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
