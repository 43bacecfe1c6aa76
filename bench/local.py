"""The shim alone, on this machine's loopback: start-up to first byte, and throughput, each
against socat (and the interpreter's floor), with a fake islurmd (bench/fakes.py) that answers
session.acquire at once. stdin/stdout are pipes, as OpenSSH hands a ProxyCommand."""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.env import REPO, log
from bench.fakes import SINK_BANNER

CHUNK = 1 << 20
GUARD = 120.0
Start = Callable[[], "subprocess.Popen[bytes]"]


class Fakes:
    """The fake daemon and the loopback servers, stopped by pid."""

    def __init__(self, workdir: str, total: int) -> None:
        d = tempfile.mkdtemp(dir=workdir)  # 0700: the shim refuses a dir others can enter
        self.sock = os.path.join(d, "islurmd.sock")
        argv = [sys.executable, "-m", "bench.fakes"]
        self.procs = [
            subprocess.Popen([*argv, "daemon", self.sock], cwd=REPO, stdout=subprocess.PIPE),
            subprocess.Popen([*argv, "tcp", str(total)], cwd=REPO, stdout=subprocess.PIPE),
        ]
        assert self.procs[0].stdout and self.procs[1].stdout
        self.procs[0].stdout.readline()
        self.ports: dict[str, int] = json.loads(self.procs[1].stdout.readline())

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
            p.wait(10)
            if p.stdout:
                p.stdout.close()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _finish(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin and p.stdout
    if not p.stdin.closed:
        p.stdin.close()
    fd = p.stdout.fileno()
    try:
        while os.read(fd, CHUNK):
            pass
    finally:
        p.stdout.close()
    try:
        p.wait(GUARD)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )


def first_byte_ms(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = _spawn(argv)
    assert p.stdout
    got = os.read(p.stdout.fileno(), 1)
    t = (time.perf_counter() - t0) * 1000
    _finish(p)
    if not got:
        raise RuntimeError(f"no byte from {argv}")
    return t


def exit_ms(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return (time.perf_counter() - t0) * 1000


def download(start: Start, total: int) -> tuple[float, float]:
    """MiB/s from first to last byte on stdout, and the child's CPU seconds per GiB (its
    children's too, when it waited for them). Bytes past `total` (a banner) are drained."""
    cpu0 = _children_cpu()
    p = start()
    assert p.stdout
    fd, buf = p.stdout.fileno(), bytearray(CHUNK)
    got = os.readv(fd, [buf])
    t0 = time.perf_counter()
    while got < total:
        n = os.readv(fd, [buf])
        if n == 0:
            raise RuntimeError(f"{p.args!r}: EOF after {got} of {total} bytes")
        got += n
    t = time.perf_counter() - t0
    _finish(p)
    return total / t / (1 << 20), (_children_cpu() - cpu0) * (1 << 30) / total


def upload(start: Start, total: int, greeting: bytes = b"g") -> tuple[float, float]:
    """MiB/s from the first byte written to the stream's end (all bytes taken by the sink,
    which greets with `greeting` when it is ready)."""
    cpu0 = _children_cpu()
    p = start()
    assert p.stdin and p.stdout
    got = b""
    while len(got) < len(greeting):
        chunk = os.read(p.stdout.fileno(), len(greeting) - len(got))
        if not chunk:
            break
        got += chunk
    if got != greeting:
        raise RuntimeError(f"{p.args!r}: the sink did not greet ({got!r})")
    zeros = memoryview(bytes(CHUNK))
    fd = p.stdin.fileno()
    t0 = time.perf_counter()
    left = total
    while left > 0:
        left -= os.write(fd, zeros[: min(left, CHUNK)])
    p.stdin.close()
    while os.read(p.stdout.fileno(), CHUNK):  # EOF: the sink saw everything and hung up
        pass
    t = time.perf_counter() - t0
    _finish(p)
    return total / t / (1 << 20), (_children_cpu() - cpu0) * (1 << 30) / total


def run(
    shim: list[str], fakes: Fakes, reps: int, shim_reps: int, total: int, only: set[str]
) -> dict[str, Any]:
    """`shim`: the generated ProxyCommand's argv without its PROFILE."""

    def shim_to(port: int) -> list[str]:
        return [*shim, "--socket", fakes.sock, f"p{port}"]

    def socat_to(port: int) -> list[str]:
        return ["socat", "-", f"TCP:127.0.0.1:{port}"]

    raw: dict[str, Any] = {}
    if "startup" in only:
        log(f"startup: {reps} x (islurm-proxy, socat, python -I -S -c pass), interleaved")
        py = [shim[0], "-I", "-S", "-c", "pass"]
        banner = fakes.ports["banner"]
        s: dict[str, list[float]] = {"islurm": [], "socat": [], "python": []}
        for i in range(reps + 2):  # two warm-up rounds (page cache, pyc) are dropped
            order: list[tuple[str, Callable[[], float]]] = [
                ("islurm", lambda: first_byte_ms(shim_to(banner))),
                ("socat", lambda: first_byte_ms(socat_to(banner))),
                ("python", lambda: exit_ms(py)),
            ]
            k = i % 3
            for name, once in order[k:] + order[:k]:
                v = once()
                if i >= 2:
                    s[name].append(v)
        raw["startup"] = s
    if "shim-throughput" in only:
        log(f"shim-throughput: {shim_reps} x {total >> 20} MiB each way, islurm-proxy vs socat")
        t: dict[str, list[float]] = {}
        for i in range(shim_reps):
            up = functools.partial(upload, greeting=SINK_BANNER)
            moves: list[tuple[str, Callable[[Start, int], tuple[float, float]], int]] = [
                ("down", download, fakes.ports["source"]),
                ("up", up, fakes.ports["sink"]),
            ]
            for direction, fn, port in moves:
                pair = [("islurm", shim_to(port)), ("socat", socat_to(port))]
                for name, argv in pair if i % 2 == 0 else pair[::-1]:
                    rate, cpu = fn(functools.partial(_spawn, argv), total)
                    t.setdefault(f"{name}-{direction}", []).append(rate)
                    t.setdefault(f"{name}-{direction}-cpu-s-per-GiB", []).append(cpu)
        raw["shim-throughput"] = t
    return raw
