"""The ForceCommand wrapper: every ssh session of the job (shell, command, sftp, VS Code's
server) enters the job's container through it. Pure text building; the script is POSIX sh
and every word that comes from us is quoted (shlex), the user's command travels in
$SSH_ORIGINAL_COMMAND and is run by the image's /bin/sh, as sshd would have run it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

#: Where an image's or the node's sftp server usually is.
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
)
#: Run in the container by the hook: print the image's sftp server, if it has one.
FIND_SFTP = "for s in " + " ".join(SFTP_SERVERS) + '; do [ -x "$s" ] && echo "$s" && exit 0; done'
#: The login shell inside the container: the user's own if the image has it, else bash, sh.
LOGIN_SHELL = (
    'for s in "${ISLURM_SHELL:-}" /bin/bash /bin/sh; do '
    '[ -n "$s" ] && [ -x "$s" ] && exec "$s" -l; done; exit 127'
)


def _words(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def render(
    job_id: str,
    env: Mapping[str, str],
    exec_tty: Sequence[str],
    exec_plain: Sequence[str],
    sftp_in_image: str | None,
    sftp_on_node: str | None,
    shell: str,
) -> str:
    """The wrapper script. `exec_tty`/`exec_plain` are the runtime's argv prefixes for a
    session with and without a terminal; `sftp_in_image` the image's sftp server (preferred),
    else `sftp_on_node` serves sftp from the node (same home and project paths)."""
    lines = [
        "#!/bin/sh",
        f"# islurm: every session of job {job_id} enters the job's container. Written by the hook.",
    ]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append(f"export ISLURM_SHELL={shlex.quote(shell)}")
    lines.append("cmd=${SSH_ORIGINAL_COMMAND-}")
    if sftp_in_image:
        sftp = f"exec {_words(exec_plain)} {shlex.quote(sftp_in_image)}"
    elif sftp_on_node:
        sftp = f"exec {shlex.quote(sftp_on_node)}"
    else:
        sftp = 'echo "islurm: no sftp server in the image nor on the node" >&2; exit 1'
    lines += [
        "case $cmd in",
        f"    internal-sftp|*/sftp-server) {sftp} ;;",
        "esac",
        "if [ -t 0 ]; then",
        f'    [ -n "$cmd" ] && exec {_words(exec_tty)} /bin/sh -c "$cmd"',
        f"    exec {_words(exec_tty)} /bin/sh -c {shlex.quote(LOGIN_SHELL)}",
        "fi",
        f'[ -n "$cmd" ] && exec {_words(exec_plain)} /bin/sh -c "$cmd"',
        f"exec {_words(exec_plain)} /bin/sh -c {shlex.quote(LOGIN_SHELL)}",
    ]
    return "\n".join(lines) + "\n"
