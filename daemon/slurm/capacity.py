"""Pure parsers for what the queue says about jobs not yet submitted: `sbatch --test-only`
(would a job start now, else when) and `sinfo` (free capacity per partition)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from islurm.daemon.slurm.parse import SlurmParseError

#: one line per (node, partition); "|" never appears in these fields
SINFO_FIELDS = ("NodeList", "PartitionName", "CPUsState", "Gres", "GresUsed", "StateCompact")
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


@dataclass
class PartitionFree:
    """What is free in one partition right now."""

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
_USABLE = {"idle", "mix", "mixed", "alloc", "allocated", "comp", "completing"}


def _gres_items(text: str) -> dict[str, int]:
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


def parse_sinfo(stdout: str) -> dict[str, PartitionFree]:
    """Per partition, from `sinfo -h -N -O SINFO_FORMAT`: idle CPUs of usable nodes and free
    GPUs (configured minus used) by type. Nodes that are down or drained add nothing free."""
    parts: dict[str, PartitionFree] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != len(SINFO_FIELDS):
            raise SlurmParseError("sinfo line", line)
        _node, partition, cpus, gres, used, state = fields
        counts = cpus.split("/")  # allocated/idle/other/total
        if len(counts) != 4 or not all(c.isdigit() for c in counts):
            raise SlurmParseError("sinfo CPUsState", line)
        p = parts.setdefault(partition.rstrip("*"), PartitionFree(partition.rstrip("*")))
        p.nodes += 1
        p.total_cpus += int(counts[3])
        if state.rstrip("*~#!%$@^-+") not in _USABLE or state.endswith("*"):
            continue  # not responding, down, drained, reserved...: nothing free here
        p.idle_cpus += int(counts[1])
        total, taken = _gres_items(gres), _gres_items(used)
        for name, count in total.items():
            if name.split(":", 1)[0] == "gpu":
                p.free_gpus[name] = p.free_gpus.get(name, 0) + max(0, count - taken.get(name, 0))
    return parts
