"""Queue awareness: the parsers against output recorded on Slurm 22.05, reason sentences, the
shared cached view (Slurm calls counted), fallback choice, and the profile keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import trio

from islurm.config.settings import ConfigError, load_settings
from islurm.daemon import availability, fallback
from islurm.daemon.availability import Availability, View
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.progress import progress_params
from islurm.daemon.slurm import fit
from islurm.daemon.slurm.capacity import parse_sinfo_nodes, parse_test_only, partitions
from islurm.daemon.slurm.client import SlurmError
from islurm.daemon.slurm.parse import SlurmParseError
from islurm.daemon.slurm.reasons import explain
from tests.unit.fakes import FakeSlurm

# Recorded on the test cluster (Slurm 22.05.8), islurmtest2 holding 15 of 16 CPUs and 3 of 4
# GPUs on each node: `sbatch --test-only` (stderr) and `sinfo -h -N -O SINFO_FORMAT`.
LATER = (
    "sbatch: Job 153 to start at 2026-12-01T02:02:44 using 2 processors on nodes c1 "
    "in partition interactive"
)
NOW = (
    "sbatch: Job 154 to start at 2026-12-01T01:52:46 using 1 processors on nodes c1 "
    "in partition interactive"
)
BAD_PARTITION = (
    "sbatch: error: invalid partition specified: nosuch\n"
    "allocation failure: Invalid partition name specified"
)
SINFO_BUSY = """\
c1|gpu|15/1/0/16|131072|1024|gpu:4|gpu:3|mix
c1|interactive*|15/1/0/16|131072|1024|gpu:4|gpu:3|mix
c2|gpu|15/1/0/16|131072|1024|gpu:4|gpu:3|mix
c2|interactive*|15/1/0/16|131072|1024|gpu:4|gpu:3|mix
"""
# Recorded too: a node not responding ("*"), draining, completing; GresUsed without IDX.
SINFO_STATES = """\
c1|interactive*|16/0/0/16|131072|1124|gpu:4|gpu:2|alloc
c2|interactive*|15/1/0/16|131072|1024|gpu:4|gpu:0|mix*
c2|gpu|15/0/1/16|131072|1024|gpu:4|gpu:0|drng
c1|gpu|0/16/0/16|131072|0|gpu:4|gpu:0|comp
"""
# Typed GPUs as sites configure them; a drained node adds nothing free.
SINFO_TYPED = """\
g1|gpu*|4/60/0/64|512000|8000|gpu:a100:4(S:0-1),gpu:v100:2(S:0)|gpu:a100:2(IDX:0,2),gpu:v100:0(IDX:N/A)|mix
g2|gpu*|0/64/0/64|512000|0|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|drain
g3|gpu*|0/0/64/64|512000|0|gpu:a100:4(S:0-1)|gpu:a100:0(IDX:N/A)|idle*
"""
WHEN = datetime(2026, 12, 1, 1, 52, 50)


def test_test_only_verdicts_from_recorded_output() -> None:
    later, now = parse_test_only(LATER), parse_test_only(NOW)
    assert (later.start, later.cpus, later.nodes, later.partition) == (
        "2026-12-01T02:02:44",
        2,
        "c1",
        "interactive",
    )
    assert not later.starts_now(WHEN) and now.starts_now(WHEN)
    with pytest.raises(SlurmParseError, match="Invalid partition"):
        parse_test_only(BAD_PARTITION)


def test_sinfo_free_capacity_per_node_and_partition() -> None:
    busy = parse_sinfo_nodes(SINFO_BUSY)
    c1 = busy[1]
    assert (c1.node, c1.partition, c1.default, c1.idle_cpus, c1.free_mem) == (
        "c1",
        "interactive",
        True,
        1,
        130048,
    )
    assert c1.free_gpus == {"gpu": 1} and c1.usable
    summary = partitions(busy)
    assert {n: (p.idle_cpus, p.total_cpus, p.free_gpus) for n, p in summary.items()} == {
        "interactive": (2, 32, {"gpu": 2}),
        "gpu": (2, 32, {"gpu": 2}),
    }
    assert [n.usable for n in parse_sinfo_nodes(SINFO_STATES)] == [True, False, False, False]
    typed = partitions(parse_sinfo_nodes(SINFO_TYPED))["gpu"]
    assert (typed.nodes, typed.idle_cpus, typed.total_cpus) == (3, 60, 192)
    assert typed.free_gpus == {"gpu:a100": 2, "gpu:v100": 2}
    with pytest.raises(SlurmParseError):
        parse_sinfo_nodes("c1|gpu|15/1/0|131072|0|gpu:4|gpu:3|mix\n")


@pytest.mark.parametrize(
    ("sbatch", "want"),
    [
        (
            ["--partition=interactive", "-c", "2", "--mem=4G", "-t", "8:00:00"],
            ("interactive", 2, 4096, {}),
        ),
        (["-p", "gpu", "--gres=gpu:a100:1", "--cpus-per-task=4"], ("gpu", 4, 0, {"gpu:a100": 1})),
        (["--ntasks=2", "-c2", "--mem-per-cpu=100M", "--gpus=2"], ("", 4, 400, {"gpu": 2})),
        (["--constraint=bigmem"], None),
        (["--mem=0"], None),
        (["--gres=tmp:10G"], None),
        (["--nodes=2"], None),
        (["--exclusive"], None),
    ],
)
def test_sbatch_options_read_as_a_request(sbatch: list[str], want: object) -> None:
    req = fit.request(sbatch)
    got = None if req is None else (",".join(req.partitions), req.cpus, req.mem, req.gpus)
    assert got == want


def test_fit_check_against_free_nodes() -> None:
    busy = parse_sinfo_nodes(SINFO_BUSY)
    small = fit.request(["--partition=interactive", "--cpus-per-task=1", "--mem=256M"])
    two = fit.request(["--partition=interactive", "--cpus-per-task=2", "--mem=512M"])
    gpu = fit.request(["--partition=gpu", "--gres=gpu:1", "--cpus-per-task=1"])
    gpu2 = fit.request(["--partition=gpu", "--gres=gpu:2", "--cpus-per-task=1"])
    default = fit.request(["--cpus-per-task=1"])
    assert small and two and gpu and gpu2 and default
    assert fit.fits(small, busy) is not None and fit.fits(two, busy) is None
    assert fit.fits(gpu, busy) is not None and fit.fits(gpu2, busy) is None
    found = fit.fits(default, busy)
    assert found is not None and found.partition == "interactive"
    big = fit.request(["-p", "interactive", "--mem=200G"])
    assert big is not None and fit.fits(big, busy) is None
    assert fit.fits(small, parse_sinfo_nodes(SINFO_STATES)) is None  # none usable
    typed = parse_sinfo_nodes(SINFO_TYPED)
    v100 = fit.request(["-p", "gpu", "--gres=gpu:v100:2"])
    a100 = fit.request(["-p", "gpu", "--gres=gpu:a100:3"])
    assert v100 and a100 and fit.fits(v100, typed) is not None and fit.fits(a100, typed) is None


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("Resources", "busy; it starts when enough CPUs, memory or GPUs free up (Resources)"),
        ("Priority", "higher priority are ahead of it in the queue (Priority)"),
        ("QOSMaxJobsPerUserLimit", "as many jobs as your QOS allows (QOSMaxJobsPerUserLimit)"),
        ("ReqNodeNotAvail, UnavailableNodes:c1", "(ReqNodeNotAvail: UnavailableNodes:c1)"),
        ("SomethingNew", "Slurm says (SomethingNew)"),
        ("None", ""),
    ],
)
def test_reason_codes_become_sentences_with_the_code_kept(code: str, words: str) -> None:
    said = explain(code)
    assert said.endswith(words) if words else said == ""


CONFIG = """\
[profiles.small]
sbatch = ["--partition=interactive", "--cpus-per-task=1"]
[profiles.twin]
sbatch = ["--partition=interactive", "--cpus-per-task=1"]
[profiles.big]
sbatch = ["--partition=interactive", "--cpus-per-task=2"]
fallbacks = ["small"]
fallback_after = "5s"
"""


def _settings(tmp_path: Path, text: str = CONFIG) -> Callable[[], object]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    settings = load_settings(str(cfg))
    return lambda: settings


def _answer(options: list[str]) -> str | SlurmError:
    if "--cpus-per-task=2" in options:
        return LATER
    if "--partition=nosuchpartition" in options:
        return SlurmError(["sbatch"], 1, "", BAD_PARTITION)
    return NOW


async def test_one_refresh_for_all_profiles_and_all_callers_then_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(availability, "ASKS", 100)
    # --test-only answers "later" even for what fits (as it does once the backfill scheduler
    # planned the user's own pending job): the fit check against sinfo decides, not it.
    slurm = FakeSlurm().always("test_submit", LATER)
    slurm.always("nodes", parse_sinfo_nodes(SINFO_BUSY))
    avail = Availability(slurm, _settings(tmp_path), JobTable(), clock=lambda: WHEN)  # type: ignore[arg-type]
    views: list[View] = []

    async def ask() -> None:
        views.append(await avail.get())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask)
    asked = [tuple(c.args[0]) for c in slurm.of("test_submit")]
    # 20 callers, 1 refresh, 1 sinfo; --test-only only for what does not fit, once per options
    assert len(slurm.of("nodes")) == 1 and avail.refreshes == 1
    assert all(v is views[0] for v in views) and len(asked) == len(set(asked))
    assert ("--partition=interactive", "--cpus-per-task=1") not in asked
    view = views[0]
    assert view.profiles["small"].starts_now and view.profiles["twin"].starts_now
    assert view.profiles["small"].by == "sinfo" and view.profiles["small"].nodes == "c1"
    assert view.profiles["big"].starts_now is False and view.profiles["big"].by == "sinfo"
    assert view.profiles["big"].start_time == "2026-12-01T02:02:44"
    assert view.startable("twin", first=("small",))[0] == "small"
    assert view.as_json()["partitions"][1]["idle_cpus"] == 2
    calls = len(slurm.calls)
    await avail.get()
    assert len(slurm.calls) == calls  # cached
    # A refresh within ESTIMATE_AGE asks sinfo again but no --test-only.
    await avail.get(max_age=0)
    assert len(slurm.of("nodes")) == 2 and len(slurm.of("test_submit")) == len(asked)


async def test_test_only_calls_per_refresh_are_bounded(tmp_path: Path) -> None:
    text = CONFIG + "".join(
        f'[profiles.p{i}]\nsbatch = ["--partition=interactive", "--cpus-per-task={i + 3}"]\n'
        for i in range(20)
    )
    slurm = FakeSlurm().always("test_submit", LATER).always("nodes", parse_sinfo_nodes(SINFO_BUSY))
    avail = Availability(slurm, _settings(tmp_path, text), JobTable(), clock=lambda: WHEN)  # type: ignore[arg-type]
    view = await avail.get()
    assert len(slurm.of("test_submit")) == availability.ASKS
    assert all(v.starts_now is False for n, v in view.profiles.items() if n.startswith("p"))
    await avail.get(max_age=0)  # the next refresh asks the ones not asked yet
    assert len(slurm.of("test_submit")) == 2 * availability.ASKS


async def test_a_failing_question_is_that_profiles_error_not_the_views(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(availability, "ASKS", 100)
    slurm = FakeSlurm().always("test_submit", _answer)
    slurm.always("nodes", SlurmError(["sinfo"], 1, "", "sinfo: boom"))
    text = CONFIG + '[profiles.bad]\nsbatch = ["--partition=nosuchpartition"]\n'
    avail = Availability(slurm, _settings(tmp_path, text), JobTable(), clock=lambda: WHEN)  # type: ignore[arg-type]
    view = await avail.get()
    assert view.profiles["bad"].starts_now is None
    assert "Invalid partition" in view.profiles["bad"].error
    # without sinfo, --test-only decides
    assert view.error == "sinfo failed: sinfo: boom" and view.profiles["small"].starts_now
    assert view.profiles["small"].by == "test-only"


def _view(**starts: bool) -> View:
    from islurm.daemon.availability import Verdict

    return View(
        0.0, "", {n: Verdict(n, s, start_time="" if s else "T") for n, s in starts.items()}, {}
    )


def test_fallback_only_after_its_delay_only_to_one_that_starts_now(tmp_path: Path) -> None:
    big = _settings(tmp_path)().profiles["big"]  # type: ignore[attr-defined]
    job = Job(job_id="1", profile="big")
    view = _view(big=False, small=True)
    assert fallback.choose(big, job, 4.9, view, set()) == ""
    assert fallback.choose(big, job, 5.0, view, set()) == "small"
    assert fallback.choose(big, job, 9.0, _view(big=False, small=False), set()) == ""
    assert fallback.choose(big, job, 9.0, view, {"small"}) == ""  # never back and forth
    assert fallback.choose(big, job, 9.0, None, set()) == ""
    assert fallback.wait_limit(big, 3.0, 30.0) == 2.0
    assert fallback.wait_limit(big, 6.0, 30.0) == 30.0


def test_progress_says_why_when_and_what_starts_now() -> None:
    job = Job(job_id="12", profile="big", reason="Resources", start_time="N/A")
    params = progress_params(job, None, 3.0, _view(big=False, small=True, twin=True), ("twin",))
    assert params["starts_now"] == ["twin", "small"] and params["estimated_start"] == "T"
    assert params["message"] == (
        "job 12 (big) pending; waiting because the nodes that fit this job are busy; it starts "
        "when enough CPUs, memory or GPUs free up (Resources); estimated start T; would start "
        "now: twin (ssh slurm-twin), small (ssh slurm-small) [3s]"
    )


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ('fallbacks = ["nope"]', "profiles.big.fallbacks: 'nope' is not another profile"),
        ('fallbacks = ["big"]', "profiles.big.fallbacks: 'big' is not another profile"),
        ("keep_pending = 1", "profiles.big.keep_pending: expected true or false"),
        ('modules = ["cuda 12"]', "profiles.big.modules: expected a list of names"),
        ('fallback_after = "soon"', "profiles.big.fallback_after: expected seconds"),
    ],
)
def test_bad_queue_keys_are_refused_with_file_line_key(
    tmp_path: Path, body: str, complaint: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[profiles.big]\nsbatch = ["--cpus-per-task=2"]\n{body}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(str(cfg))
    assert f"{cfg}:3: {complaint}" in str(caught.value)


def test_queue_keys_load(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG + 'keep_pending = true\nmodules = ["cuda/12.4", "gcc/13"]\n')
    big = load_settings(str(cfg)).profiles["big"]
    assert (big.fallbacks, big.fallback_after, big.keep_pending, big.modules) == (
        ("small",),
        5.0,
        True,
        ("cuda/12.4", "gcc/13"),
    )
