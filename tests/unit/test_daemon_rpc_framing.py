"""Line framing (daemon/rpc/framing.py) and the server's per-line answer (RpcServer._answer),
the latter fuzzed: whatever arrives, the answer is nothing or one valid JSON-RPC line."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from islurm.daemon.rpc.framing import TooLong, read_lines
from islurm.daemon.rpc.server import Connection, Outgoing, RpcServer
from tests.unit.fakes import FakeSlurm, build_methods, make_daemon, make_dispatch


class Chunks(trio.abc.ReceiveStream):
    """Delivers exactly the scripted chunks, one per receive, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        pass


async def collect(chunks: list[bytes], max_line: int = 10) -> list[bytes | TooLong]:
    return [line async for line in read_lines(Chunks(chunks), max_line=max_line)]


async def test_lines_split_across_chunks_are_joined() -> None:
    got = await collect([b'{"a"', b":1}\n", b'{"b":2}\n{"c', b'":3}\n\n', b"tail"], 100)
    assert got == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b""]  # a partial last line is dropped


async def test_over_long_line_yields_one_toolong_then_recovers() -> None:
    got = await collect([b"0123456789\n", b"01234", b"567890", b"12345", b"6\nok\n"])
    assert got == [b"0123456789", TooLong(17), b"ok"]


async def test_over_long_line_in_one_chunk() -> None:
    assert await collect([b"a" * 11 + b"\nnext\n" + b"b" * 12 + b"\n"]) == [
        TooLong(11), b"next", TooLong(12)
    ]  # fmt: skip


async def test_eof_inside_an_over_long_line_yields_nothing_more() -> None:
    assert await collect([b"ok\n", b"x" * 30, b"y" * 30]) == [b"ok"]


async def test_read_lines_from_a_memory_stream() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    await send.send_all(b"first\nsec")
    lines = read_lines(receive)
    assert await lines.__anext__() == b"first"
    await send.send_all(b"ond\n")
    assert await lines.__anext__() == b"second"
    await send.aclose()
    with pytest.raises(StopAsyncIteration):
        await lines.__anext__()


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12),
)
async def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    expected = [line if len(line) <= 20 else TooLong(len(line)) for line in lines]
    assert await collect(chunks, max_line=20) == expected


# -- the server's answer to one line, fuzzed ------------------------------------------------

METHODS = ["session.acquire", "session.attach", "session.list", "session.cancel", "daemon.status"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2])},
    optional={
        "method": st.sampled_from(METHODS) | st.text(max_size=12),
        "id": st.none() | st.integers() | st.text(max_size=8) | json_values,
        "params": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "profile": st.sampled_from(["cpu", "gpu", "", "x;y"]) | json_values,
                "timeout": json_values,
                "client_pid": json_values,
                "target": st.sampled_from(["--all", "cpu", "4242"]) | json_values,
                "job_id": st.sampled_from(["4242", "x"]) | json_values,
            },
        ),
    },
)
lines = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    requests.map(lambda r: json.dumps(r).encode()),
    st.lists(requests, max_size=4).map(lambda b: json.dumps(b).encode()),
)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def may_go_unanswered(line: bytes) -> bool:
    """Only a blank line and notifications (requests without an "id") may get no answer: a
    request with an id, a parse error and anything that is not a request object all do."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not text.strip():
        return True
    try:
        decoded = json.loads(text)
    except ValueError:
        return False
    batch = decoded if isinstance(decoded, list) else [decoded]
    return bool(batch) and all(isinstance(r, dict) and "id" not in r for r in batch)


def check_answer(line: bytes, out: bytes | None) -> None:
    """The answer to `line`: one line holding a JSON-RPC response (or a batch of them), strict
    JSON; None only where JSON-RPC allows no answer."""
    if out is None:
        assert may_go_unanswered(line), f"no answer to {line[:200]!r}"
        return
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    decoded = json.loads(out, parse_constant=_no_constants)
    responses = decoded if isinstance(decoded, list) else [decoded]
    assert responses
    for r in responses:
        assert r["jsonrpc"] == "2.0" and "id" in r
        assert ("result" in r) != ("error" in r)
        if "error" in r:
            assert type(r["error"]["code"]) is int and isinstance(r["error"]["message"], str)
            assert r["error"]["message"] != "internal error"  # no method may crash


@pytest.fixture(scope="module")
def answer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    daemon, _ = make_daemon(tmp_path_factory.mktemp("fuzz"), FakeSlurm())
    methods = build_methods(
        daemon.manager, daemon.status, lambda: "reload is not supported here", daemon.handed
    )
    server = RpcServer(make_dispatch(methods), print)
    send, _receive = trio.open_memory_channel[Outgoing](256)
    conn = Connection(send, pid=1)

    def run(line: bytes) -> bytes | None:
        conn.followups.clear()
        return server._answer(line, conn)

    return run


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=lines)
@example(line=b'{"jsonrpc":"2.0","id":1,"method":"session.acquire","params":{"profile":"cpu"}}')
@example(line=b"[" * 5000)
@example(line=b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
def test_every_answer_is_none_or_one_valid_response_line(answer: Any, line: bytes) -> None:
    check_answer(line, answer(line))


@pytest.mark.parametrize("req_id", [b"1e999", b"-1e999", b"NaN", b"Infinity"])
def test_answer_is_strict_json_even_for_odd_ids(answer: Any, req_id: bytes) -> None:
    # 1e999 is valid JSON that Python reads as inf; echoing it back as `Infinity` is not JSON.
    line = b'{"jsonrpc":"2.0","id":' + req_id + b',"method":"session.list"}'
    check_answer(line, answer(line))


def test_strictness_check_itself_rejects_infinity() -> None:
    with pytest.raises(ValueError):
        check_answer(b"{}", b'{"jsonrpc": "2.0", "result": {}, "id": Infinity}\n')
    assert math.isinf(json.loads("1e999"))


@pytest.mark.parametrize(
    "line",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"session.list"}',
        b'[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"method":"session.list"}]',
        b"not json",
        b"[]",
        b"42",
        b"\xff",
    ],
)
def test_check_answer_fails_when_an_expected_answer_never_came(line: bytes) -> None:
    with pytest.raises(AssertionError, match="no answer to"):
        check_answer(line, None)


@pytest.mark.parametrize("line", [b"", b" \t", b'{"jsonrpc":"2.0","method":"session.list"}'])
def test_check_answer_accepts_silence_where_json_rpc_allows_it(line: bytes) -> None:
    check_answer(line, None)


def test_fuzz_fixture_answers_like_the_daemon(answer: Any, tmp_path: Path) -> None:
    out = answer(b'{"jsonrpc":"2.0","id":5,"method":"session.list"}')
    assert out == b'{"jsonrpc": "2.0", "result": {"jobs": []}, "id": 5}\n'
