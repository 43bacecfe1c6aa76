"""Run as the bench user (islurmd serves its own uid only): start islurmd REPS times, each time
timing process start → the first answered `daemon.status`, then stop it (TERM, by pid).

    python3 -I dstart_probe.py ISLURMD SOCKET REPS

Prints one JSON list of seconds. The environment (PATH with the Slurm wrappers) is passed on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

REQUEST = b'{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{}}\n'


def answered(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
        s.sendall(REQUEST)
        return b'"result"' in s.makefile("rb").readline()
    except OSError:
        return False
    finally:
        s.close()


def once(islurmd: str, path: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [islurmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not answered(path):
        if p.poll() is not None or time.perf_counter() - t0 > 30:
            raise SystemExit(f"islurmd exited ({p.returncode}) or did not serve in 30 s")
        time.sleep(0.002)
    t = time.perf_counter() - t0
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    while os.path.exists(path):  # the next one binds only once this one let go
        time.sleep(0.01)
    return t


def main() -> None:
    islurmd, path, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps([once(islurmd, path) for _ in range(reps)]))


if __name__ == "__main__":
    main()
