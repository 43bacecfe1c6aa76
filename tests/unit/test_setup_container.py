"""`islurmctl setup --container` and `islurmctl purge`: setup's block in the login node's
config.toml (in, again, out byte for byte), the image check, the prompt, and purge's removal
of islurm's own files and jobs (with a fake Slurm and a private home)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from islurm.config import paths, setupconfig
from islurm.config.settings import parse_settings
from islurm.daemon.ctl import purge, setup_container
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from tests.unit.fakes import FakeSlurm, rows, running_line, squeue_line

IMAGE = "/sc/projects/me/debian12.tar"
USER_TOML = """\
# my settings
[daemon]
poll_busy = 0.5   # fast

[profiles.mine]
sbatch = ["--partition=x"]
"""


@pytest.mark.parametrize("original", [None, "", USER_TOML, USER_TOML.rstrip("\n"), "x = 1\r\n"])
def test_the_block_goes_in_once_and_comes_out_byte_for_byte(original: str | None) -> None:
    once = setupconfig.with_image(original, ["cpu", "gpu"], IMAGE)
    assert once is not None and setupconfig.has_block(once)
    assert setupconfig.with_image(once, ["cpu", "gpu"], IMAGE) == once
    assert setupconfig.without_block(once) == (original or "")
    assert setupconfig.with_image(once, ["cpu"], None) == (original or "")
    if original is not None and original.startswith("#"):
        assert once.startswith(original)  # the user's bytes first, untouched
        settings = parse_settings(once, "config.toml")
        assert settings.profiles["cpu"].container == IMAGE
        assert settings.profiles["gpu"].container == IMAGE
        assert settings.profiles["mine"].container == ""  # not chosen: unchanged
        assert settings.daemon.poll_busy == 0.5


def test_a_changed_image_replaces_the_block_and_no_image_writes_nothing() -> None:
    first = setupconfig.with_image(USER_TOML, ["cpu"], IMAGE)
    second = setupconfig.with_image(first, ["cpu"], "docker://debian:12")
    assert second is not None and IMAGE not in second and second.count(setupconfig.BEGIN) == 1
    assert 'image = "docker://debian:12"' in second
    assert setupconfig.with_image(None, ["cpu"], None) is None
    # A block whose end marker the user deleted is theirs now: left alone.
    broken = USER_TOML + "\n" + setupconfig.BEGIN + '\n[profiles.cpu]\nimage = "/x"\n'
    assert setupconfig.without_block(broken) == broken


def test_quotes_and_backslashes_in_an_image_stay_valid_toml() -> None:
    odd = '/data/my "odd" \\ images/x.sif'
    text = setupconfig.with_image(None, ["cpu"], odd)
    assert text is not None
    assert parse_settings(text, "c.toml").profiles["cpu"].container == odd


def _ask_never(question: str, default: str | None) -> str | None:
    raise AssertionError(f"asked {question!r}")


def test_the_image_argument_is_checked_and_empty_means_none() -> None:
    assert setup_container.choose(IMAGE, None, _ask_never) == IMAGE
    assert setup_container.choose("docker://debian:12", None, _ask_never) == "docker://debian:12"
    assert setup_container.choose("", "/old/image.sif", _ask_never) is None
    for bad, words in [
        ("images/x.sif", "neither an absolute path"),
        ("/a/../b.sif", "'.' or '..'"),
        ("/a/b\n.sif", "control characters"),
        ("docker://deb ian", "white space"),
    ]:
        with pytest.raises(Fail) as caught:
            setup_container.choose(bad, None, _ask_never)
        assert caught.value.exit_code == Exit.USAGE and words in str(caught.value)
        assert str(caught.value).startswith("--container: ")


def test_without_the_flag_the_question_is_asked_with_the_recorded_default() -> None:
    asked: list[tuple[str, str | None]] = []

    def ask(question: str, default: str | None) -> str | None:
        asked.append((question, default))
        return default  # an empty answer keeps the default

    assert setup_container.choose(None, IMAGE, ask) == IMAGE
    assert setup_container.choose(None, None, ask) is None
    assert asked == [(setup_container.QUESTION, IMAGE), (setup_container.QUESTION, None)]


def _info(config: str | None) -> dict[str, Any]:
    return {"config": config, "config_path": "/home/u/.config/islurm/config.toml"}


def test_the_new_remote_config_is_loaded_before_it_is_sent() -> None:
    new = setup_container.new_config(_info(USER_TOML), ["cpu"], IMAGE, False)
    assert new is not None and new.startswith(USER_TOML)
    diff = setup_container.show(_info(USER_TOML), new)
    assert "config.toml (login node)" in diff and f'+image = "{IMAGE}"' in diff
    # The user's own [profiles.cpu]: TOML forbids a second one; we say where the image goes.
    own = '[profiles.cpu]\nsbatch = ["-p", "x"]\n'
    with pytest.raises(Fail) as caught:
        setup_container.new_config(_info(own), ["cpu"], IMAGE, False)
    assert caught.value.exit_code == Exit.CONFIG_INVALID and "its own table" in str(caught.value)
    # A name must be one of the login node's [containers.images].
    with pytest.raises(Fail) as caught:
        setup_container.new_config(_info(USER_TOML), ["cpu"], "debian", False)
    assert caught.value.exit_code == Exit.NOT_FOUND and "[containers.images]" in str(caught.value)
    named = '[containers.images]\ndebian = "/img/debian.tar"\n'
    assert setup_container.new_config(_info(named), ["cpu"], "debian", False)


def test_a_file_setup_created_for_the_image_alone_goes_with_it() -> None:
    created = setup_container.new_config(_info(None), ["cpu"], IMAGE, True)
    assert created is not None and created.startswith(setupconfig.BEGIN)
    assert setup_container.new_config(_info(created), ["cpu"], None, True) is None
    # Not created by setup (it was there, empty): it stays, empty again.
    assert setup_container.new_config(_info(created), ["cpu"], None, False) == ""
    assert setup_container.sha256(None) == "-" and len(setup_container.sha256("")) == 64


def test_purge_keeps_a_config_with_the_users_settings() -> None:
    ours = setupconfig.with_image(None, ["cpu"], IMAGE)
    assert purge.config_after(ours, created=True) is None
    assert purge.config_after(ours, created=False) == ""
    edited = setupconfig.with_image(USER_TOML, ["cpu"], IMAGE)
    assert purge.config_after(edited, created=True) == USER_TOML
    assert purge.config_after(None, created=True) is None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private home with every islurm directory in it (XDG dirs, runtime, tmp)."""
    for var in ("ISLURM_STATE_DIR", "ISLURM_CONFIG", "ISLURM_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in [
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_RUNTIME_DIR", "run"),
    ]:
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(paths, "TMP", str(tmp_path / "tmp"))
    return tmp_path


