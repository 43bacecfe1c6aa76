"""The job-file contract (config/records.py) and the daemon's reading of it (daemon/records.py,
readiness._endpoint): files are read without following links, size-bounded, never blocking,
only if they are the user's; a record is used only if every field is what the hook writes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import cast

import pytest
import trio
from structlog.testing import capture_logs

from islurm.config import records
from islurm.config.records import MAX_RECORD, Record, RecordError, read_json, record_from_json
from islurm.daemon import readiness
from islurm.daemon.jobs import Job
from islurm.daemon.records import Endpoint, RecordStore
from islurm.daemon.slurm.parse import in_hostlist
from islurm.daemon.slurm.states import JobState
from tests.unit.fakes import FAKE_HOST_KEY, write_record

GUARD = 3600  # virtual seconds


def good(**changes: object) -> dict[str, object]:
    data = Record("42", "c1", 22022, 4711, FAKE_HOST_KEY).to_json("alice", "cpu", 1e9)
    data.update(changes)
    return data


# -- read_json ------------------------------------------------------------------------------


def test_read_json_reads_a_small_file_of_ours(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    path.write_text(json.dumps({"a": [1, "b"]}))
    assert read_json(str(path)) == {"a": [1, "b"]}
    assert read_json(str(tmp_path / "43.json")) is None  # absent: not an error


def test_read_json_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / "42.json")
    with pytest.raises(RecordError, match="is a symlink"):
        read_json(str(tmp_path / "42.json"))


def test_read_json_refuses_a_big_file(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    path.write_text(json.dumps({"pad": "x" * MAX_RECORD}))
    with pytest.raises(RecordError, match=f"larger than {MAX_RECORD} bytes"):
        read_json(str(path))
    path.write_text(json.dumps({"pad": "x" * (MAX_RECORD - 20)}))  # just under: fine
    assert isinstance(read_json(str(path)), dict)


def test_read_json_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "42.json"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def read() -> None:
        try:
            outcome.append(read_json(str(fifo)))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # blocked in open(): free it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("read_json blocked on a FIFO")
    [result] = outcome
    assert isinstance(result, RecordError)
    assert "not a regular file" in str(result)


def test_read_json_refuses_a_file_owned_by_another_uid(tmp_path: Path) -> None:
    path = tmp_path / "42.json"
    path.write_text("{}")
    os.chown(path, 65534, 65534)  # the tests run as root
    with pytest.raises(RecordError, match="owned by uid 65534"):
        read_json(str(path))


@pytest.mark.parametrize("content", [b"{", b"\xff\xfe{}", b"", b"{} {}"])
def test_read_json_refuses_what_is_not_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "42.json"
    path.write_bytes(content)
    with pytest.raises(RecordError, match="is not JSON"):
        read_json(str(path))


def test_a_directory_in_the_records_place_is_refused(tmp_path: Path) -> None:
    (tmp_path / "42.json").mkdir()
    with pytest.raises(RecordError):
        read_json(str(tmp_path / "42.json"))


# -- record_from_json ----------------------------------------------------------------------


def test_a_record_as_the_hook_writes_it_is_read() -> None:
    assert record_from_json(good(), "42") == Record("42", "c1", 22022, 4711, FAKE_HOST_KEY)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 1},
        {"version": "2"},
        {"job_id": "43"},
        {"port": 0},
        {"port": 65536},
        {"port": "ssh"},
        {"port": None},
        {"family": "inet6"},
        {"family": "unix"},
        {"node": ""},
        {"node": "c1 -oProxyCommand=x"},
        {"node": "c1\n"},
        {"node": "c1\x1b[2J"},
        {"node": "c\t1"},
        {"pid": "many"},
    ],
)
def test_a_record_off_the_contract_is_ignored(changes: dict[str, object]) -> None:
    assert record_from_json(good(**changes), "42") is None


@pytest.mark.parametrize("missing", ["job_id", "node", "port", "pid", "host_key", "family"])
def test_a_record_missing_a_field_is_ignored(missing: str) -> None:
    data = good()
    del data[missing]
    assert record_from_json(data, "42") is None


@pytest.mark.parametrize("data", [None, [], "record", 42])
def test_not_an_object_is_no_record(data: object) -> None:
    assert record_from_json(data, "42") is None


def test_job_file_paths_take_only_job_ids(tmp_path: Path) -> None:
    assert records.path(str(tmp_path), "42", records.RECORD) == str(tmp_path / "42.json")
    for bad in ("", "../42", "42/x", "4 2", "-1"):
        with pytest.raises(ValueError):
            records.path(str(tmp_path), bad, records.RECORD)


# -- the daemon's store --------------------------------------------------------------------


def jobs_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    return tmp_path / "jobs"


def test_store_logs_and_skips_a_refused_file(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(good()))
    os.symlink(target, jobs / "42.json")
    store = RecordStore(str(jobs))
    with capture_logs() as logs:
        assert store.read("42") is None
    [entry] = [e for e in logs if e["event"] == "records.refused"]
    assert entry["job_id"] == "42"
    assert "symlink" in entry["error"]


@pytest.mark.parametrize("how", ["big", "fifo", "other uid", "not json"])
def test_store_returns_none_for_a_bad_record(tmp_path: Path, how: str) -> None:
    jobs = jobs_dir(tmp_path)
    path = jobs / "42.json"
    if how == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("x" * (MAX_RECORD + 1) if how == "big" else json.dumps(good()))
    if how == "other uid":
        os.chown(path, 65534, 65534)
    if how == "not json":
        path.write_text("{")
    with capture_logs() as logs:
        assert RecordStore(str(jobs)).read("42") is None
    assert [e["event"] for e in logs] == ["records.refused"]


def test_store_error_record_unreadable_still_fails_the_job(tmp_path: Path) -> None:
    jobs = jobs_dir(tmp_path)
    (jobs / "42.error").write_text("x" * (MAX_RECORD + 1))
    message = RecordStore(str(jobs)).read_error("42")
    assert message == "the session hook failed (unreadable error record)"


def test_endpoint_matches_only_its_own_record() -> None:
    rec = Record("42", "c1", 22022, 4711, FAKE_HOST_KEY)
    endpoint = Endpoint("42", "c1", "10.0.0.1", 22022, 4711, FAKE_HOST_KEY)
    assert endpoint.matches(rec)
    assert not endpoint.matches(None)
    for other in (
        Record("42", "c2", 22022, 4711, FAKE_HOST_KEY),
        Record("42", "c1", 22023, 4711, FAKE_HOST_KEY),
        Record("42", "c1", 22022, 4712, FAKE_HOST_KEY),
        Record("42", "c1", 22022, 4711, FAKE_HOST_KEY + "x"),
    ):
        assert not endpoint.matches(other), other


# -- a record of another node --------------------------------------------------------------


async def test_a_record_naming_another_node_is_ignored_and_said_once(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    checked = banners  # every banner check answers; the endpoints checked are recorded
    jobs = jobs_dir(tmp_path)
    write_record(tmp_path, "42", node="c9")
    job = Job(job_id="42", profile="cpu", state=JobState.RUNNING, node="c1")
    job.leases.add("L-1")
    store = RecordStore(str(jobs))
    with capture_logs() as logs, trio.move_on_after(0.3):  # ~30 probes at 10 ms
        await readiness.probe_until_ready(job, store)
    assert checked == []  # never connected to
    assert job.endpoint is None
    wrong = [e for e in logs if e["event"] == "records.wrong_node"]
    assert len(wrong) == 1, wrong
    assert (wrong[0]["record"], wrong[0]["slurm"]) == ("c9", "c1")
    # The hook rewrites its record, now for the node Slurm names: it is used.
    write_record(tmp_path, "42", node="c1", port=22033)
    with trio.fail_after(GUARD):
        await readiness.probe_until_ready(job, store)
    used = cast("Endpoint | None", job.endpoint)  # set by the probe
    assert used is not None
    assert (used.node, used.port) == ("c1", 22033)


async def test_a_multi_node_jobs_record_from_its_first_node_is_used(
    tmp_path: Path, autojump_clock: object, banners: list[Endpoint]
) -> None:
    """squeue names a multi-node job's nodes as a hostlist ("c[1-2]"); the hook, the batch
    script, runs on the first of them and records that node."""
    write_record(jobs_dir(tmp_path).parent, "42", node="c01")
    job = Job(job_id="42", profile="cpu", state=JobState.RUNNING, node="c[01-02],gpu7")
    job.leases.add("L-1")
    with trio.fail_after(GUARD):
        await readiness.probe_until_ready(job, RecordStore(str(tmp_path / "jobs")))
    assert job.hook_error is None
    assert job.endpoint is not None
    assert job.endpoint.node == "c01"


@pytest.mark.parametrize(
    ("node", "hostlist", "inside"),
    [
        ("c1", "c1", True),
        ("c1", "c10", False),
        ("c1", "c[1-2]", True),
        ("c2", "c[1-2]", True),
        ("c3", "c[1-2]", False),
        ("c01", "c[01-02]", True),
        ("c1", "c[01-02]", False),
        ("c7", "c[1-2,5,7-9]", True),
        ("c6", "c[1-2,5,7-9]", False),
        ("gpu7", "c[1-2],gpu7", True),
        ("gpu7-ib", "gpu[6-8]-ib", True),
        ("d1", "c[1-2]", False),
        ("c", "c[1-2]", False),
        ("c1x", "c[1-2]", False),
    ],
)
def test_node_in_hostlist(node: str, hostlist: str, inside: bool) -> None:
    assert in_hostlist(node, hostlist) is inside
