"""Pure parsers for Slurm's machine-readable output. A parse error quotes the raw text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from islurm.config.images import is_key
from islurm.daemon.slurm.states import JobState

#: islurm's jobs carry this comment prefix; the suffix is the profile name, then, for a job
#: running a container image, IMAGE_TAG and the image's key (islurm.config.images).
COMMENT_PREFIX = "islurm:v1:"
IMAGE_TAG = ":image="
JOB_NAME_PREFIX = "islurm-"
IMAGE_NAME_SEP = "."  # job name islurm-<profile>.<key>: '.' is in no profile name

# Field separator for squeue -o: the ASCII unit separator never appears in our fields.
SEP = "\x1f"
_FIELDS = ("%i", "%j", "%T", "%r", "%N", "%S", "%M", "%L", "%l", "%P", "%b", "%k")
SQUEUE_FORMAT = SEP.join(_FIELDS)


class SlurmParseError(ValueError):
    def __init__(self, what: str, raw: str) -> None:
        super().__init__(f"cannot parse {what}: {raw!r}")
        self.raw = raw


@dataclass(frozen=True)
class SqueueRow:
    job_id: str
    name: str
    state: JobState
    reason: str
    nodes: str
    start_time: str
    time_used: str
    time_left: str
    time_limit: str
    partition: str
    gres: str
    comment: str

    @property
    def identity(self) -> tuple[str, str] | None:
        """(profile, image key) of this job, or None if the job is not islurm's. Jobs without
        an image (and those of islurm <= 0.2) have no image part: key ""."""
        if not self.name.startswith(JOB_NAME_PREFIX) or not self.comment.startswith(COMMENT_PREFIX):
            return None
        profile, _, key = self.comment[len(COMMENT_PREFIX) :].partition(IMAGE_TAG)
        if (key and not is_key(key)) or IMAGE_TAG[0] in profile:
            return None
        return (profile, key) if self.name == job_name(profile, key) else None

    @property
    def profile(self) -> str | None:
        """The islurm profile of this job, or None if the job is not islurm's."""
        ident = self.identity
        return ident[0] if ident else None

    @property
    def image_key(self) -> str:
        ident = self.identity
        return ident[1] if ident else ""


def job_name(profile: str, image_key: str = "") -> str:
    """islurm-<profile>, or islurm-<profile>.<key> for a job running an image: jobs of one
    profile with different images must not share a name (sbatch --dependency=singleton)."""
    return JOB_NAME_PREFIX + profile + (IMAGE_NAME_SEP + image_key if image_key else "")


def job_comment(profile: str, image_key: str = "") -> str:
    return COMMENT_PREFIX + profile + (IMAGE_TAG + image_key if image_key else "")


def parse_sbatch_parsable(stdout: str) -> str:
    """Job id from `sbatch --parsable` ("id" or "id;cluster", on the last non-empty line)."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        raise SlurmParseError("sbatch --parsable output", stdout)
    job_id = lines[-1].split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmParseError("sbatch --parsable output", stdout)
    return job_id


def parse_squeue(stdout: str) -> list[SqueueRow]:
    """Rows of `squeue -h -o SQUEUE_FORMAT`; lines of other shapes are an error."""
    rows = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split(SEP, len(_FIELDS) - 1)
        if len(parts) != len(_FIELDS) or not parts[0].strip():
            raise SlurmParseError("squeue line", line)
        jid, name, state, reason, nodes, start, used, left, limit, part, gres, comment = parts
        rows.append(
            SqueueRow(
                job_id=jid.strip(),
                name=name,
                state=JobState.parse(state),
                reason=reason.strip(),
                nodes=nodes.strip(),
                start_time=start.strip(),
                time_used=used.strip(),
                time_left=left.strip(),
                time_limit=limit.strip(),
                partition=part.strip(),
                gres=gres.strip(),
                comment=comment.rstrip("\n"),
            )
        )
    return rows


_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def parse_slurm_duration(text: str) -> int | None:
    """Seconds from Slurm's [D-][HH:]MM:SS; None for UNLIMITED, INVALID, N/A and the like."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


