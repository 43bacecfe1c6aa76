"""ProxyCommand for the cold-connect split: the installed islurm-proxy, unchanged, with
timestamps of its steps appended to a trace file. The product is not instrumented: this file
wraps the shim's own functions from outside (names as in islurm.proxyshim at the time of
writing; a step whose function is gone is simply not traced).

    python -I -S shimtrace.py SITE_PACKAGES TRACE_FILE [islurm-proxy args...]

Trace lines: ``PID EVENT MONOTONIC EPOCH``; events: start, ready (session.ready received),
connected (TCP to the job's sshd up), first_byte (first splice that moved bytes).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time: the shim's own rule
    from typing import Any


def main() -> int:
    site, trace, *args = sys.argv[1:]
    sys.path.insert(0, site)

    def mark(event: str) -> None:
        line = f"{os.getpid()} {event} {time.monotonic():.6f} {time.time():.6f}\n"
        fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    mark("start")
    from islurm.proxyshim import main as shim
    from islurm.proxyshim import rpc, splice

    def after(module: object, name: str, event: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return

        def traced(*a: object, **k: object) -> object:
            result = original(*a, **k)
            mark(event)
            return result

        setattr(module, name, traced)

    after(rpc, "acquire", "ready")
    after(splice, "connect_tcp", "connected")
    real_splice = os.splice

    def first_splice(*a: Any) -> int:
        n = real_splice(*a)
        if n:
            os.splice = real_splice
            mark("first_byte")
        return n

    os.splice = first_splice  # type: ignore[assignment]
    return shim.main(args)


if __name__ == "__main__":
    sys.exit(main())
