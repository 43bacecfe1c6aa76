"""The RPC error codes (docs/PROTOCOL.md §2): one definition for islurmd, islurmctl and the
shim. Plain ints: the shim may not import enum (start-up time); daemon/errors.py makes the
IntEnum from these."""

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
PROTOCOL_MISMATCH = 1009
