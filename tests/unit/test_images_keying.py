"""Per-connect images (config/images.py) and jobs keyed by (profile, image): the argument's
rules, the image key in the job's Slurm name and comment (old comments still read), the
shim's --image, the ssh hosts for named images, and the daemon's one job per profile+image."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from islurm.config.images import MAX_IMAGE, ImageArgError, check_image, image_key
from islurm.config.settings import ConfigError, Profile, load_settings
from islurm.config.sshconfig import ProxySpec, render
from islurm.daemon import gpuswap as swap
from islurm.daemon.errors import RpcFault
from islurm.daemon.jobs import Job, JobTable
from islurm.daemon.slurm.parse import parse_squeue
from islurm.daemon.slurm.states import JobState
from islurm.daemon.slurm.submission import sbatch_options
from islurm.proxyshim.main import UsageError, parse_args
from tests.unit.fakes import HOSTILE_DIR, FakeSlurm, Notes, live_daemon, squeue_line, write_record

pytestmark = pytest.mark.usefixtures("banners")

KEY = image_key("/sc/projects/me/debian.tar")


@pytest.mark.parametrize(
    "good", ["/sc/projects/me/debian.tar", "/a b/x.sif", "docker://debian:12", "deb12.x", "x"]
)
def test_good_images_pass(good: str) -> None:
    assert check_image(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("/x/\x1b[31m.sif", "control characters"),
        ("/x\n/y", "control characters"),
        ("/sc/../etc/x.tar", "'..'"),
        ("/sc/./x.tar", "'.'"),
        ("images/x.tar", "neither an absolute path"),
        ("-rf", "neither an absolute path"),
        ("://x", "not scheme://name"),
        ("docker://deb ian", "white space"),
        ("/" + "a" * MAX_IMAGE, "longer than"),
    ],
)
def test_bad_images_are_refused_with_the_rule(bad: str, says: str) -> None:
    with pytest.raises(ImageArgError, match=None) as info:
        check_image(bad)
    assert says in str(info.value)


def test_image_key_is_short_stable_and_empty_for_none() -> None:
    assert image_key("") == ""
    assert len(KEY) == 12 and image_key("/sc/projects/me/debian.tar") == KEY
    assert image_key("/sc/projects/me/ubuntu.tar") != KEY


def test_a_job_with_an_image_carries_its_key_in_name_and_comment() -> None:
    opts = sbatch_options(Profile("cpu", ("-p", "x")), log_path="l", workdir="w", image_key=KEY)
    assert f"--job-name=islurm-cpu.{KEY}" in opts
    assert f"--comment=islurm:v1:cpu:image={KEY}" in opts
    plain = sbatch_options(Profile("cpu", ()), log_path="l", workdir="w")
    assert "--job-name=islurm-cpu" in plain and "--comment=islurm:v1:cpu" in plain


def test_squeue_rows_give_profile_and_image_key_old_comments_included() -> None:
    [old, new, forged, badkey] = parse_squeue(
        squeue_line("1", "cpu")
        + "\n"
        + squeue_line("2", name=f"islurm-cpu.{KEY}", comment=f"islurm:v1:cpu:image={KEY}")
        + "\n"
        + squeue_line("3", name="islurm-cpu", comment=f"islurm:v1:cpu:image={KEY}")
        + "\n"
        + squeue_line("4", name="islurm-cpu.zz", comment="islurm:v1:cpu:image=zz")
        + "\n"
    )
    assert (old.profile, old.image_key) == ("cpu", "")
    assert (new.profile, new.image_key) == ("cpu", KEY)
    assert forged.profile is None and badkey.profile is None


async def test_the_table_never_hands_one_images_job_to_another() -> None:
    table = JobTable()
    table.add(Job("7", "cpu", image_key=KEY, state=JobState.RUNNING))
    assert table.current("cpu", KEY) is not None
    assert table.current("cpu", image_key("/other.sif")) is None
    assert table.current("cpu") is None


def test_the_shim_takes_image_and_refuses_a_bad_one() -> None:
    assert parse_args(["--image", "/x/deb.tar", "cpu"]).image == "/x/deb.tar"
    assert parse_args(["--image=deb", "cpu"]).image == "deb"
    assert parse_args(["cpu"]).image is None
    with pytest.raises(UsageError, match="--image: the image path"):
        parse_args(["--image", "/x/../y", "cpu"])
    with pytest.raises(UsageError, match="control characters"):
        parse_args(["--image", "/x\x07", "cpu"])


def test_ssh_config_has_a_host_per_profile_and_named_image() -> None:
    text = render(["cpu", "gpu"], ProxySpec(login="login"), "/k", images=["deb12"])
    hosts = [ln.split()[1] for ln in text.splitlines() if ln.startswith("Host ")]
    assert hosts == ["slurm-cpu", "slurm-gpu", "slurm-cpu+deb12", "slurm-gpu+deb12"]
    block = text.split("Host slurm-cpu+deb12\n")[1].split("\n\n")[0]
    assert "islurm-proxy --image deb12 cpu" in block


def test_named_images_are_read_and_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[containers.images]\ndeb12 = "/sc/d.tar"\n')
    assert load_settings(str(cfg)).containers.images == {"deb12": "/sc/d.tar"}
    cfg.write_text('[containers.images]\ndeb12 = "relative/d.tar"\n')
    with pytest.raises(ConfigError, match=r"containers\.images\.deb12"):
        load_settings(str(cfg))
    cfg.write_text('[containers.images]\n"Bad Name" = "/d.tar"\n')
    with pytest.raises(ConfigError, match="image names use"):
        load_settings(str(cfg))


def _cluster(tmp_path: Path) -> tuple[FakeSlurm, list[list[str]]]:
    """Each sbatch gets the next id and is at once RUNNING with a readiness record."""
    submitted: list[list[str]] = []

    def squeue() -> list[object]:
        text = ""
        for n, opts in enumerate(submitted):
            name = next(o.split("=", 1)[1] for o in opts if o.startswith("--job-name="))
            comment = next(o.split("=", 1)[1] for o in opts if o.startswith("--comment="))
            text += squeue_line(
                str(500 + n), "x", "RUNNING", name=name, comment=comment, nodes="node-1"
            )
            text += "\n"
        return list(parse_squeue(text))

    def submit(options: list[str], script: str) -> str:
        job_id = str(500 + len(submitted))
        submitted.append(options)
        write_record(tmp_path / HOSTILE_DIR, job_id, node="node-1", port=22000 + len(submitted))
        return job_id

    return FakeSlurm().always("query", squeue).always("submit", submit), submitted


async def test_one_job_per_profile_and_image(tmp_path: Path, autojump_clock: object) -> None:
    slurm, submitted = _cluster(tmp_path)
    config = '[containers.images]\ndeb = "/img/deb.sif"\n'
    async with live_daemon(tmp_path, slurm, config) as (daemon, _state, nursery):
        asked = [None, "/img/deb.sif", "/img/deb.sif", "/img/ubuntu.sif", None]
        notes = [Notes() for _ in asked]
        for image, note in zip(asked, notes, strict=True):
            lease = daemon.manager.new_lease("cpu", image)
            nursery.start_soon(daemon.manager.acquire, lease, note)
        with trio.fail_after(60):
            ready = [await n.wait_for("session.ready") for n in notes]
        jobs = [r["job_id"] for r in ready]
        assert jobs[0] == jobs[4] and jobs[1] == jobs[2]
        assert len({jobs[0], jobs[1], jobs[3]}) == 3
        assert len(submitted) == 3
        assert daemon.manager.jobs.resolve_image("deb") == "/img/deb.sif"
        with pytest.raises(
            RpcFault, match=r"unknown image name 'nope' \(\[containers\] images: deb"
        ):
            daemon.manager.jobs.resolve_image("nope")
        listed = {j["job_id"]: j["container"] for j in daemon.manager.jobs.describe()}
        assert listed[jobs[1]] == "/img/deb.sif" and listed[jobs[0]] == ""
        scripts = [" ".join(o) for o in submitted]
        assert sum(f"image={image_key('/img/deb.sif')}" in s for s in scripts) == 1
        nursery.cancel_scope.cancel()


async def test_gpuswap_keeps_the_cpu_sessions_image(tmp_path: Path, autojump_clock: object) -> None:
    slurm, submitted = _cluster(tmp_path)
    slurm.always("constraints", [])
    async with live_daemon(tmp_path, slurm) as (daemon, _state, nursery):
        manager, cpu_notes, gpu_notes = daemon.manager, Notes(), Notes()
        nursery.start_soon(manager.acquire, manager.new_lease("cpu", "/img/x.sif"), cpu_notes)
        with trio.fail_after(60):
            await cpu_notes.wait_for("session.ready")
        source = swap.source_job(manager, "cpu")
        assert source is not None and swap.kept_image(manager, source) == "/img/x.sif"
        lease = manager.new_lease("gpu", swap.kept_image(manager, source))
        nursery.start_soon(swap.gpuswap, manager, lease, source, False, True, gpu_notes)
        with trio.fail_after(60):
            await gpu_notes.wait_for("session.ready")
        assert f"--comment=islurm:v1:gpu:image={image_key('/img/x.sif')}" in submitted[-1]
        # A job adopted from another daemon whose image this config does not name: say so.
        stranger = Job("9", "cpu", image_key=image_key("/elsewhere.sif"), state=JobState.RUNNING)
        with pytest.raises(RpcFault, match="--image, or --no-image"):
            swap.kept_image(manager, stranger)
        assert manager.jobs.describe()[0]["container"] == "/img/x.sif"
        nursery.cancel_scope.cancel()
