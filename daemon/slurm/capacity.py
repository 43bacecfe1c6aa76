"""Pure parsers for what the queue says about jobs not yet submitted: `sbatch --test-only`
(Slurm's estimate of when a job would start) and `sinfo -N` (what is free on each node, which
daemon/slurm/fit.py matches a profile against)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from islurm.daemon.slurm.parse import SlurmParseError

#: one line per (node, partition); "|" never appears in these fields. `Partition` marks the
#: default partition with "*"; Memory and AllocMem are MB, as Slurm counts them for jobs.
SINFO_FIELDS = (
    *("NodeList", "Partition", "CPUsState", "Memory", "AllocMem", "Gres", "GresUsed"),
    "StateCompact",
)
SINFO_FORMAT = ",".join(f"{f}:|" for f in SINFO_FIELDS[:-1]) + f",{SINFO_FIELDS[-1]}:"
#: a start this close to now is "now": Slurm rounds, and the clocks of two hosts differ
STARTS_NOW_SLACK = 10.0

_TEST_ONLY = re.compile(
    r"Job (?P<job>\d+) to start at (?P<start>\S+) using (?P<cpus>\d+) processors? "
    r"on nodes (?P<nodes>\S+) in partition (?P<partition>\S+)"
)


@dataclass(frozen=True)
class TestOnly:
    """Slurm's verdict on a job it was asked about with `sbatch --test-only`."""

    start: str  # Slurm's local time, ISO 8601 without zone ("2026-11-24T13:10:05")
    cpus: int
    nodes: str
    partition: str

    def starts_now(self, now: datetime) -> bool:
        try:
            start = datetime.fromisoformat(self.start)
        except ValueError:
            return False
        return (start - now).total_seconds() <= STARTS_NOW_SLACK


def parse_test_only(stderr: str) -> TestOnly:
    """The verdict line of a successful `sbatch --test-only` (it answers on stderr)."""
    m = _TEST_ONLY.search(stderr)
    if m is None:
        raise SlurmParseError("sbatch --test-only output", stderr)
    return TestOnly(m["start"], int(m["cpus"]), m["nodes"], m["partition"])


@dataclass(frozen=True)
class NodeFree:
    """What is free on one node in one partition right now (one `sinfo -N` line)."""

    node: str
    partition: str
    default: bool  # the cluster's default partition
    idle_cpus: int
    total_cpus: int
    free_mem: int  # MB: configured minus allocated
    free_gpus: dict[str, int]  # "gpu" or "gpu:TYPE" -> configured minus used
    usable: bool  # responding, not down/drained/reserved: Slurm may start a job on it now


@dataclass
class PartitionFree:
    """What is free in one partition right now (the sum of its usable nodes)."""

    partition: str
    nodes: int = 0
    idle_cpus: int = 0
    total_cpus: int = 0
    free_gpus: dict[str, int] = field(default_factory=dict)  # "gpu" or "gpu:TYPE" -> count

    def as_json(self) -> dict[str, object]:
        return {
            "partition": self.partition,
            "nodes": self.nodes,
            "idle_cpus": self.idle_cpus,
            "total_cpus": self.total_cpus,
            "free_gpus": dict(sorted(self.free_gpus.items())),
        }


_GRES_ITEM = re.compile(r"^(?P<name>[^:()]+)(?::(?P<type>[^:()]+))?:(?P<count>\d+)(?:\(.*\))?$")
#: node states in which free resources can be allocated (sinfo %t, without its flags)
_USABLE = {"idle", "mix", "mixed", "alloc", "allocated"}


def gres_items(text: str) -> dict[str, int]:
    """{"gpu": 4} or {"gpu:a100": 2} from sinfo's Gres / GresUsed ("gpu:a100:2(IDX:0,2)")."""
    out: dict[str, int] = {}
    depth, item = 0, ""
    for ch in text.strip() + ",":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            m = _GRES_ITEM.match(item.strip())
            if item.strip() and item.strip() != "(null)" and m is None:
                raise SlurmParseError("sinfo gres", text)
            if m is not None:
                key = m["name"] + (f":{m['type']}" if m["type"] else "")
                out[key] = out.get(key, 0) + int(m["count"])
            item = ""
        else:
            item += ch
    return out


def _int(text: str, line: str) -> int:
    if not text.isdigit():
        raise SlurmParseError("sinfo number", line)
    return int(text)


def parse_sinfo_nodes(stdout: str) -> list[NodeFree]:
    """Every (node, partition) line of `sinfo -h -N -O SINFO_FORMAT`. A node that is not
    responding ("*"), down, drained, draining, completing or reserved is not usable."""
    out = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != len(SINFO_FIELDS):
            raise SlurmParseError("sinfo line", line)
        node, partition, cpus, memory, alloc_mem, gres, used, state = fields
        counts = cpus.split("/")  # allocated/idle/other/total
        if len(counts) != 4 or not all(c.isdigit() for c in counts):
            raise SlurmParseError("sinfo CPUsState", line)
        total, taken = gres_items(gres), gres_items(used)
        gpus = {
            k: max(0, n - taken.get(k, 0)) for k, n in total.items() if k.split(":")[0] == "gpu"
        }
        out.append(
            NodeFree(
                node=node,
                partition=partition.rstrip("*"),
                default=partition.endswith("*"),
                idle_cpus=int(counts[1]),
                total_cpus=int(counts[3]),
                free_mem=max(0, _int(memory, line) - _int(alloc_mem, line)),
                free_gpus=gpus,
                # "-": planned by the backfill scheduler, still startable for what fits
                usable=state.rstrip("-") in _USABLE,
            )
        )
    return out


def partitions(nodes: list[NodeFree]) -> dict[str, PartitionFree]:
    """Per partition: node count, and idle CPUs and free GPUs of its usable nodes."""
    parts: dict[str, PartitionFree] = {}
    for n in nodes:
        p = parts.setdefault(n.partition, PartitionFree(n.partition))
        p.nodes += 1
        p.total_cpus += n.total_cpus
        if n.usable:
            p.idle_cpus += n.idle_cpus
            for name, count in n.free_gpus.items():
                p.free_gpus[name] = p.free_gpus.get(name, 0) + count
    return parts
