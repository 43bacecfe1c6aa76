"""The JSONC edit behind setup's editor settings: every byte not edited survives."""

from __future__ import annotations

import json
import re

import pytest

from islurm.config import jsonc
from islurm.config.editors import merge, remote_ssh_settings

SETTINGS = """\
{
    // my font
    "editor.fontSize": 14, /* inline, with "quotes" and a // */
    "files.exclude": {
        "**/.git": true,
    },
    "url": "http://example.org/a,b}",
    "remote.SSH.connectTimeout": 15,
}
"""


def plain(text: str) -> object:
    """An independent reading: strip comments outside strings and trailing commas."""
    out, i = [], 0
    while i < len(text):
        if text[i] == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i)
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        else:
            out.append(text[i])
            i += 1
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", "".join(out)))


def test_replace_keeps_every_other_byte() -> None:
    new = jsonc.set_value(SETTINGS, ["remote.SSH.connectTimeout"], 1860)
    assert new == SETTINGS.replace(
        '"remote.SSH.connectTimeout": 15', '"remote.SSH.connectTimeout": 1860'
    )


def test_insert_follows_trailing_comma_style_and_indent() -> None:
    new = jsonc.set_value(SETTINGS, ["a.b"], True)
    assert new == SETTINGS.replace("15,\n}", '15,\n    "a.b": true,\n}')
    assert plain(new) == {**plain(SETTINGS), "a.b": True}  # type: ignore[dict-item]


def test_insert_into_nested_object() -> None:
    new = jsonc.set_value(SETTINGS, ["files.exclude", "x"], False)
    assert '"**/.git": true,\n        "x": false,\n    },' in new
    assert jsonc.get(new, ["files.exclude", "x"]) is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  \n",
        "{}",
        "{}\n",
        "{\n}\n",
        '{"a": 1}',
        '{\n  "a": 1\n}\n',
        '{\n\t"a": [1, {"b": "}"}] // c\n}',
    ],
)
def test_insert_then_remove_round_trips_to_an_equal_object(text: str) -> None:
    new = jsonc.set_value(text, ["k"], {"s": [1, 2]})
    assert plain(new)["k"] == {"s": [1, 2]}  # type: ignore[index]
    back = jsonc.remove_value(new, ["k"])
    assert plain(back) == (plain(text) if text.strip() else {})


def test_the_last_duplicate_key_is_the_one_edited() -> None:
    text = '{\n  "a": 1,\n  "a": 2\n}\n'
    assert jsonc.set_value(text, ["a"], 3) == '{\n  "a": 1,\n  "a": 3\n}\n'


@pytest.mark.parametrize(
    ("text", "line"),
    [("[1, 2]", 1), ('{\n  "a": 1\n  "b": 2\n}', 3), ('{\n "a": /* open', 2), ('{"a": "x', 1)],
)
def test_not_an_object_is_refused_with_its_line(text: str, line: int) -> None:
    with pytest.raises(jsonc.JsoncError, match=f"line {line}:"):
        jsonc.set_value(text, ["k"], 1)


def test_merge_is_idempotent_and_creates_objects() -> None:
    settings = remote_ssh_settings(["slurm-cpu", "slurm-gpu"], 1800)
    once = merge(SETTINGS, settings)
    assert merge(once, settings) == once
    assert plain(once)["remote.SSH.remotePlatform"] == {"slurm-cpu": "linux", "slurm-gpu": "linux"}  # type: ignore[index]
    assert plain(once)["remote.SSH.connectTimeout"] == 1860  # type: ignore[index]
    assert once.startswith('{\n    // my font\n    "editor.fontSize": 14, /* inline')
