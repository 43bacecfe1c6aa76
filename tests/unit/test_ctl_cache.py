"""`islurmctl cache list|prune` on a real cache directory (daemon/ctl/cache.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from islurm.daemon.ctl.main import main
from islurm.daemon.imagecache import ImageCache


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """islurmctl's main() points structlog at the (captured, soon closed) stderr."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_list_and_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_dir = tmp_path / "cache"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[containers]\ncache_dir = "{cache_dir}"\ncache_limit = "1M"\n')
    cache = ImageCache(str(cache_dir), 1 << 20)
    for name, size in (("old.tar", 300_000), ("new.tar", 500_000)):
        src = tmp_path / name
        src.write_bytes(os.urandom(size))
        cache.fetch(str(src))
    os.utime(cache._paths(cache._key(str(tmp_path / "old.tar")))[1], (1, 1))  # used long ago

    assert main(["--config", str(cfg), "cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(i["source"]).name for i in listed["images"]] == ["old.tar", "new.tar"]
    assert listed["limit"] == 1 << 20 and listed["images"][1]["size"] == 500_000

    assert main(["--config", str(cfg), "cache", "list"]) == 0
    text = capsys.readouterr().out
    assert "2 image(s)" in text and text.index("new.tar") < text.index("old.tar")

    assert main(["--config", str(cfg), "cache", "prune", "--limit", "600K"]) == 0
    assert "removed " + str(tmp_path / "old.tar") in capsys.readouterr().out
    assert [Path(e.source).name for e in cache.entries()] == ["new.tar"]

    assert main(["--config", str(cfg), "cache", "prune", "--limit", "lots"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["--config", str(cfg), "cache", "prune", "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["removed"]) == 1
    assert cache.entries() == []