def _make(path: Path, text: str | None = "x") -> None:
    assert text is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_purge_removes_islurms_files_and_only_those(home: Path) -> None:
    uid = os.getuid()
    fallback = home / "tmp" / f"islurm-{uid}-0123456789ab"
    ours = [
        home / ".local/state/islurm/jobs/42.json",
        home / ".local/state/islurm/log/islurmd.log",
        home / "run/islurm/islurmd.lock",
        home / f"tmp/islurm-{uid}/islurmd.sock",
        fallback / "islurmd.sock",
        home / ".cache/islurm/images/abc.tar",
        home / ".config/islurm/ca/ca",
    ]
    for p in ours:
        _make(p)
    _make(home / ".local/state/islurm/run/socket-dir.node", f"{fallback}\n")
    theirs = [
        home / ".config/islurm/notes.txt",
        home / "tmp/islurm-other/x",
        home / ".cache/pip/x",
        home / ".local/state/other/x",
    ]
    for p in theirs:
        _make(p)
    _make(home / ".config/islurm/config.toml", setupconfig.with_image(USER_TOML, ["cpu"], IMAGE))

    done = purge.remove_files(remove_ca=True, config_created=True, cache_dir="")
    assert [p for p in ours if p.exists()] == []
    assert [p for p in theirs if not p.exists()] == []
    assert (home / ".config/islurm/config.toml").read_text() == USER_TOML
    assert any("your own settings" in k for k in done["kept"])
    assert str(home / ".local/state/islurm") in done["removed"]


def test_purge_removes_a_config_setup_created_and_the_empty_dir(home: Path) -> None:
    _make(home / ".config/islurm/config.toml", setupconfig.with_image(None, ["cpu"], IMAGE))
    _make(home / ".config/islurm/ca/ca")
    done = purge.remove_files(remove_ca=False, config_created=True, cache_dir="/elsewhere/c")
    assert not (home / ".config/islurm/config.toml").exists()
    assert (home / ".config/islurm/ca/ca").exists()  # there before setup: kept, and said
    assert any("SSH CA" in k for k in done["kept"])
    assert any(k.startswith("/elsewhere/c") for k in done["kept"])
    (home / ".config/islurm/ca/ca").unlink()
    (home / ".config/islurm/ca").rmdir()
    purge.remove_files(remove_ca=False, config_created=True, cache_dir="")
    assert not (home / ".config/islurm").exists()


async def test_purge_ends_islurms_jobs_and_waits_for_them(autojump_clock: trio.abc.Clock) -> None:
    foreign = squeue_line("7", name="my-own-job", comment="mine", state="RUNNING")
    slurm = FakeSlurm()
    slurm.script("query", rows(running_line("10"), squeue_line("11", "gpu"), foreign))
    slurm.script("cancel", None)
    slurm.script("query", rows(squeue_line("10", state="COMPLETING"), foreign))
    slurm.script("query", rows(squeue_line("10", state="CANCELLED"), foreign))
    assert await purge.end_jobs(slurm) == ["10", "11"]
    assert slurm.of("cancel")[0].args == (["10", "11"],)
    slurm.check()


async def test_purge_says_when_jobs_do_not_end(autojump_clock: trio.abc.Clock) -> None:
    slurm = FakeSlurm().script("cancel", None).always("query", rows(running_line("10")))
    with pytest.raises(Fail) as caught:
        await purge.end_jobs(slurm)
    assert "did not end" in str(caught.value)


def test_the_agent_writes_the_remote_config_only_if_unchanged(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from islurm.daemon.ctl import remote_agent

    def write(text: str, *args: str) -> dict[str, Any]:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        return remote_agent.write_config(list(args))

    cfg = home / ".config/islurm/config.toml"
    assert remote_agent.config_file() == str(cfg)
    new = setupconfig.with_image(None, ["cpu"], IMAGE)
    assert new is not None
    assert write(new, "-") == {"written": True}
    assert cfg.read_text() == new and cfg.stat().st_mode & 0o777 == 0o600
    with pytest.raises(SystemExit, match="changed while setup ran"):
        write("x = 1\n", "-")  # setup read no file, but there is one now
    cfg.chmod(0o640)  # the user's mode is kept
    edited = new + "# mine\n"
    assert write(edited, setup_container.sha256(new)) == {"written": True}
    assert cfg.read_text() == edited and cfg.stat().st_mode & 0o777 == 0o640
    assert write("", setup_container.sha256(edited), "--remove") == {"written": True}
    assert not cfg.exists()
