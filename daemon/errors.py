"""RPC error codes (docs/PROTOCOL.md §2) and the exception that carries one."""

from __future__ import annotations

import enum
from typing import Any


class Code(enum.IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL = -32603
    UNKNOWN_PROFILE = 1001
    SUBMIT_REJECTED = 1002
    JOB_ENDED = 1003
    SLURM_UNREACHABLE = 1004
    CONNECT_TIMEOUT = 1005
    NOT_FOUND = 1006
    HOOK_FAILED = 1007
    SHUTTING_DOWN = 1008


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
