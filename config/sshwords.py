"""One word of an ssh_config or sshd_config line, quoted as OpenSSH splits it. No imports:
the session hook renders the job's sshd_config with it at every job start."""

from __future__ import annotations

# Words that need no quoting in ssh_config nor in sh.
PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_")


def refuse_line_breaks(value: str, where: str) -> None:
    if any(c in value for c in "\n\r\x00"):
        raise ValueError(f"cannot put {value!r} into {where}: no quoting can carry a line break")


def config_word(value: str, *, expands: bool) -> str:
    """One ssh_config argument as OpenSSH >= 8.7 splits it (misc.c argv_split): in double
    quotes, with backslash and double quote escaped; a single quote, `$` and `#` are literal
    inside them. Where ssh expands tokens (`expands`), % is doubled and `${` is refused: ssh
    substitutes environment variables there and has no escape for them."""
    refuse_line_breaks(value, "an ssh config")
    if expands:
        if "${" in value:
            raise ValueError(f"cannot put {value!r} into an ssh config: ssh expands ${{...}}")
        value = value.replace("%", "%%")
    if value and all(c in PLAIN for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
