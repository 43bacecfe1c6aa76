"""What every islurmctl command shares: failures (with their exit code, exits.py), the daemon
client."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from islurm.config import paths
from islurm.daemon.ctl.exits import Exit, exit_for

if TYPE_CHECKING:
    from islurm.config.settings import Settings


class Fail(Exception):
    """A command failed: islurmctl prints `message` and exits with `exit_code`."""

    def __init__(self, exit_code: Exit, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def settings(args: argparse.Namespace) -> Settings:
    """The user's resolved config (--config, else the default file); a bad one is a Fail."""
    from islurm.config.settings import ConfigError, load_settings

    try:
        return load_settings(args.config or paths.config_file())
    except (ConfigError, OSError) as exc:
        raise Fail(Exit.CONFIG_INVALID, str(exc)) from None


def connect(args: argparse.Namespace) -> Any:
    from islurm.daemon.ctl.client import Client, DaemonUnreachable

    try:
        return Client(args.socket or paths.socket_path())
    except DaemonUnreachable as exc:
        raise Fail(Exit.DAEMON_UNREACHABLE, str(exc)) from None


def call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    from islurm.daemon.ctl.client import DaemonUnreachable, RpcError

    with connect(args) as rpc:
        try:
            return rpc.call(method, **params)
        except RpcError as exc:
            raise Fail(exit_for(exc.code), exc.message) from None
        except DaemonUnreachable as exc:
            raise Fail(Exit.DAEMON_UNREACHABLE, str(exc)) from None
