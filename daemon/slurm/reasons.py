"""Slurm's pending reasons (squeue %r) in sentences a user understands. Pure.

The code stays in brackets at the end: it is what to search for and what admins recognise."""

from __future__ import annotations

import re

_SENTENCES = {
    "Resources": "the nodes that fit this job are busy; it starts when enough CPUs, memory "
    "or GPUs free up",
    "Priority": "jobs with higher priority are ahead of it in the queue",
    "Dependency": "it waits for another job to end (islurm's jobs wait for an older job of "
    "the same profile)",
    "DependencyNeverSatisfied": "the job it depends on failed; it will never start",
    "BeginTime": "it was asked not to start before a given time",
    "JobHeldUser": "you put it on hold (scontrol release to let it go)",
    "JobHeldAdmin": "an administrator put it on hold",
    "ReqNodeNotAvail": "a node it needs is unavailable (down, drained or reserved)",
    "NodeDown": "a node it needs is down",
    "PartitionDown": "its partition is down",
    "PartitionInactive": "its partition is inactive",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "PartitionTimeLimit": "its time limit is longer than its partition allows",
    "Reservation": "it waits for its reservation to start",
    "Licenses": "it waits for licenses",
    "BadConstraints": "no node has the features it asks for",
    "InvalidQOS": "its QOS is not valid for you",
    "InvalidAccount": "its account is not valid for you",
    "Cleaning": "its node is still cleaning up after the previous job",
    "Prolog": "its node is running the prolog",
    "launch failed requeued held": "it failed to launch and was held",
}
_PATTERNS = (
    (re.compile(r"^QOSMaxJobsPerUser"), "you already run as many jobs as your QOS allows"),
    (re.compile(r"^QOSMaxSubmitJobPerUser"), "you have as many jobs as your QOS allows"),
    (re.compile(r"^QOSMax\w*PerUser"), "your running jobs already use what your QOS allows"),
    (re.compile(r"^QOSGrp"), "your QOS's group limit is reached by running jobs"),
    (re.compile(r"^QOS"), "a limit of its QOS is reached"),
    (re.compile(r"^AssocGrp"), "your account's group limit is reached by running jobs"),
    (re.compile(r"^AssocMax"), "a per-user limit of your account is reached"),
    (re.compile(r"^MaxJobs|^MaxCpu|^MaxGRES|^MaxMem"), "a per-user limit is reached"),
)


def explain(reason: str) -> str:
    """ "waiting because … (Code)"; "" when Slurm gives no reason (None, empty)."""
    code = reason.strip()
    if code in ("", "None", "(null)", "N/A"):
        return ""
    # "ReqNodeNotAvail, UnavailableNodes:c1" carries the nodes after the code
    head, _, detail = code.partition(",")
    sentence = _SENTENCES.get(head.strip())
    if sentence is None:
        sentence = next((s for pat, s in _PATTERNS if pat.search(head.strip())), "")
    if not sentence:
        return f"Slurm says ({code})"
    extra = detail.strip()
    return f"{sentence} ({head.strip()}{': ' + extra if extra else ''})"
