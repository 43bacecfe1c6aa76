"""Writing the readiness record (docs/PROTOCOL.md §3): atomically, so readers never see half."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from islurm.config.files import write_text_atomic

RECORD_VERSION = 1


def write_atomic(path: str, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data), 0o600)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
