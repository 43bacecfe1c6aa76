"""Pure parsers for Slurm's output (daemon/slurm/parse.py) and job states (states.py), against
output as Slurm 22.05 prints it (`squeue -h -o` with the unit separator, `sbatch --parsable`)."""

import pytest

from islurm.daemon.slurm.parse import (
    SEP,
    SQUEUE_FORMAT,
    SlurmParseError,
    SqueueRow,
    is_controller_unreachable,
    is_invalid_job_id,
    parse_sbatch_parsable,
    parse_slurm_duration,
    parse_squeue,
)
from islurm.daemon.slurm.states import JobState


def line(*fields: str) -> str:
    return SEP.join(fields)


# Recorded: one pending islurm job, one running islurm job, a user's own batch job, a job that
# was cancelled, and a job whose free-text comment holds shell metacharacters.
RECORDED = "".join(
    row + "\n"
    for row in [
        line("4242", "islurm-cpu", "PENDING", "Priority", "", "2026-11-24T14:00:00", "0:00",
             "8:00:00", "8:00:00", "interactive", "N/A", "islurm:v1:cpu"),
        line("4243", "islurm-gpu-intensive", "RUNNING", "None", "gpu-node-07",
             "2026-11-24T12:01:02", "1-02:03:04", "4:56:56", "1-07:00:00", "gpu", "gres/gpu:4",
             "islurm:v1:gpu-intensive"),
        line("4244", "train.sh", "RUNNING", "None", "node-[01-04]", "2026-11-24T11:00:00",
             "1:00:00", "UNLIMITED", "UNLIMITED", "batch", "N/A", "(null)"),
        line("4245", "islurm-cpu", "CANCELLED by 1000", "None", "", "2026-11-24T10:00:00",
             "0:03", "7:59:57", "8:00:00", "interactive", "N/A", "islurm:v1:cpu"),
        line("4246", "islurm-cpu", "PENDING", "Dependency", "", "N/A", "0:00", "8:00:00",
             "8:00:00", "interactive", "N/A", "islurm:v1:cpu; rm -rf ~ | mail x  "),
    ]
)  # fmt: skip


def test_squeue_format_asks_for_the_fields_in_the_parsed_order() -> None:
    assert SQUEUE_FORMAT.split(SEP) == [
        "%i", "%j", "%T", "%r", "%N", "%S", "%M", "%L", "%l", "%P", "%b", "%k"
    ]  # fmt: skip


def test_parse_squeue_recorded_output() -> None:
    parsed = parse_squeue(RECORDED)
    assert [r.job_id for r in parsed] == ["4242", "4243", "4244", "4245", "4246"]
    assert parsed[1] == SqueueRow(
        job_id="4243",
        name="islurm-gpu-intensive",
        state=JobState.RUNNING,
        reason="None",
        nodes="gpu-node-07",
        start_time="2026-11-24T12:01:02",
        time_used="1-02:03:04",
        time_left="4:56:56",
        time_limit="1-07:00:00",
        partition="gpu",
        gres="gres/gpu:4",
        comment="islurm:v1:gpu-intensive",
    )
    assert [r.profile for r in parsed] == ["cpu", "gpu-intensive", None, "cpu", None]
    assert parsed[3].state is JobState.CANCELLED
    assert parsed[4].comment == "islurm:v1:cpu; rm -rf ~ | mail x  "  # kept verbatim
    assert parsed[2].nodes == "node-[01-04]"


def test_comment_containing_the_separator_stays_in_the_comment() -> None:
    raw = line("7", "islurm-cpu", "RUNNING", "None", "n1", "", "", "", "", "p", "", "a") + SEP + "b"
    [row] = parse_squeue(raw + "\n")
    assert row.comment == f"a{SEP}b"
    assert row.profile is None


@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_empty_squeue_output_is_no_jobs(text: str) -> None:
    assert parse_squeue(text) == []


@pytest.mark.parametrize(
    "bad",
    [
        "JOBID NAME STATE",  # a header: someone dropped -h
        line("4242", "islurm-cpu", "PENDING"),  # too few fields
        line("", "islurm-cpu", *["x"] * 10),  # no job id
        "squeue: error: Invalid user: alice",
    ],
)
def test_malformed_squeue_line_is_an_error_quoting_it(bad: str) -> None:
    with pytest.raises(SlurmParseError) as caught:
        parse_squeue(RECORDED + bad + "\n")
    assert caught.value.raw == bad
    assert repr(bad) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "comment", "profile"),
    [
        ("islurm-cpu", "islurm:v1:cpu", "cpu"),
        ("islurm-gpu-intensive", "islurm:v1:gpu-intensive", "gpu-intensive"),
        ("islurm-cpu", "islurm:v1:gpu", None),  # name and comment disagree
        ("islurm-gpu", "islurm:v1:cpu", None),
        ("islurm-cpu", "islurm:v2:cpu", None),  # a future format is not ours
        ("islurm-cpu", "(null)", None),
        ("interactive", "islurm:v1:cpu", None),
        ("islurm-", "islurm:v1:", ""),  # degenerate but consistent
        ("islurm-cpu;x", "islurm:v1:cpu", None),
    ],
)
def test_profile_needs_name_and_comment_to_agree(name: str, comment: str, profile: str) -> None:
    raw = line("1", name, "PENDING", "None", "", "", "", "", "", "p", "", comment)
    assert parse_squeue(raw)[0].profile == profile


