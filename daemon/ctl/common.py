"""What every islurmctl command shares: the exit-code table, failures, the daemon client."""

from __future__ import annotations

import argparse
from typing import Any

from islurm.config import paths
from islurm.daemon.errors import Code

# CLI exit codes, and which RPC error maps to which.
EXIT = {
    "ok": 0,
    "error": 1,
    "usage": 2,
    "daemon_unreachable": 3,
    "not_found": 4,
    "slurm_unreachable": 5,
    "slurm_rejected": 6,
    "config_invalid": 7,
}
RPC_TO_EXIT = {
    Code.NOT_FOUND: EXIT["not_found"],
    Code.UNKNOWN_PROFILE: EXIT["not_found"],
    Code.SLURM_UNREACHABLE: EXIT["slurm_unreachable"],
    Code.SUBMIT_REJECTED: EXIT["slurm_rejected"],
    Code.INVALID_PARAMS: EXIT["usage"],
}


def exit_for(rpc_code: int) -> int:
    """The CLI exit code for a JSON-RPC error code."""
    try:
        return RPC_TO_EXIT.get(Code(rpc_code), EXIT["error"])
    except ValueError:
        return EXIT["error"]


class Fail(Exception):
    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def connect(args: argparse.Namespace) -> Any:
    from islurm.daemon.ctl.client import Client, DaemonUnreachable

    try:
        return Client(args.socket or paths.socket_path())
    except DaemonUnreachable as exc:
        raise Fail(EXIT["daemon_unreachable"], str(exc)) from None


def call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    from islurm.daemon.ctl.client import DaemonUnreachable, RpcError

    with connect(args) as rpc:
        try:
            return rpc.call(method, **params)
        except RpcError as exc:
            raise Fail(exit_for(exc.code), exc.message) from None
        except DaemonUnreachable as exc:
            raise Fail(EXIT["daemon_unreachable"], str(exc)) from None
