"""`islurmd`: the per-user login-node daemon."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from islurm.config import paths


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="islurmd",
        description="Per-user islurm daemon: owns Slurm job lifecycles and serves islurm-proxy "
        "and islurmctl over a Unix socket. Normally started on demand by islurm-proxy or by "
        "systemd socket activation.",
    )
    p.add_argument(
        "--socket",
        default=None,
        help="Unix socket path (default: %(default)s → "
        "$XDG_RUNTIME_DIR/islurm/islurmd.sock or /tmp/islurm-$UID/islurmd.sock)",
    )
    p.add_argument(
        "--config", default=None, help="config file (default: ~/.config/islurm/config.toml)"
    )
    p.add_argument("--state-dir", default=None, help="state dir (default: ~/.local/state/islurm)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument(
        "--selftest",
        action="store_true",
        help="check this install (imports, a throw-away daemon, a shim round trip) and exit",
    )
    return p


def _release_stderr() -> None:
    """If our stderr is the pipe of the islurm-proxy that started us, put /dev/null there: the
    proxy sees EOF, and nothing later (sbatch's stderr included) writes into a dead pipe."""
    from islurm.proxyshim.spawn import STARTUP_STDERR_ENV

    if os.environ.pop(STARTUP_STDERR_ENV, None) != "1":
        return
    with contextlib.suppress(OSError):  # the proxy went away (ssh hung up): nobody to tell
        sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # jsonrpcserver 5.0.9 warns about importlib.resources on import; nothing we can act on.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="jsonrpcserver")
    import trio

    from islurm.config.settings import ConfigError, load_settings
    from islurm.daemon import logs, version
    from islurm.daemon.app import Daemon, Options
    from islurm.daemon.rpc import lock, unix_listener

    if args.version:
        print(f"islurmd {version.VERSION}")
        return 0
    if args.selftest:
        from islurm.daemon.update import selftest

        return selftest.run()
    try:
        state = paths.ensure_state_dirs(args.state_dir)
    except OSError as exc:
        print(f"islurmd: unsafe state directory: {exc}", file=sys.stderr)
        return 2
    logs.setup(os.path.join(paths.log_dir(state), "islurmd.log"), args.log_level)
    import structlog

    log = structlog.get_logger("islurm.daemon")
    config = args.config or paths.config_file()
    try:
        settings = load_settings(config)
    except (ConfigError, OSError) as exc:
        print(f"islurmd: {exc}", file=sys.stderr)
        log.error("config.invalid", error=str(exc))
        return 2
    sock = args.socket or paths.socket_path()
    listener = unix_listener.from_systemd()
    mode = "systemd" if listener is not None else "on-demand"
    ours: tuple[int, int] | None = None
    try:
        if listener is None:
            paths.ensure_private_dir(os.path.dirname(sock))
            # A daemon on its way out holds the lock until its grace (and a flush) is over.
            lock_fd = lock.await_lock(sock, settings.daemon.shutdown_grace + 2.0)
            listener = unix_listener.bind(sock)
            ours = unix_listener.identity(sock)
        else:
            # systemd bound the socket and owns the file; we report what it really is.
            name = listener.socket.getsockname()
            sock = name if isinstance(name, str) and name else sock
            paths.ensure_private_dir(os.path.dirname(sock))
            lock_fd = lock.take_over_lock(sock)
    except lock.AlreadyRunning as exc:
        log.info("daemon.already_running", socket=sock, why=str(exc))
        return 0
    except OSError as exc:
        print(f"islurmd: cannot listen on {sock}: {exc}", file=sys.stderr)
        log.error("daemon.listen_failed", socket=sock, error=str(exc))
        return 3
    from islurm.daemon.sshca import CaError, ensure_ca
    from islurm.daemon.sshca import default_dir as default_ca_dir

    ca_dir = default_ca_dir()
    try:
        ensure_ca(ca_dir)  # created on first use; islurmd signs each job's host key with it
    except (CaError, OSError) as exc:
        print(f"islurmd: cannot create the SSH CA in {ca_dir}: {exc}", file=sys.stderr)
        log.error("daemon.ca_failed", ca_dir=ca_dir, error=str(exc))
        return 3
    opts = Options(socket=sock, config=config, state_dir=state, mode=mode, ca_dir=ca_dir)
    daemon = Daemon(opts, settings)
    held = [lock_fd]

    def let_the_next_daemon_start() -> None:
        if held:
            unix_listener.remove_socket(sock, ours)  # never a socket systemd (or another) bound
            os.close(held.pop())

    daemon.on_stopped_serving = let_the_next_daemon_start
    # Listening: the shim that started us stops waiting for our error at EOF on our stderr.
    _release_stderr()
    try:
        trio.run(daemon.run, listener)
    finally:
        let_the_next_daemon_start()
        log.info("daemon.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
