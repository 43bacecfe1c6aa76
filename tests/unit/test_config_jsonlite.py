"""config/jsonlite.py: the hook's JSON without `json` writes what json.dumps writes and reads
what json.loads reads, and refuses what it refuses (a ValueError)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from islurm.config import jsonlite

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(VALUES)
def test_writes_and_reads_as_json_does(value: object) -> None:
    text = json.dumps(value)
    assert jsonlite.dumps(value) == text
    assert jsonlite.dumps(value, sort_keys=True) == json.dumps(value, sort_keys=True)
    assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.loads(f" \n{text}\t\r\n") == json.loads(text)


def no_constants(name: str) -> object:
    raise ValueError(f"{name} refused")  # jsonlite reads no NaN or Infinity


@pytest.mark.parametrize(
    "text",
    ["", " ", "{", "{}x", "[1,]", '{"a" 1}', '"\x01"', "NaN", "[Infinity]", "{'a': 1}", "01"],
)
def test_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=no_constants)
    with pytest.raises(ValueError):
        jsonlite.loads(text)


def test_a_value_json_cannot_write_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonlite.dumps({"a": object()})
