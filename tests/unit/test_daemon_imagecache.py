"""The image cache on real files: copy once, verify, re-copy on change, never use a half copy,
evict the least recently used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from islurm.daemon import imagecache
from islurm.daemon.imagecache import ImageCache, ImageError, under_roots


def _image(path: Path, size: int, fill: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(fill * size)
    return path


def test_eight_concurrent_fetches_copy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _image(tmp_path / "projects" / "a.sqsh", 3 << 20)
    cache = ImageCache(str(tmp_path / "cache"), 1 << 30)
    copies = []
    real_copy = ImageCache._copy

    def counting(self: ImageCache, *args: object) -> tuple[str, list[int]]:
        copies.append(1)
        return real_copy(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageCache, "_copy", counting)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.fetch(str(src)))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(copies) == 1
    assert len(set(results)) == 1 and Path(results[0]).read_bytes() == src.read_bytes()


def test_a_changed_source_is_copied_again(tmp_path: Path) -> None:
    src = _image(tmp_path / "p" / "img.sif", 1000, b"a")
    cache = ImageCache(str(tmp_path / "cache"), 1 << 30)
    first = cache.fetch(str(src))
    assert cache.lookup(str(src)) == first
    _image(src, 1000, b"b")
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.lookup(str(src)) is None
    assert Path(cache.fetch(str(src))).read_bytes() == b"b" * 1000


def test_missing_and_unreadable_images_name_path_and_reason(tmp_path: Path) -> None:
    cache = ImageCache(str(tmp_path / "cache"), 1 << 30)
    with pytest.raises(ImageError, match=r"/nope\.sqsh does not exist"):
        cache.fetch(str(tmp_path / "nope.sqsh"))
    locked = _image(tmp_path / "locked.sqsh", 10)
    locked.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ImageError, match="is not readable"):
            cache.fetch(str(locked))


def test_a_copy_killed_midway_is_never_used(tmp_path: Path) -> None:
    src = tmp_path / "p" / "big.sqsh"
    src.parent.mkdir()
    with open(src, "wb") as f:
        f.truncate(3 << 30)  # sparse: reading it is slow enough to be caught midway
    root = tmp_path / "cache"
    code = (
        "import sys; from islurm.daemon.imagecache import ImageCache; "
        "ImageCache(sys.argv[1], 1 << 40).fetch(sys.argv[2])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), str(src)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            temps = list(root.glob(".tmp-*")) if root.exists() else []
            if temps and temps[0].stat().st_size > 0:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the copy never started")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    cache = ImageCache(str(root), 1 << 40)
    assert cache.lookup(str(src)) is None and cache.entries() == []
    assert list(root.glob(".tmp-*"))  # left behind by the killed copy ...
    small = _image(tmp_path / "p" / "small.sqsh", 10)
    cache.fetch(str(small))
    assert not list(root.glob(".tmp-*"))  # ... and removed by the next copy


def test_the_size_limit_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = ImageCache(str(tmp_path / "cache"), 2500)
    a = _image(tmp_path / "p" / "a.sif", 1000)
    b = _image(tmp_path / "p" / "b.sif", 1000)
    c = _image(tmp_path / "p" / "c.sif", 1000)
    cache.fetch(str(a))
    cache.fetch(str(b))
    old = time.time() - 100
    os.utime(cache.fetch(str(b)) + ".json", (old, old))  # b: used longest ago
    assert cache.lookup(str(a))  # a: used now
    cache.fetch(str(c))
    kept = {Path(e.source).name for e in cache.entries()}
    assert kept == {"a.sif", "c.sif"}
    assert [Path(e.source).name for e in cache.prune(limit=0)] == ["a.sif", "c.sif"]


def test_only_images_under_project_roots_are_cached(tmp_path: Path) -> None:
    assert under_roots("/sc/projects/x/img.sqsh", ["/sc/projects"])
    assert not under_roots("/sc/projectsX/img.sqsh", ["/sc/projects"])
    assert not under_roots("docker://debian", ["/sc/projects"])
    assert imagecache.default_dir().endswith("/islurm/images")
