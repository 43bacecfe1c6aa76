"""Would a profile's job start now: its sbatch options read as a request (partition, CPUs,
memory, GPUs on one node) and matched against what `sinfo -N` says is free on each node.
Pure. `sbatch --test-only` cannot answer this once the user's own pending job has been
planned by the backfill scheduler (it then answers that job's planned start), so it is only
asked for the estimate of a job that does not fit, or for options this module cannot read.

Options that depend on what sinfo does not show (features, node lists, exclusive nodes,
licenses, reservations, several nodes, other gres) make `request` return None: Slurm is
then asked (`--test-only`) instead of guessed at. Account and QOS limits are not seen."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from islurm.daemon.slurm.capacity import NodeFree

#: options that do not change where or whether a job fits now
_NEUTRAL = {
    *("time", "t", "time-min", "job-name", "J", "output", "o", "error", "e", "export"),
    *("chdir", "D", "signal", "comment", "mail-type", "mail-user", "account", "A", "qos"),
    *(
        "q",
        "wckey",
        "requeue",
        "no-requeue",
        "open-mode",
        "nice",
        "propagate",
        "kill-on-invalid-dep",
    ),
    *("get-user-env", "parsable", "quiet", "Q", "verbose", "v", "hint", "distribution", "m"),
}
_FLAGS = {"requeue", "no-requeue", "parsable", "quiet", "Q", "verbose", "v", "get-user-env"}
_MEM = re.compile(r"^(?P<n>\d+)(?P<unit>[KMGT]?)B?$", re.I)
_UNITS = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass(frozen=True)
class Request:
    """What one job of a profile needs on one node."""

    partitions: tuple[str, ...] = ()  # () = the cluster's default partition
    cpus: int = 1
    mem: int = 0  # MB; 0 = not given (Slurm's default per CPU; any free memory counts)
    gpus: dict[str, int] = field(default_factory=dict)  # "gpu" or "gpu:TYPE" -> count


def _options(argv: Sequence[str]) -> list[tuple[str, str]] | None:
    """(name, value) pairs from sbatch options; None if one is not understood."""
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            if not eq and name not in _FLAGS:
                if i + 1 >= len(argv):
                    return None
                value, i = argv[i + 1], i + 1
        elif word.startswith("-") and len(word) >= 2:
            name, value = word[1], word[2:]
            if not value and name not in _FLAGS:
                if i + 1 >= len(argv):
                    return None
                value, i = argv[i + 1], i + 1
        else:
            return None
        out.append((name, value))
        i += 1
    return out


def _mem(text: str) -> int | None:
    m = _MEM.match(text.strip())
    if m is None or int(m["n"]) == 0:  # --mem=0: the whole node
        return None
    return max(1, int(int(m["n"]) * _UNITS[m["unit"].upper()]))


def _gpus(text: str) -> dict[str, int] | None:
    """--gres=gpu:2 / gpu:a100:1 / gpu; --gpus=2 / a100:1. Other gres: None."""
    out: dict[str, int] = {}
    for item in text.split(","):
        parts = item.strip().split(":")
        if parts[0] != "gpu":
            parts = ["gpu", *parts]  # --gpus names no gres
        if len(parts) == 1:
            parts.append("1")
        if not parts[-1].isdigit() or len(parts) > 3:
            return None
        key = ":".join(parts[:-1])
        out[key] = out.get(key, 0) + int(parts[-1])
    return out


def request(sbatch: Sequence[str]) -> Request | None:
    """The request a profile's sbatch options make, or None if they ask for what a fit check
    cannot judge."""
    options = _options(sbatch)
    if options is None:
        return None
    partitions: tuple[str, ...] = ()
    per_task, tasks, mem, mem_per_cpu = 1, 1, 0, 0
    gpus: dict[str, int] = {}
    for name, value in options:
        if name in ("partition", "p"):
            partitions = tuple(p for p in value.split(",") if p)
        elif name in ("cpus-per-task", "c") and value.isdigit():
            per_task = int(value)
        elif name in ("ntasks", "n", "ntasks-per-node") and value.isdigit():
            tasks = int(value)
        elif name in ("nodes", "N") and value in ("1", "1-1"):
            continue
        elif name in ("mem", "mem-per-cpu"):
            size = _mem(value)
            if size is None:
                return None
            mem, mem_per_cpu = (size, 0) if name == "mem" else (0, size)
        elif name in ("gres", "gpus", "G", "gpus-per-node"):
            got = _gpus(value.removeprefix("gres:"))
            if got is None:
                return None
            gpus = got
        elif name not in _NEUTRAL:
            return None
    cpus = per_task * tasks
    return Request(partitions, cpus, mem or mem_per_cpu * cpus, gpus)


def _gpus_fit(want: dict[str, int], free: dict[str, int]) -> bool:
    for key, count in want.items():
        have = sum(free.values()) if key == "gpu" else free.get(key, 0)
        if have < count:
            return False
    return True


def fits(req: Request, nodes: Sequence[NodeFree]) -> NodeFree | None:
    """A usable node of the request's partition with enough idle CPUs, free memory and free
    GPUs for it right now, or None."""
    for n in nodes:
        in_partition = n.partition in req.partitions if req.partitions else n.default
        if not (in_partition and n.usable and n.idle_cpus >= req.cpus):
            continue
        if (n.free_mem >= req.mem if req.mem else n.free_mem > 0) and _gpus_fit(
            req.gpus, n.free_gpus
        ):
            return n
    return None