@pytest.mark.parametrize(
    ("stdout", "job_id"),
    [
        ("123\n", "123"),
        ("123;cluster\n", "123"),
        ("123;my cluster;x\n", "123"),
        ("sbatch: warning: can't honor --ntasks-per-node\n\n4242\n", "4242"),
        ("  77  \n\n", "77"),
    ],
)
def test_parse_sbatch_parsable(stdout: str, job_id: str) -> None:
    assert parse_sbatch_parsable(stdout) == job_id


@pytest.mark.parametrize(
    "stdout",
    ["", "\n", "Submitted batch job 123\n", "12a\n", "-1\n", ";cluster\n", "123\nwarning: x\n"],
)
def test_sbatch_garbage_is_an_error_quoting_it(stdout: str) -> None:
    with pytest.raises(SlurmParseError) as caught:
        parse_sbatch_parsable(stdout)
    assert caught.value.raw == stdout
    assert str(caught.value) == f"cannot parse sbatch --parsable output: {stdout!r}"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1-02:03:04", 93784),
        ("05:06", 306),
        ("1:02:03", 3723),
        ("0:00", 0),
        ("30-00:00:00", 2592000),
        (" 4:56:56 ", 17816),
        ("UNLIMITED", None),
        ("INVALID", None),
        ("NOT_SET", None),
        ("N/A", None),
        ("", None),
        ("1:2:3:4", None),
    ],
)
def test_parse_slurm_duration(text: str, seconds: int | None) -> None:
    assert parse_slurm_duration(text) == seconds


@pytest.mark.parametrize(
    "stderr",
    [
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)\n",
        "scancel: error: Kill job error on job id 4242: Unable to contact slurm controller "
        "(connect failure)\n",
        "slurm_load_jobs error: Socket timed out on send/recv operation\n",
        "squeue: error: slurm_receive_msg: Zero Bytes were transmitted or received\n",
        "sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received\n",
        "squeue: error: _open_controller_conn: connect: Connection refused\n",
    ],
)
def test_controller_unreachable_is_recognised(stderr: str) -> None:
    assert is_controller_unreachable(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        "sbatch: error: Batch job submission failed: Requested node configuration is not "
        "available\n",
        "squeue: error: Invalid user: alice\n",
        "scancel: error: Kill job error on job id 4242: Invalid job id specified\n",
        "",
    ],
)
def test_other_failures_are_not_unreachable(stderr: str) -> None:
    assert not is_controller_unreachable(stderr)


def test_invalid_job_id() -> None:
    assert is_invalid_job_id("scancel: error: Kill job error on job id 9: Invalid job id specified")
    assert not is_invalid_job_id("scancel: error: Unable to contact slurm controller")


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("running", JobState.RUNNING),
        ("CANCELLED by 1000", JobState.CANCELLED),
        (" COMPLETING ", JobState.COMPLETING),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("REQUEUE_HOLD", JobState.UNKNOWN),
        ("", JobState.UNKNOWN),
        ("GONE", JobState.GONE),
    ],
)
def test_job_state_parse(text: str, state: JobState) -> None:
    assert JobState.parse(text) is state


ENDED = {"COMPLETED", "COMPLETING", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "GONE", "REVOKED", "SPECIAL_EXIT",
         "STAGE_OUT"}  # fmt: skip
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED", "SIGNALING", "STOPPED"}


@pytest.mark.parametrize("state", list(JobState))
def test_every_state_is_exactly_one_of_waiting_running_ended_unknown(state: JobState) -> None:
    kinds = [state.is_waiting, state.is_running, state.is_ended, state is JobState.UNKNOWN]
    assert kinds.count(True) == 1
    assert state.is_ended == (state.value in ENDED)
    assert state.is_waiting == (state.value in WAITING)


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (JobState.CANCELLED, "was cancelled"),
        (JobState.TIMEOUT, "reached its time limit"),
        (JobState.OUT_OF_MEMORY, "ran out of memory"),
        (JobState.NODE_FAIL, "ended because its node failed"),
        (JobState.GONE, "is gone from Slurm"),
        (JobState.SPECIAL_EXIT, "ended (SPECIAL_EXIT)"),
    ],
)
def test_describe_end(state: JobState, words: str) -> None:
    assert state.describe_end() == words