_UNREACHABLE = (
    "unable to contact slurm controller",
    "connection refused",
    "socket timed out",
    "slurm_receive_msg",
    "zero bytes were transmitted or received",
    "communications connection failure",
    "connect failure",
)


def is_controller_unreachable(stderr: str) -> bool:
    """Whether a failed Slurm command failed because the controller did not answer."""
    text = stderr.lower()
    return any(marker in text for marker in _UNREACHABLE)


def is_invalid_job_id(stderr: str) -> bool:
    return "invalid job id" in stderr.lower()


_DETAIL = re.compile(r"(?:^|\s)(ExcNodeList|Features|Partition|NodeList)=(\S*)")


def parse_job_constraints(scontrol_line: str) -> list[str]:
    """sbatch options that carry a job's placement constraints (excluded nodes, features such
    as the architecture) from `scontrol -o show job ID`, to give a sibling job the same."""
    fields = {m.group(1): m.group(2) for m in _DETAIL.finditer(scontrol_line)}
    if "Partition" not in fields:
        raise SlurmParseError("scontrol show job output", scontrol_line)
    options = []
    excluded = fields.get("ExcNodeList", "")
    if excluded and excluded != "(null)":
        options.append(f"--exclude={excluded}")
    features = fields.get("Features", "")
    if features and features != "(null)":
        options.append(f"--constraint={features}")
    return options


_SBATCH_TIME = re.compile(
    r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
    r"|(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)|(?P<mm>\d+):(?P<ss>\d+)|(?P<min>\d+))$"
)


def parse_sbatch_time(value: str) -> int | None:
    """Seconds from an sbatch --time value ("30", "30:00", "4:00:00", "1-12", "1-12:30",
    "1-12:30:15"); None for UNLIMITED, INFINITE or anything else."""
    m = _SBATCH_TIME.match(value.strip())
    if not m:
        return None
    g = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "h" in g:
        return (g["h"] * 60 + g["m"]) * 60 + g["s"]
    if "mm" in g:
        return g["mm"] * 60 + g["ss"]
    return g["min"] * 60


def time_limit_of(options: list[str] | tuple[str, ...]) -> int | None:
    """The time limit an sbatch argv asks for (the last --time/-t wins), in seconds."""
    limit: int | None = None
    for i, opt in enumerate(options):
        value: str | None = None
        if opt.startswith("--time="):
            value = opt[len("--time=") :]
        elif opt in ("--time", "-t") and i + 1 < len(options):
            value = options[i + 1]
        elif opt.startswith("-t") and len(opt) > 2 and not opt.startswith("--"):
            value = opt[2:]
        if value is not None:
            limit = parse_sbatch_time(value)
    return limit


_HOSTLIST_ITEM = re.compile(r"([^\[\],]*)(?:\[([0-9,\-]+)\]([^\[\],]*))?")


def in_hostlist(node: str, hostlist: str) -> bool:
    """Whether `node` is one of Slurm's compressed hostlist ("c[01-02,5],gpu7", squeue %N)."""
    for item in _HOSTLIST_ITEM.finditer(hostlist):
        prefix, ranges, suffix = item.group(1), item.group(2), item.group(3) or ""
        if ranges is None:
            if prefix and node == prefix:
                return True
            continue
        if not (node.startswith(prefix) and node.endswith(suffix)):
            continue
        index = node[len(prefix) : len(node) - len(suffix)]
        if not index.isdigit():
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            if not low.isdigit() or not (high or low).isdigit():
                continue
            # zero-padded ranges ("01-02") name nodes of exactly that width
            if int(low) <= int(index) <= int(high or low) and (
                len(index) == len(low) or not low.startswith("0")
            ):
                return True
    return False
