"""Find the line a dotted TOML key sits on, for error messages (tomllib keeps no positions)."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _split_dotted(text: str) -> list[str]:
    """Split a TOML dotted key on dots outside quotes: a."b.c".d -> [a, b.c, d]."""
    parts, current, quote = [], "", ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ".":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [_unquote(p) for p in parts]


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part


def line_of_key(text: str, dotted: list[str] | str) -> int | None:
    """1-based line of a key path (e.g. ["profiles", "cpu", "sbatch"]); the header of its
    table if the key itself is not written out; None if neither appears."""
    want = _split_dotted(dotted) if isinstance(dotted, str) else list(dotted)
    table: list[str] = []
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        h = _HEADER.match(line)
        if h:
            table = _split_dotted(h.group(1))
            if table == want:
                return number
            if table == want[:-1] and header_line is None:
                header_line = number
            continue
        k = _KEY.match(line)
        if k and [*table, _unquote(k.group(1))] == want:
            return number
    return header_line
