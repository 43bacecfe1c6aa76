"""`islurmctl`: the user's command line for islurm sessions on the login node.

Exit codes (one table: exits.py) are stable for scripts; `--json` gives machine output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from islurm.config import paths
from islurm.config.text import terminal_safe
from islurm.daemon.ctl import (
    cache,
    common,
    doctor,
    laptop,
    purge,
    queue,
    service,
    sessions,
    setup,
    uninstall,
    update,
)
from islurm.daemon.ctl.common import Fail, call, connect
from islurm.daemon.ctl.exits import Exit, exit_for

__all__ = ["Exit", "Fail", "main"]


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return ""
    cells = [[h for h, _ in columns]] + [
        [terminal_safe(str(r.get(k, "") or "-"), one_line=True) for _, k in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        )
        + "\n"
    )


def cmd_list(args: argparse.Namespace) -> int:
    jobs = call(args, "session.list")["jobs"]
    for job in jobs:
        job["idle"] = queue.idle_words(job)
        job["serves"] = ", ".join(job.get("fallback_for") or [])
    if args.json:
        for job in jobs:
            del job["idle"], job["serves"]
        print(json.dumps(jobs, indent=2))
    elif not jobs:
        print("no islurm jobs")
    else:
        print(
            _table(
                jobs,
                [
                    ("JOBID", "job_id"),
                    ("PROFILE", "profile"),
                    ("STATE", "state"),
                    ("NODE", "node"),
                    ("USED", "time_used"),
                    ("LEFT", "time_left"),
                    ("SESSIONS", "sessions"),
                    ("IDLE CANCEL", "idle"),
                    ("FALLBACK FOR", "serves"),
                    ("CONTAINER", "container"),
                    ("REASON", "reason"),
                ],
            ),
            end="",
        )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from islurm.daemon.ctl.client import RpcError

    target = "--all" if args.all else args.target
    if not target:
        raise Fail(Exit.USAGE, "say what to cancel: a profile, a job id, or --all")
    with connect(args) as rpc:
        try:
            rpc.call("session.cancel", target=target)
        except RpcError as exc:
            raise Fail(exit_for(exc.code), exc.message) from None
        done = rpc.wait_notification("session.cancel.done")
    if done.get("error"):
        err = done["error"]
        raise Fail(exit_for(err["code"]), err["message"])
    ids = done.get("job_ids", [])
    if args.json:
        print(json.dumps({"cancelled": ids}))
    elif not ids:
        print("nothing to cancel")
    else:
        print(terminal_safe("cancelled " + ", ".join(f"job {i}" for i in ids)))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    result = call(args, "daemon.reload")
    if args.json:
        print(json.dumps(result))
    if result.get("error"):
        raise Fail(Exit.CONFIG_INVALID, f"{result['error']} (islurmd keeps its previous config)")
    if not args.json:
        print(terminal_safe(f"islurmd reloaded {result.get('config')}"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = call(args, "daemon.status")
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    w = status.get("watcher", {})
    lines = [
        f"islurmd {status['version']} (pid {status['pid']}, up {status['uptime']:.0f} s, "
        f"{status['mode']} mode)",
        *(f"  {key + ':':11}{status[key]}" for key in ("socket", "config", "state_dir", "log")),
        f"  {'slurm:':11}{w.get('error') or 'ok'} ({w.get('polls')} polls, "
        f"every {w.get('interval')} s now)",
        f"  {'sessions:':11}{status['leases']} open, {status['submissions']} jobs submitted",
        *update.status_lines(status.get("update")),
    ]
    for job in call(args, "session.list")["jobs"]:
        lines.append(
            f"  job {job['job_id']} ({job['profile']}) {job['state']}: "
            f"{job['sessions']} session(s), {job['time_left'] or '?'} left, "
            + queue.idle_words(job)
        )
    for line in lines:
        print(terminal_safe(line, one_line=True))
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    if args.available:
        return queue.show_available(args)

    settings = common.settings(args)
    profiles = {n: asdict(p) for n, p in sorted(settings.profiles.items())}
    if args.json:
        print(json.dumps(profiles, indent=2))
        return 0
    for name, p in profiles.items():
        print(terminal_safe(f"{name:16} {p['description']}", one_line=True))
        print(terminal_safe(f"{'':16} sbatch {' '.join(p['sbatch'])}", one_line=True))
    return 0


def cmd_known_hosts(args: argparse.Namespace) -> int:
    from islurm.config.sshconfig import known_hosts_line
    from islurm.daemon.sshca import default_dir, ensure_ca

    print(known_hosts_line(ensure_ca(default_dir())), end="")
    return 0


def cmd_ssh_config(args: argparse.Namespace) -> int:
    from islurm.config.installs import shim_command
    from islurm.config.sshconfig import ProxySpec, known_hosts_line, render
    from islurm.daemon.sshca import default_dir, ensure_ca

    if not args.local and not args.login:
        raise Fail(
            Exit.USAGE,
            "give --login HOST (config for your laptop) or --local "
            "(config used on the login node itself)",
        )
    settings = common.settings(args)
    profiles = args.profile or sorted(settings.profiles)
    unknown = [p for p in profiles if p not in settings.profiles]
    if unknown:
        raise Fail(Exit.NOT_FOUND, f"unknown profile(s): {', '.join(unknown)}")
    known = args.known_hosts or os.path.join(paths.config_dir(), "known_hosts")
    if args.local:
        sessions.ensure_known_hosts(known)  # where the login node's ssh will read it
        proxy = ProxySpec(login=None, local_command=shim_command(), fdpass=not args.relay)
    else:
        proxy = ProxySpec(login=args.login)
    images = sorted(settings.containers.images) if args.images else []
    print(render(profiles, proxy, known, args.user, images), end="")
    if not args.local:
        ca_pub = ensure_ca(default_dir())
        print(
            f"# Put this line in {known} on your laptop (islurmctl known-hosts prints it):\n"
            f"# {known_hosts_line(ca_pub)}",
            end="",
            file=sys.stderr,
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="islurmctl",
        description="Manage your islurm sessions (interactive SSH sessions in Slurm jobs).",
        epilog="Exit codes: " + ", ".join(f"{e.value} {e.name.lower()}" for e in Exit),
    )
    p.add_argument("--socket", help="islurmd's socket (default: the per-user one)")
    p.add_argument("--config", help="config file (default: ~/.config/islurm/config.toml)")
    p.add_argument("--version", action="store_true", help="print islurm's version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("list", cmd_list, "list your islurm jobs")
    c = add("cancel", cmd_cancel, "cancel a profile's job, a job by id, or all islurm jobs")
    c.add_argument("target", nargs="?", help="profile name or job id")
    c.add_argument("--all", action="store_true", help="cancel every islurm job")
    add("status", cmd_status, "show the daemon's state")
    add("reload", cmd_reload, "make islurmd re-read its config (a bad one is refused)")
    pr = add("profiles", cmd_profiles, "show the resolved profiles")
    pr.add_argument(
        "--available",
        action="store_true",
        help="whether each profile's job would start now, else when (asks islurmd)",
    )
    s = add("ssh-config", cmd_ssh_config, "print ssh config blocks for the profiles", False)
    s.add_argument("--login", help="login node host name as your laptop reaches it")
    s.add_argument(
        "--local",
        action="store_true",
        help="config for use on the login node itself (runs the shim directly)",
    )
    s.add_argument(
        "--relay",
        action="store_true",
        help="with --local: the shim stays and carries the bytes (by default it hands the "
        "connected socket to ssh and exits: ProxyUseFdpass, no process in the byte path)",
    )
    s.add_argument("--user", help="cluster user name, if different from the laptop's")
    s.add_argument("--known-hosts", help="known_hosts file the config points at")
    s.add_argument("--profile", action="append", help="only this profile (repeatable)")
    s.add_argument(
        "--no-images",
        dest="images",
        action="store_false",
        help="no slurm-<profile>+<image> hosts for the [containers] images",
    )
    add("known-hosts", cmd_known_hosts, "print the @cert-authority line for known_hosts", False)
    sessions.register(sub)
    cache.register(sub)
    doctor.register(sub)
    service.register(sub)
    setup.register(sub)
    uninstall.register(sub)
    purge.register(sub)
    update.register(sub)
    h = sub.add_parser("help", help="show help for a command")
    h.add_argument("topic", nargs="?")
    h.set_defaults(fn=None)
    return p


def _quiet_logs() -> None:
    """Library logs (the Slurm client's) go to stderr, warnings and worse only: stdout is
    islurmctl's own output."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    _quiet_logs()
    parser = _parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.version:
        from islurm.daemon.version import VERSION

        print(VERSION)
        return 0
    if laptop.forwards(args.command, args.socket):  # setup ran here: the login node answers
        if args.command == "doctor":
            from islurm.daemon.ctl import doctor_laptop

            return doctor_laptop.run(argv, args.json)
        return laptop.forward(argv)
    if args.command is None or args.command == "help":
        topic = getattr(args, "topic", None)
        if topic:
            parser.parse_args([topic, "--help"])
        parser.print_help()
        return 0 if args.command == "help" else Exit.USAGE
    try:
        code: int = args.fn(args)
        return code
    except Fail as fail:
        print(f"islurmctl: {terminal_safe(str(fail))}", file=sys.stderr)
        return fail.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
