"""Self-update's pure parts and its filesystem switch: versions, tags, policy, generations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from islurm.config import installs
from islurm.config.settings import UpdateSettings, load_settings
from islurm.daemon.update import generations as gens
from islurm.daemon.update import policy as pol
from islurm.daemon.update import versions as v

LS_REMOTE = (
    "aaa\trefs/tags/v0.1.0\n"
    "bbb\trefs/tags/v0.2.0\n"
    "ccc\trefs/tags/v0.2.0^{}\n"
    "ddd\trefs/tags/v0.10.0\n"
    "eee\trefs/tags/v0.11.0-rc.1\n"
    "fff\trefs/tags/nightly\n"
    "ggg\trefs/heads/main\n"
)


def test_versions_order_as_semver_not_as_text() -> None:
    order = ["0.1.0", "0.2.0", "0.10.0-rc.1", "0.10.0-rc.2", "0.10.0-rc.10", "0.10.0", "1.0.0"]
    parsed = [v.parse(t) for t in order]
    assert all(p is not None for p in parsed)
    assert sorted(parsed, key=lambda p: p.key() if p else ()) == parsed
    assert v.parse("v1.2") is None and v.parse("1.2.3rc1") is None
    assert str(v.parse("v1.2.3-rc.1")) == "1.2.3-rc.1"


def test_releases_from_ls_remote_peeled_and_filtered() -> None:
    tags = v.parse_ls_remote(LS_REMOTE)
    assert tags["v0.2.0"] == "ccc"  # the commit, not the annotated tag object
    assert "main" not in tags
    rel = v.releases(tags, "v*")
    assert [t.name for t in rel] == ["v0.1.0", "v0.2.0", "v0.10.0"]  # no rc, no nightly
    assert [t.name for t in v.releases(tags, "v*", prereleases=True)][-1] == "v0.11.0-rc.1"
    assert [t.name for t in v.newer_than("0.2.0", rel)] == ["v0.10.0"]
    assert v.pick(rel, None) is rel[-1]
    assert v.pick(rel, "0.1.0") is rel[0] and v.pick(rel, "v0.2.0") is rel[1]
    assert v.pick(rel, "9.9.9") is None


def test_policy_site_wins_and_the_opt_out_file_turns_it_off(tmp_path: Path) -> None:
    user = UpdateSettings(mode="auto", channel="file:///r.git#rel-*", interval=3600)
    p = pol.resolve(user, None, noauto=False)
    assert (p.mode, p.remote, p.tags, p.interval, p.network) == (
        "auto", "file:///r.git", "rel-*", 3600, True
    )  # fmt: skip
    site = tmp_path / "site.toml"
    site.write_text('[update]\nmode = "check-only"\ninterval = "7d"\npin = "0.2.0"\n')
    s = pol.load_site(str(site))
    assert s is not None
    p = pol.resolve(user, s, noauto=False)
    assert (p.mode, p.interval, p.pin) == ("check-only", 7 * 86400, "0.2.0")
    assert "set by the site" in p.reason and str(site) in p.reason
    p = pol.resolve(user, s, noauto=True)
    assert (p.mode, p.network) == ("off", False) and "noauto" in p.reason
    assert pol.split_channel("") == ("", "v*")


def test_no_channel_means_no_check_and_says_how_to_set_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ISLURM_CONFIG", str(tmp_path / "config.toml"))
    p = pol.resolve(UpdateSettings(mode="auto", channel=""), None, noauto=False)
    assert (p.mode, p.configured, p.network) == ("auto", False, False)
    assert "no channel is configured" in p.reason and str(tmp_path / "config.toml") in p.reason
    site = pol.Site("/etc/islurm/site.toml", channel="file:///site.git")
    p = pol.resolve(UpdateSettings(mode="auto", channel=""), site, noauto=False)
    assert (p.remote, p.network) == ("file:///site.git", True)  # the site may set it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[update]\nmode = "sometimes"\n', "update.mode"),
        ("[update]\nbranch = 'main'\n", "allows only"),
        ("[update\n", "site.toml"),
    ],
)
def test_a_bad_site_file_is_refused_and_means_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(text)
    with pytest.raises(pol.SiteError, match=message):
        pol.load_site(str(site))
    monkeypatch.setenv(pol.SITE_ENV, str(site))
    p = pol.current_policy(UpdateSettings())
    assert p.mode == "off" and "bad site file" in p.reason


def test_legacy_keys_map_onto_mode_and_channel(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[update]\nauto_update = false\nremote = "file:///x.git"\n')
    s = load_settings(str(cfg)).update
    assert (s.mode, s.channel) == ("off", "file:///x.git")


def _generation(root: Path, name: str, complete: bool = True) -> None:
    (root / "generations" / name / "venv" / "bin").mkdir(parents=True)
    if complete:
        gens.write_marker(str(root), name, {"version": name.split("-")[0]})


def test_switch_is_atomic_refuses_incomplete_and_prune_keeps_two(tmp_path: Path) -> None:
    root = tmp_path / "share" / "islurm"
    root.mkdir(parents=True)
    gens.write_record(str(root), "make", str(tmp_path), "/usr/bin/python3")
    for name in ("0.1.0-a", "0.2.0-b", "0.3.0-c"):
        _generation(root, name)
    _generation(root, "0.4.0-d", complete=False)
    with pytest.raises(ValueError, match="incomplete"):
        gens.switch(str(root), installs.CURRENT, "0.4.0-d")
    gens.switch(str(root), installs.CURRENT, "0.2.0-b")
    gens.switch(str(root), installs.PREVIOUS, "0.1.0-a")
    assert os.readlink(root / "current") == "generations/0.2.0-b"
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []
    removed = gens.prune(str(root), ("0.2.0-b", "0.1.0-a"))
    assert sorted(removed) == ["0.3.0-c", "0.4.0-d"]
    assert gens.names(str(root)) == ["0.1.0-a", "0.2.0-b"]


def test_detect_and_through_current(tmp_path: Path) -> None:
    root = tmp_path / "share" / "islurm"
    root.mkdir(parents=True)
    _generation(root, "0.2.0-b")
    python = root / "generations" / "0.2.0-b" / "venv" / "bin" / "python"
    python.touch()
    assert gens.detect(str(python)).kind == "pip"  # no install record: not ours
    gens.write_record(str(root), "make", str(tmp_path), "/usr/bin/python3")
    gens.switch(str(root), installs.CURRENT, "0.2.0-b")
    inst = gens.detect(str(python))
    assert (inst.kind, inst.generation, inst.python, inst.owned) == (
        "make", "0.2.0-b", "/usr/bin/python3", True
    )  # fmt: skip
    assert installs.through_current(str(python)) == str(root / "current/venv/bin/python")
    assert installs.through_current("/usr/bin/python3") == "/usr/bin/python3"
    assert gens.detect("/home/u/.local/pipx/venvs/islurm/bin/python").instead() == (
        "pipx upgrade islurm"
    )
