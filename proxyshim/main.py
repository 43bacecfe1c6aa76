"""islurm-proxy PROFILE: the SSH ProxyCommand that lands ssh inside a Slurm job.

Asks islurmd for a ready session (starting the daemon if nobody listens), prints its progress
on stderr, then splices stdin/stdout with the job's sshd, holding the RPC connection open as
the lease on the job (docs/PROTOCOL.md §2). Nothing but SSH bytes ever goes to stdout.

Exit status (the constants: exits.py):

    ====  =====================================================================
    0     the stream ended: the node closed it, or stdout's reader (ssh) left
    1     internal error (a bug: Python's traceback is on stderr)
    2     usage error
    3     islurmd unreachable, could not be started, or broke the protocol
    4     no session: islurmd refused or failed the acquire (its message shown)
    5     cannot connect to the node's sshd, or the connection to it failed
    6     the job ended under the open session
    ====  =====================================================================

SIGHUP (ssh sends it when it exits) and SIGINT end the shim at once and quietly.

Start-up time counts (it is paid on every ssh): stdlib only, modules imported lazily, no
`socket`, `json`, `re`, `argparse`, `logging` or `signal`. The generated ssh config runs
``<venv>/bin/python -I -S <site-packages>/islurm/proxyshim/launch.py PROFILE``, which imports
this module (from its cached bytecode) and calls `main`.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket

    from islurm.proxyshim import rpc

if __name__ == "__main__" and not __package__:
    # Run as a file by an ssh config written before launch.py: start as launch.py does (and
    # 2-4 ms slower: Python compiles the file it runs, this one at every start).
    import runpy

    _launch = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch.py")
    runpy.run_path(_launch, run_name="__main__")  # exits

STALE_RETRIES = 3  # connects to an endpoint that no longer answers before giving up
NODE_HANGUP_WAIT = 5.0  # seconds to wait for islurmd's word when the node hangs up first

USAGE = """\
usage: islurm-proxy [--socket PATH] [--timeout SECONDS] [--image IMAGE] [--fdpass] PROFILE
       islurm-proxy --via LOGIN [--remote PATH] [--ssh-config FILE] [--timeout SECONDS]
                    [--image IMAGE] PROFILE
"""

HELP = (
    USAGE
    + """
SSH ProxyCommand: get a ready session for PROFILE from islurmd (starting it if needed) and
connect stdin/stdout to the sshd inside the Slurm job. Progress goes to stderr.

