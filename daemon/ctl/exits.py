"""islurmctl's exit codes, and the one table that maps every RPC error code onto them.

Stable for scripts; README.md lists them (tests/unit/test_exit_codes.py keeps it true)."""

from __future__ import annotations

import enum

from islurm.daemon.errors import Code


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    DAEMON_UNREACHABLE = 3
    NOT_FOUND = 4  # also: an unknown profile
    SLURM_UNREACHABLE = 5
    SLURM_REJECTED = 6
    CONFIG_INVALID = 7


# Every RPC error code, explicitly (a test fails when a new Code has no row here).
RPC_TO_EXIT: dict[Code, Exit] = {
    Code.PARSE_ERROR: Exit.ERROR,  # islurmctl sent something islurmd could not read: a bug
    Code.INVALID_REQUEST: Exit.ERROR,
    Code.METHOD_NOT_FOUND: Exit.ERROR,  # an islurmd older than this islurmctl
    Code.INVALID_PARAMS: Exit.USAGE,
    Code.INTERNAL: Exit.ERROR,
    Code.UNKNOWN_PROFILE: Exit.NOT_FOUND,
    Code.SUBMIT_REJECTED: Exit.SLURM_REJECTED,
    Code.JOB_ENDED: Exit.ERROR,
    Code.SLURM_UNREACHABLE: Exit.SLURM_UNREACHABLE,
    Code.CONNECT_TIMEOUT: Exit.ERROR,
    Code.NOT_FOUND: Exit.NOT_FOUND,
    Code.HOOK_FAILED: Exit.ERROR,
    Code.SHUTTING_DOWN: Exit.ERROR,
    Code.PROTOCOL_MISMATCH: Exit.ERROR,  # its message says what to do
}


def exit_for(rpc_code: int) -> Exit:
    """The exit code for a JSON-RPC error code (ERROR for a code this islurmctl does not know)."""
    try:
        return RPC_TO_EXIT[Code(rpc_code)]
    except ValueError:
        return Exit.ERROR
