"""islurmd's systemd --user units: the templates in config/systemd rendered (pure, but for
reading the templates) and written where the user manager looks for them."""

from __future__ import annotations

import contextlib
import os
from importlib import resources
from pathlib import Path

from islurm.config import paths
from islurm.config.files import write_text_atomic

SOCKET_UNIT = "islurmd.socket"
SERVICE_UNIT = "islurmd.service"
UNITS = (SOCKET_UNIT, SERVICE_UNIT)


def _check_text(value: str) -> None:
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"control characters cannot be written into a unit file: {value!r}")


def quote_word(word: str) -> str:
    """One argument of an Exec*= line as systemd reads it: %-specifiers and $VARIABLES are
    escaped, words with blanks, quotes or backslashes are double-quoted (C escapes inside)."""
    _check_text(word)
    text = word.replace("%", "%%").replace("$", "$$")
    if text and not any(c in " \"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_program(path: str) -> str:
    """The program of an Exec*= line: systemd expands %-specifiers in it but not $, and
    refuses (fatally) a program path holding a quote, a backslash or a control character."""
    if not os.path.isabs(path):
        raise ValueError(f"systemd needs an absolute program path, got {path!r}")
    if any(c in "\"'\\" or ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ValueError(
            f"systemd refuses to run a program whose path holds a quote, a backslash or a "
            f"control character: {path!r} (move islurm elsewhere, or rely on islurm-proxy "
            "starting islurmd on demand)"
        )
    text = path.replace("%", "%%")
    return f'"{text}"' if any(c.isspace() or c == ";" for c in text) else text


def exec_line(argv: list[str]) -> str:
    if not argv:
        raise ValueError("ExecStart needs a program")
    return " ".join([quote_program(argv[0]), *(quote_word(a) for a in argv[1:])])


def service_path_value(path_env: str) -> str:
    """PATH for the unit, escaped for `Environment="PATH=..."`: absolute entries only (a
    relative one would resolve against the daemon's working directory), first one wins."""
    seen: list[str] = []
    for entry in path_env.split(os.pathsep):
        if os.path.isabs(entry) and entry not in seen and entry.isprintable():
            seen.append(entry)
    value = os.pathsep.join(seen or ["/usr/local/bin", "/usr/bin", "/bin"])
    return value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')


def template(name: str) -> str:
    return (resources.files("islurm.config") / "systemd" / name).read_text(encoding="utf-8")


def render(argv: list[str], path_env: str) -> dict[str, str]:
    """Both unit files' text, placeholders filled in."""
    service = template(SERVICE_UNIT)
    service = service.replace("@ISLURMD@", exec_line(argv))
    service = service.replace("@PATH@", service_path_value(path_env))
    return {SOCKET_UNIT: template(SOCKET_UNIT), SERVICE_UNIT: service}


def unit_dir() -> Path:
    """$XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user)."""
    return Path(paths.config_home()) / "systemd" / "user"


def write_atomically(path: Path, text: str) -> bool:
    """Write `path` via a temporary file and rename; return whether its content changed."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(str(path), text, 0o644)
    return True
