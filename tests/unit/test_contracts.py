"""Each contract is defined once and both sides agree on it."""

from __future__ import annotations

from islurm.config import rpccodes
from islurm.daemon.errors import Code


def test_the_rpc_code_enum_is_exactly_the_shared_table() -> None:
    shared = {
        name: value
        for name, value in vars(rpccodes).items()
        if name.isupper() and isinstance(value, int)
    }
    assert {c.name: int(c) for c in Code} == shared
