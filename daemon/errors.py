"""RPC error codes (docs/PROTOCOL.md §2) and the exception that carries one."""

from __future__ import annotations

import enum
from typing import Any

from islurm.config import rpccodes


class Code(enum.IntEnum):
    """The codes of config/rpccodes.py as an enum."""

    # JSON-RPC 2.0's own
    PARSE_ERROR, INVALID_REQUEST = rpccodes.PARSE_ERROR, rpccodes.INVALID_REQUEST
    METHOD_NOT_FOUND, INVALID_PARAMS = rpccodes.METHOD_NOT_FOUND, rpccodes.INVALID_PARAMS
    INTERNAL = rpccodes.INTERNAL
    # islurm's
    UNKNOWN_PROFILE = rpccodes.UNKNOWN_PROFILE
    SUBMIT_REJECTED = rpccodes.SUBMIT_REJECTED
    JOB_ENDED = rpccodes.JOB_ENDED
    SLURM_UNREACHABLE = rpccodes.SLURM_UNREACHABLE
    CONNECT_TIMEOUT = rpccodes.CONNECT_TIMEOUT
    NOT_FOUND = rpccodes.NOT_FOUND
    HOOK_FAILED = rpccodes.HOOK_FAILED
    SHUTTING_DOWN = rpccodes.SHUTTING_DOWN
    PROTOCOL_MISMATCH = rpccodes.PROTOCOL_MISMATCH


class RpcFault(Exception):
    """An error the client is meant to see, with its code and optional data."""

    def __init__(self, code: Code, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def as_params(self, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"code": int(self.code), "message": self.message, **extra}
        if self.data is not None:
            params["data"] = self.data
        return params
