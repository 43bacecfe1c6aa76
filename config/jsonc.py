"""Edit a JSON-with-comments file (VS Code's settings.json) in place: set or remove a key of
an object and leave every other byte alone (comments, order, trailing commas, indentation).

Why not a library: json-five round-trips comments but edits through a model whose whitespace
hangs off neighbouring nodes (an inserted key gets none), and pulls in `regex`, a compiled
module; jsonc-edit runs Node.js; json5kit fails on block comments. What setup needs is small:
find the members of an object, splice text into it. Pure functions, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

_WS = " \t\r\n\ufeff"
_ATOM = re.compile(r"[^\s,:\[\]{}/\"]+")


class JsoncError(ValueError):
    """The text is not a JSON object with comments; the message names the line."""


@dataclass(frozen=True)
class Member:
    key: str
    start: int  # the key's opening quote
    value_start: int
    value_end: int
    comma: int | None  # the comma after the value, if any


@dataclass(frozen=True)
class Obj:
    open: int  # offset of "{"
    close: int  # offset of "}"
    members: tuple[Member, ...]


def _error(text: str, pos: int, what: str) -> JsoncError:
    line = text.count("\n", 0, pos) + 1
    return JsoncError(f"line {line}: {what}")


def _tokens(text: str, pos: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(kind, start, stop) for strings ("s"), punctuation (the character) and atoms ("a");
    whitespace and comments are skipped."""
    while pos < end:
        c = text[pos]
        if c in _WS:
            pos += 1
        elif text.startswith("//", pos):
            nl = text.find("\n", pos)
            pos = end if nl < 0 else nl + 1
        elif text.startswith("/*", pos):
            close = text.find("*/", pos + 2)
            if close < 0:
                raise _error(text, pos, "a /* comment is not closed")
            pos = close + 2
        elif c == '"':
            i = pos + 1
            while i < end and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= end:
                raise _error(text, pos, "a string is not closed")
            yield "s", pos, i + 1
            pos = i + 1
        elif c in "{}[]:,":
            yield c, pos, pos + 1
            pos += 1
        else:
            m = _ATOM.match(text, pos)
            if m is None:
                raise _error(text, pos, f"unexpected {c!r}")
            yield "a", pos, m.end()
            pos = m.end()


def _skip_value(text: str, toks: Iterator[tuple[str, int, int]]) -> tuple[int, int]:
    kind, start, stop = next(toks, ("", len(text), len(text)))
    if kind in ("s", "a"):
        return start, stop
    if kind not in ("{", "["):
        raise _error(text, start, "a value is missing")
    depth = 1
    for kind, _, stop in toks:
        if kind in "{[":
            depth += 1
        elif kind in "}]":
            depth -= 1
        if depth == 0:
            return start, stop
    raise _error(text, start, f"{kind} is not closed")


def parse_object(text: str, start: int = 0, end: int | None = None) -> Obj:
    """The object in text[start:end] (its members, with offsets into `text`)."""
    end = len(text) if end is None else end
    toks = _tokens(text, start, end)
    kind, open_, _ = next(toks, ("", start, start))
    if kind != "{":
        raise _error(text, open_, "expected a JSON object")
    members: list[Member] = []
    while True:
        kind, pos, stop = next(toks, ("", end, end))
        if kind == "}":
            return Obj(open_, pos, tuple(members))
        if kind != "s":
            raise _error(text, pos, "expected a key in double quotes or }")
        key = json.loads(text[pos:stop])
        if next(toks, ("",))[0] != ":":
            raise _error(text, stop, f"expected : after {key!r}")
        vstart, vend = _skip_value(text, toks)
        kind, cpos, _ = next(toks, ("", end, end))
        members.append(Member(key, pos, vstart, vend, cpos if kind == "," else None))
        if kind == "}":
            return Obj(open_, cpos, tuple(members))
        if kind != ",":
            raise _error(text, cpos, f"expected , or }} after the value of {key!r}")


def _find(text: str, path: Sequence[str]) -> tuple[Obj, Member | None]:
    """The object holding path[-1], and its member (the last one when a key repeats: the one
    that counts)."""
    obj = parse_object(text)
    for name in path[:-1]:
        inner = [m for m in obj.members if m.key == name]
        if not inner:
            raise KeyError(name)
        obj = parse_object(text, inner[-1].value_start, inner[-1].value_end)
    found = [m for m in obj.members if m.key == path[-1]]
    return obj, (found[-1] if found else None)


def get(text: str, path: Sequence[str]) -> object:
    """The value at path, or KeyError. Comments inside the value are not expected."""
    _, member = _find(text, path)
    if member is None:
        raise KeyError(path[-1])
    return json.loads(text[member.value_start : member.value_end])


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _indent_of(text: str, pos: int) -> str:
    head = text[_line_start(text, pos) : pos]
    return head if head.strip() == "" else ""


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def set_value(text: str, path: Sequence[str], value: object) -> str:
    """`text` with path set to `value`: an existing value's text replaced, else a member
    appended in the object's own style (indent, trailing comma). Objects on the way must
    exist. Text that is empty or only whitespace counts as {}."""
    if not text.strip():
        text = "{}\n"
    obj, member = _find(text, path)
    rendered = dumps(value)
    if member is not None:
        return text[: member.value_start] + rendered + text[member.value_end :]
    if not obj.members:
        indent = _indent_of(text, obj.open) + "    "
        close_indent = _indent_of(text, obj.close)
        if close_indent or text[_line_start(text, obj.close) : obj.close] == "":
            head = text[: _line_start(text, obj.close)]
            return f"{head}{indent}{dumps(path[-1])}: {rendered}\n{text[len(head) :]}"
        pad = _indent_of(text, obj.open)
        new = f"\n{indent}{dumps(path[-1])}: {rendered}\n{pad}"
        return text[: obj.open + 1] + new + text[obj.close :]
    last = obj.members[-1]
    indent = _indent_of(text, last.start) or " "
    member_text = f"{dumps(path[-1])}: {rendered}"
    own_line = _indent_of(text, obj.close) != "" or text[_line_start(text, obj.close)] == "}"
    if last.comma is not None:  # trailing-comma style: keep it
        if own_line and _line_start(text, obj.close) > last.comma:
            at = _line_start(text, obj.close)
            return f"{text[:at]}{indent}{member_text},\n{text[at:]}"
        return f"{text[: last.comma + 1]}\n{indent}{member_text},{text[last.comma + 1 :]}"
    head = text[: last.value_end] + ","
    tail = text[last.value_end :]
    if own_line and _line_start(text, obj.close) > last.value_end:
        at = _line_start(text, obj.close) - last.value_end
        return f"{head}{tail[:at]}{indent}{member_text}\n{tail[at:]}"
    sep = "\n" + indent if indent.strip() == "" and indent != " " else " "
    return f"{head}{sep}{member_text}{tail}"


def remove_value(text: str, path: Sequence[str]) -> str:
    """`text` without the member at path (its line too when it had one to itself)."""
    _, member = _find(text, path)
    if member is None:
        return text
    start = member.start
    stop = member.value_end if member.comma is None else member.comma + 1
    line = _line_start(text, start)
    if text[line:start].strip() == "":
        nl = text.find("\n", stop)
        rest = text[stop:] if nl < 0 else text[stop:nl]
        if rest.strip() == "":
            start, stop = line, (len(text) if nl < 0 else nl + 1)
    elif member.comma is None:
        # the last member on a shared line: take the comma before it instead
        prev = text.rfind(",", 0, start)
        if prev >= 0:
            start = prev
    return text[:start] + text[stop:]
