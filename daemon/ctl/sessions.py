"""islurmctl commands that open sessions: `ssh` (a shell in a profile's job) and `gpuswap`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from islurm.config import paths
from islurm.config.files import write_text_atomic
from islurm.config.sshconfig import HOST_PREFIX, ProxySpec, host_name, ssh_argv
from islurm.config.text import terminal_safe
from islurm.daemon.ctl.common import Fail, connect
from islurm.daemon.ctl.exits import Exit, exit_for


def _ssh_to(profile: str, command: list[str], image: str = "") -> list[str]:
    """ssh with the host options `islurmctl ssh-config --local` would write (strict CA)."""
    import islurm.proxyshim.launch as shim

    proxy = ProxySpec(
        login=None, local_command=(sys.executable, "-I", "-S", os.path.abspath(shim.__file__))
    )
    known = os.path.join(paths.config_dir(), "known_hosts")
    return ssh_argv(profile, proxy, known, command, image)


def _exec_ssh(argv: list[str]) -> int:
    from islurm.daemon.ctl.sshclient import exec_ssh

    try:
        exec_ssh(argv)
    except OSError as exc:
        raise Fail(Exit.ERROR, f"cannot run ssh: {exc}") from None
    return Exit.ERROR  # exec_ssh returns only on failure


def ensure_known_hosts(path: str | None = None) -> str:
    """Write the @cert-authority line for the user's CA (creating the CA on first use)."""
    from islurm.config.sshconfig import known_hosts_line
    from islurm.daemon.sshca import default_dir, ensure_ca

    path = path or os.path.join(paths.config_dir(), "known_hosts")
    line = known_hosts_line(ensure_ca(default_dir()))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_text_atomic(path, line, 0o600)
    return path


def cmd_ssh(args: argparse.Namespace) -> int:
    ensure_known_hosts()
    return _exec_ssh(_ssh_to(args.profile, args.command, getattr(args, "image", None) or ""))


def _follow(rpc: Any, as_json: bool) -> dict[str, Any]:
    """Relay progress to stderr until the session is ready; the ready params."""
    while True:
        msg = rpc.read_message()
        method, params = msg.get("method"), msg.get("params") or {}
        if method == "session.progress":  # stderr, also with --json: stdout stays parseable
            print(f"islurm: {terminal_safe(str(params.get('message', '')))}", file=sys.stderr)
        elif method == "session.ready":
            return dict(params)
        elif method in ("session.failed", "session.ended"):
            raise Fail(exit_for(int(params.get("code", 1))), str(params.get("message")))


def cmd_gpuswap(args: argparse.Namespace) -> int:
    from islurm.daemon.ctl.client import RpcError

    with connect(args) as rpc:
        try:
            started = rpc.call(
                "session.gpuswap",
                profile=args.profile,
                source=args.source,
                release_cpu=args.release_cpu,
                keep_constraints=not args.no_keep_constraints,
                **({"image": args.image} if args.image else {}),
                no_image=args.no_image,
            )
        except RpcError as exc:
            raise Fail(exit_for(exc.code), exc.message) from None
        ready = _follow(rpc, args.json)
    image = started.get("image")  # None: the GPU profile's own
    host = _host_for(args, image)
    summary = {
        "job_id": ready["job_id"],
        "node": ready["node"],
        "profile": args.profile,
        "host": host,
        "source_job": started.get("source_job"),
        "released_cpu": bool(args.release_cpu),
        "image": image,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            terminal_safe(
                f"GPU session ready: job {ready['job_id']} on {ready['node']} "
                f"(profile {args.profile}" + (f", image {image})." if image else ").")
            )
        )
        if host:
            print(terminal_safe(f"Reconnect VS Code (Remote-SSH) to host: {host}"))
        else:
            print(
                terminal_safe(
                    f"No ssh host names image {image}: name it in [containers] images "
                    "and regenerate the ssh config to reconnect VS Code to it."
                    if image
                    else "The GPU session runs without a container: no ssh host names that."
                )
            )
    if sys.stdin.isatty() and sys.stdout.isatty() and not args.no_shell and not args.json:
        return cmd_ssh(argparse.Namespace(profile=args.profile, command=[], image=image))
    return 0


def _host_for(args: argparse.Namespace, image: str | None) -> str:
    """The ssh host that lands in the GPU job: slurm-<profile>, slurm-<profile>+<name> for a
    named image; "" when the image has no name in the config."""
    if not image:  # "" (--no-image) has a host only when the profile names no image
        return f"{HOST_PREFIX}{args.profile}" if image is None else ""
    from islurm.config.settings import ConfigError, load_settings

    try:
        named = load_settings(args.config or paths.config_file()).containers.images
    except (ConfigError, OSError):
        named = {}
    for name, path in sorted(named.items()):
        if path == image or name == image:
            return host_name(args.profile, name)
    return ""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "ssh",
        help="a shell (or a command) in a profile's job",
        description="Open a shell in the profile's job (submitting one if "
        "needed), with strict host-key checking against your islurm CA.",
    )
    s.add_argument("profile", nargs="?", default="cpu", help="profile (default: cpu)")
    s.add_argument("--image", help="in this image (path, reference or [containers] images name)")
    s.add_argument("command", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    s.set_defaults(fn=cmd_ssh)
    g = sub.add_parser(
        "gpuswap",
        help="move from your CPU session to a GPU session",
        description="Bring up a GPU session that keeps the CPU job's "
        "constraints (excluded nodes, features such as the architecture); "
        "open a shell there when run in a terminal.",
    )
    g.add_argument("--profile", default="gpu", help="GPU profile (default: gpu)")
    g.add_argument(
        "--from", dest="source", default="cpu", help="profile or job id to swap from (default: cpu)"
    )
    g.add_argument(
        "--release-cpu",
        action="store_true",
        help="cancel the CPU job once the GPU session is ready",
    )
    g.add_argument(
        "--no-keep-constraints",
        action="store_true",
        help="do not carry the CPU job's excluded nodes and features over",
    )
    which = g.add_mutually_exclusive_group()
    which.add_argument(
        "--image", help="run the GPU session in this image (default: the CPU session's)"
    )
    which.add_argument(
        "--no-image", action="store_true", help="run the GPU session without a container"
    )
    g.add_argument("--no-shell", action="store_true", help="do not open a shell")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.set_defaults(fn=cmd_gpuswap)
