"""The hook's command line, as the job script gives it (daemon/slurm/submission.py
`HookCommand.argv`): parsed without argparse when it can be (10 ms of a cold connect)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="islurm-sessionhook", description="Start the per-job sshd (run by islurm's job)."
    )
    p.add_argument("--state-dir", required=True)
    p.add_argument("--port-lease", type=int, default=0)
    p.add_argument("--profile", required=True)
    p.add_argument("--ca-dir", default=None, help=argparse.SUPPRESS)  # jobs of islurm <= 0.1
    p.add_argument("--premade-key", action="store_true", help="islurmd writes a signed host key")
    p.add_argument("--warn-before", type=float, action="append", default=[])
    p.add_argument("--time-limit", type=int, default=None, help="the job's limit in seconds")
    p.add_argument("--image", default="", help="run every session in this container image")
    p.add_argument("--runtime", default="", help="enroot, apptainer or podman (default: by image)")
    p.add_argument("--bind", action="append", default=[], help="host dir mounted in the container")
    p.add_argument("--module", action="append", default=[], help="environment module to load")
    return p


#: the options parser() knows, with how each value is read (None: a flag; a list: appended)
_OPTIONS: dict[str, tuple[type, object]] = {
    "--state-dir": (str, None),
    "--port-lease": (int, 0),
    "--profile": (str, None),
    "--ca-dir": (str, None),
    "--premade-key": (bool, False),
    "--warn-before": (float, []),
    "--time-limit": (int, None),
    "--image": (str, ""),
    "--runtime": (str, ""),
    "--bind": (str, []),
    "--module": (str, []),
}


def fast_args(argv: list[str]) -> SimpleNamespace | None:
    """The argv the job script gives (`--opt value` pairs and flags), parsed as parser()
    would, without importing argparse (10 ms of a cold connect); None for anything else
    (help, an unknown or abbreviated option, a bad value, a missing one): argparse decides."""
    values: dict[str, object] = {
        k: list(v) if isinstance(v, list) else v for k, (_, v) in _OPTIONS.items()
    }
    i = 0
    while i < len(argv):
        opt = argv[i]
        if opt not in _OPTIONS:
            return None
        kind, default = _OPTIONS[opt]
        if kind is bool:
            values[opt] = True
            i += 1
            continue
        if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            return None  # argparse tells values from options its own way
        try:
            value = kind(argv[i + 1])
        except ValueError:
            return None
        if isinstance(default, list):
            values[opt].append(value)  # type: ignore[attr-defined]
        else:
            values[opt] = value
        i += 2
    if values["--state-dir"] is None or values["--profile"] is None:
        return None
    return SimpleNamespace(**{k[2:].replace("-", "_"): v for k, v in values.items()})


def parse(argv: list[str] | None) -> argparse.Namespace | SimpleNamespace:
    given = sys.argv[1:] if argv is None else argv
    return fast_args(given) or parser().parse_args(given)
