"""`islurmctl cache list|prune`: the per-user image cache (daemon/imagecache.py), read and
pruned in place under its per-image locks; islurmd need not run."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from islurm.config.settings import parse_size
from islurm.config.text import terminal_safe
from islurm.daemon.ctl import common
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.imagecache import Entry, ImageCache
from islurm.daemon.imageprep import cache_for


def _cache(args: argparse.Namespace) -> ImageCache:
    settings = common.settings(args)
    return cache_for(settings.containers)


def _row(e: Entry) -> dict[str, Any]:
    return {
        "key": e.key,
        "source": e.source,
        "path": e.path,
        "size": e.size,
        "sha256": e.sha256,
        "last_used": e.last_used,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def cmd_list(args: argparse.Namespace) -> int:
    cache = _cache(args)
    entries = cache.entries()
    if args.json:
        print(
            json.dumps(
                {"dir": cache.root, "limit": cache.limit, "images": [_row(e) for e in entries]},
                indent=2,
            )
        )
        return 0
    total = sum(e.size for e in entries)
    print(
        terminal_safe(
            f"{cache.root}: {len(entries)} image(s), {_mib(total)} of {_mib(cache.limit)}"
        )
    )
    for e in reversed(entries):  # most recently used first
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(terminal_safe(f"  {_mib(e.size):>12}  {used}  {e.source}", one_line=True))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    cache = _cache(args)
    try:
        limit = 0 if args.all else (parse_size(args.limit) if args.limit else None)
    except ValueError as exc:
        raise Fail(Exit.USAGE, f"--limit: {exc}") from None
    removed = cache.prune(limit)
    if args.json:
        print(json.dumps({"removed": [_row(e) for e in removed]}))
    elif not removed:
        print("nothing to prune")
    for e in [] if args.json else removed:
        print(terminal_safe(f"removed {e.source} ({_mib(e.size)})", one_line=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    help_ = "the image cache: images on project storage copied for your containers"
    c = sub.add_parser("cache", help=help_, description=help_)
    actions = c.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="cached images, most recently used first")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(fn=cmd_list)
    pr = actions.add_parser(
        "prune",
        help="evict least recently used images past the limit (an image being copied is kept)",
    )
    pr.add_argument("--limit", help="down to this size (e.g. 10G; default: cache_limit)")
    pr.add_argument("--all", action="store_true", help="remove every image not being copied")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(fn=cmd_prune)
