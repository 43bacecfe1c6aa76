"""The exit-code tables: islurmctl's Exit and its RPC mapping (daemon/ctl/exits.py), the
shim's constants (proxyshim/exits.py), and what README.md and the shim's help say of them."""

from __future__ import annotations

import re
from pathlib import Path

import islurm.proxyshim.main as shim_main
from islurm.daemon.ctl import main as ctl_main
from islurm.daemon.ctl.exits import RPC_TO_EXIT, Exit, exit_for
from islurm.daemon.errors import Code
from islurm.proxyshim import exits as shim_exits

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def _pairs(text: str) -> dict[int, str]:
    """`0 ok, 1 error, 4 not found / unknown profile.` -> {0: "ok", 1: "error", 4: "not..."}."""
    return {int(n): what.strip() for n, what in re.findall(r"(?:^|[:,])\s*(\d+) ([^,]+)", text)}


def _readme_table(start: str, end: str) -> dict[int, str]:
    text = README.split(start, 1)[1].split(end, 1)[0]
    return _pairs(" ".join(text.split()).rstrip("."))


def test_every_rpc_error_code_maps_to_an_exit_code() -> None:
    assert set(RPC_TO_EXIT) == set(Code)
    for code, exit_code in RPC_TO_EXIT.items():
        assert exit_for(int(code)) is exit_code
    assert exit_for(4242) is Exit.ERROR  # a code from a newer islurmd


def test_readme_lists_islurmctl_exit_codes_as_the_enum_does() -> None:
    table = _readme_table("Exit codes (`islurmctl`):", "`islurm-proxy`:")
    assert sorted(table) == [e.value for e in Exit]
    for e in Exit:
        words = e.name.lower().replace("_", " ")
        assert table[e.value].lower().startswith(words), (e, table[e.value])


def test_islurmctl_help_lists_the_enum() -> None:
    epilog = ctl_main._parser().epilog or ""
    assert _pairs(epilog.removeprefix("Exit codes:")) == {e.value: e.name.lower() for e in Exit}


def test_readme_lists_the_shims_exit_codes() -> None:
    table = _readme_table("`islurm-proxy`:", "\n\n")
    # 1 is a Python traceback (a bug), not part of the shim's contract with scripts.
    assert sorted(table) == sorted(set(shim_exits.CODES) - {shim_exits.EXIT_INTERNAL})
    assert table[shim_exits.EXIT_USAGE] == "usage"
    assert table[shim_exits.EXIT_DAEMON] == "daemon unreachable"


def test_the_shims_docstring_and_help_list_its_codes() -> None:
    doc = shim_main.__doc__ or ""
    rows = re.findall(r"^\s+(\d)\s{2,}\S", doc.split("Exit status", 1)[1], re.MULTILINE)
    assert sorted(int(n) for n in rows) == sorted(shim_exits.CODES)
    help_codes = _pairs(" ".join(shim_main.HELP.split("exit status:", 1)[1].split()))
    assert sorted(help_codes) == sorted(set(shim_exits.CODES) - {shim_exits.EXIT_INTERNAL})
