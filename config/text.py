"""Text from the daemon or Slurm made safe for a terminal. Stdlib only: the shim imports it."""


def terminal_safe(text: str, *, one_line: bool = False) -> str:
    """`text` with terminal controls (C0 except newline and tab, DEL, C1) replaced by "?";
    with `one_line`, newline and tab too (a table cell must not forge a line)."""
    keep = "" if one_line else "\n\t"
    return "".join(
        "?" if (ord(c) < 32 and c not in keep) or 127 <= ord(c) < 160 else c for c in text
    )
