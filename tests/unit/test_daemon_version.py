"""daemon/version.py: the wheel's METADATA read directly, importlib.metadata otherwise."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from islurm.daemon import version


def _dist(site: Path, name: str, text: str) -> None:
    d = site / name
    d.mkdir(parents=True)
    (d / "METADATA").write_text(text)


def test_the_wheels_metadata_names_the_version(tmp_path: Path) -> None:
    _dist(
        tmp_path,
        "islurm-1.2.3.dist-info",
        "Metadata-Version: 2.3\nName: islurm\nVersion: 1.2.3\n\nVersion: 9\n",
    )
    assert version.from_wheel(str(tmp_path)) == "1.2.3"


def test_a_version_in_the_body_or_none_at_all_is_not_taken(tmp_path: Path) -> None:
    _dist(tmp_path, "islurm-1.dist-info", "Name: islurm\n\nVersion: 9\n")
    assert version.from_wheel(str(tmp_path)) is None


def test_two_installs_side_by_side_are_left_to_importlib(tmp_path: Path) -> None:
    _dist(tmp_path, "islurm-1.0.dist-info", "Version: 1.0\n")
    _dist(tmp_path, "islurm-2.0.dist-info", "Version: 2.0\n")
    assert version.from_wheel(str(tmp_path)) is None
    assert version.from_wheel(str(tmp_path / "nowhere")) is None


def test_glob_characters_in_the_path_are_literal(tmp_path: Path) -> None:
    site = tmp_path / "[x]*"
    _dist(site, "islurm-0.5.dist-info", "Version: 0.5\n")
    assert version.from_wheel(str(site)) == "0.5"


def test_this_install_agrees_with_importlib_metadata() -> None:
    assert metadata.version("islurm") == version.VERSION
