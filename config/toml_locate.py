"""Find the line a dotted TOML key sits on, for error messages (tomllib keeps no positions)."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part


def line_of_key(text: str, dotted: str) -> int | None:
    """1-based line of `dotted` (e.g. "profiles.cpu.sbatch"); the table's header if the key
    itself is not written out; None if neither appears."""
    want = dotted.split(".")
    table: list[str] = []
    header_line: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        h = _HEADER.match(line)
        if h:
            table = [_unquote(p) for p in h.group(1).split(".")]
            if table == want:
                header_line = number
            continue
        k = _KEY.match(line)
        if k and [*table, _unquote(k.group(1))] == want:
            return number
    return header_line