options:
  --socket PATH        islurmd's socket (default: $ISLURM_SOCKET, else
                       $XDG_RUNTIME_DIR/islurm/islurmd.sock, else /tmp/islurm-UID/islurmd.sock)
  --timeout SECONDS    give up when no session is ready within SECONDS
  --fdpass             hand the connected socket to ssh and exit (ssh's ProxyUseFdpass)
  --via LOGIN          on a laptop, with ProxyUseFdpass: reach the job through the login
                       node LOGIN (as ssh names it); its sshd opens the connection, as
                       with `ssh -J`, and no islurm process carries the bytes
  --remote PATH        islurm-proxy on the login node (default: islurm-proxy on its PATH)
  --ssh-config FILE    the ssh config file for the connection to LOGIN (ssh -F)
  --endpoint           on the login node, for --via: print the ready endpoint, await the
                       laptop's word, leave the job held by this ssh connection
  --image IMAGE        run the session in this container image instead of the profile's:
                       an absolute path, a reference (docker://debian:12) or a name from
                       the config's [containers] images; one job per profile and image
  -h, --help           show this help and exit
  --version            show the version and exit

exit status: 0 stream ended, 2 usage, 3 islurmd unreachable, 4 no session (islurmd's
message shown), 5 cannot reach the node, 6 the job ended under the session.
"""
)


class UsageError(Exception):
    """Bad command line."""


class Options:
    """The parsed command line."""

    def __init__(self) -> None:
        self.action = "run"  # or "help", "version"
        self.profile = ""
        self.socket: str | None = None
        self.timeout: float | None = None
        self.image: str | None = None
        self.fdpass = False
        self.via: str | None = None  # the laptop route through this login node
        self.remote = "islurm-proxy"
        self.ssh_config: str | None = None
        self.endpoint = False  # the login node's end of the laptop route
        self.command = ""  # with --via: the login node's command (hop.remote_command)


def parse_args(args: list[str]) -> Options:
    """Hand-parsed (argparse costs start-up time):
    [--socket PATH] [--timeout S] [--image IMAGE] [--fdpass] PROFILE."""
    opts = Options()
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if arg in ("-h", "--help"):
            opts.action = "help"
            return opts
        if arg == "--version":
            opts.action = "version"
            return opts
        if arg in ("--fdpass", "--endpoint"):
            setattr(opts, arg[2:], True)
            continue
        name, eq, value = arg.partition("=")
        if name in ("--via", "--remote", "--ssh-config"):
            if not eq:
                if i >= len(args):
                    raise UsageError(f"{name} needs a value")
                value = args[i]
                i += 1
            if not value or value.startswith("-"):
                raise UsageError(f"{name} needs a value, not {value!r}")
            setattr(opts, name[2:].replace("-", "_"), value)
            continue
        if name in ("--socket", "--timeout", "--image"):
            if not eq:
                if i >= len(args):
                    raise UsageError(f"{name} needs a value")
                value = args[i]
                i += 1
            if name == "--socket":
                if not value:
                    raise UsageError("--socket needs a path")
                opts.socket = value
            elif name == "--image":
                opts.image = _image(value)
            else:
                opts.timeout = _seconds(value)
            continue
        if arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        positional.append(arg)
    if not positional:
        raise UsageError("missing PROFILE")
    if len(positional) > 1:
        raise UsageError(f"one PROFILE expected, got {len(positional)}: {' '.join(positional)}")
    if not positional[0]:
        raise UsageError("PROFILE is empty")
    opts.profile = positional[0]
    if sum((opts.fdpass, opts.endpoint, opts.via is not None)) > 1:
        raise UsageError("--fdpass, --via and --endpoint exclude each other")
    if opts.via is not None:
        from islurm.proxyshim import hop

        try:
            opts.command = hop.remote_command(opts.remote, opts.profile, opts.image, opts.timeout)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return opts


def _image(text: str) -> str:
    from islurm.config.images import ImageArgError, check_image

    try:
        return check_image(text)
    except ImageArgError as exc:
        raise UsageError(f"--image: {exc}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--timeout wants seconds, not {text!r}") from None
    if not 0 < value < float("inf"):
        raise UsageError(f"--timeout wants a positive number of seconds, not {text!r}")
    return value


def _version() -> str:
    from islurm.daemon.version import VERSION  # stdlib only; read once, as islurmd reads it

    return VERSION


def connect_live(
    socket: str,
    profile: str,
    timeout: float | None,
    image: str | None = None,
    fdpass: bool = False,
) -> "tuple[rpc.Conn, rpc.Ready, _socket.socket]":
    """A session whose sshd answered: (lease connection, endpoint, node socket).

    An endpoint can go stale between islurmd's last look and our connect (the job was
    cancelled or hit its time limit): then islurmd is told, drops it, asks Slurm and answers
    with a live one, submitting anew if the job is gone. The user reads one progress line."""
    from islurm.proxyshim import node as node_
    from islurm.proxyshim import report, rpc
    from islurm.proxyshim.exits import EXIT_NODE

    # islurmd may send the connection itself, its banner arrived (a spare, spares.py): under
    # fdpass ssh waits for us to exit, and a relay's ssh for the banner.
    conn, ready = rpc.acquire(
        socket, profile, timeout, image=image, fdpass=fdpass, take_socket=True
    )
    for attempt in range(1, STALE_RETRIES + 1):
        if ready.fd is not None:
            spare = node_.adopt(ready.fd, ready.host, ready.port)
            ready.fd = None
            if spare is not None:
                return conn, ready, spare
        try:
            node = node_.connect_tcp(ready.host, ready.port)
            try:
                node_.await_banner(node)
            except BaseException:
                node.close()
                raise
            return conn, ready, node
        except report.ShimError as exc:
            if exc.code != EXIT_NODE or attempt == STALE_RETRIES:
                conn.close()
                raise
            conn.close()
            report.inform(f"{exc.message}; asking islurmd again")
            conn, ready = rpc.acquire(
                socket,
                profile,
                timeout,
                unreachable=ready,
                image=image,
                fdpass=fdpass,
                take_socket=True,
            )
    raise AssertionError("unreachable")  # the loop returns or raises


def main(argv: list[str] | None = None) -> int:
    """Run the shim; return its exit status."""
    from islurm.proxyshim.exits import EXIT_NODE, EXIT_OK, EXIT_USAGE

    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        os.write(2, f"islurm-proxy: {exc}\n{USAGE}".encode())
        return EXIT_USAGE
    if opts.action == "help":
        os.write(1, HELP.encode())
        return 0
    if opts.action == "version":
        os.write(1, f"islurm-proxy {_version()}\n".encode())
        return 0

    # Die at once and quietly when ssh goes (SIGHUP) or on ^C while waiting for a job; the
    # kernel closes the lease and the node connection. `signal` would import enum: slow.
    signals = __import__("_signal")
    signals.signal(signals.SIGHUP, signals.SIG_DFL)
    signals.signal(signals.SIGINT, signals.SIG_DFL)

    from islurm.proxyshim import report  # the rest per route: start-up time counts

    try:
        if opts.via is not None:
            from islurm.proxyshim import via

            return via.run(opts.via, opts.command, opts.ssh_config)
        if opts.socket is None:
            from islurm.config import paths

            opts.socket = paths.socket_path()
        if opts.endpoint:
            from islurm.proxyshim import endpoint

            return endpoint.run(opts.socket, opts.profile, opts.timeout, opts.image)
        conn, ready, node = connect_live(
            opts.socket, opts.profile, opts.timeout, opts.image, opts.fdpass
        )
        if opts.fdpass:
            # ssh takes the socket and we exit: islurmd holds the lease by ssh's pid from now
            # on and tells ssh's stderr if the job ends under the session.
            from islurm.proxyshim import node as node_

            node_.hand_over(node)
            try:  # noqa: SIM105 - contextlib costs start-up time
                conn.send("session.handed", {"lease": ready.lease})
            except OSError:  # islurmd went away: the job's own session count keeps it
                pass
            # ssh waits for us to exit before it goes on (waitpid after taking the socket):
            # skip the interpreter's teardown (2-3 ms). Nothing is buffered: stderr is written
            # with os.write, stdout carries nothing; the kernel closes the lease after the
            # `session.handed` line, which islurmd reads first.
            os._exit(EXIT_OK)
        from islurm.proxyshim import lease as leases
        from islurm.proxyshim import splice

        lease = leases.Lease(conn, opts.socket, ready.job_id, opts.profile)
        pump = splice.Pump(node)
        try:
            code = pump.run(lease)
        finally:
            node.close()
        if code in (EXIT_OK, EXIT_NODE) and pump.stdin_open:
            # The node hung up on us (ssh had not finished): ask islurmd whether the job ended,
            # so the user reads "job 42 was cancelled" rather than a bare "connection closed".
            why = lease.explain_end(NODE_HANGUP_WAIT)
            if why is not None:
                return why
        return code
    except report.ShimError as exc:
        report.report(exc.message)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
