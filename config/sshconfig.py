"""The ssh config blocks and known-hosts line for islurm's hosts. Pure text building."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from islurm.config.images import is_name
from islurm.config.sshwords import PLAIN as _PLAIN
from islurm.config.sshwords import config_word as config_word
from islurm.config.sshwords import refuse_line_breaks as _refuse_line_breaks

HOST_PREFIX = "slurm-"
IMAGE_SEP = "+"  # slurm-<profile>+<image name>: the profile's session in a named image
CERT_PRINCIPAL = "islurm"


def _shell_word(word: str) -> str:
    """One word of the ProxyCommand, which ssh hands to `sh -c` as written but first checks
    that its quotes balance the way argv_split reads them, where a backslash escapes a quote
    even inside single quotes: words with a backslash go in double quotes instead."""
    _refuse_line_breaks(word, "a ProxyCommand")
    if word and all(c in _PLAIN for c in word):
        return word
    if "\\" not in word:
        return shlex.quote(word)
    return '"' + "".join("\\" + c if c in '\\"$`' else c for c in word) + '"'


@dataclass(frozen=True)
class ProxySpec:
    """How ssh reaches the shim: on the login node itself; from a laptop, through the login
    node's sshd (`--via`, the laptop's shim with ProxyUseFdpass: proxyshim/hop.py); or from a
    laptop through `ssh LOGIN islurm-proxy`, the login node's shim relaying the bytes."""

    login: str | None  # None: the config is used on the login node itself
    local_command: tuple[str, ...] = ()  # argv prefix for the shim on this machine
    remote_command: str = "islurm-proxy"  # the shim on the login node, from a laptop
    #: the shim hands ssh the connected socket and exits (ProxyUseFdpass): on the login node,
    #: or with `login` and `local_command`, on a laptop through the login node's sshd
    fdpass: bool = False

    @property
    def hands_over(self) -> bool:
        """ssh takes the socket from the shim (ProxyUseFdpass)."""
        return self.fdpass and (self.login is None or bool(self.local_command))

    def command(self, profile: str, image: str = "") -> str:
        """The ProxyCommand: ssh runs it with `sh -c "exec ..."`, so each word is quoted for
        the shell, then % is doubled for ssh's own token expansion."""
        shim = ["--image", image, profile] if image else [profile]
        if self.login is None:
            argv = [*self.local_command, *(["--fdpass"] if self.fdpass else []), *shim]
        elif self.hands_over:
            via = ["--via", self.login, "--remote", self.remote_command]
            argv = [*self.local_command, *via, *shim]
        else:
            argv = ["ssh", "-T", "-o", "BatchMode=yes", self.login, self.remote_command, *shim]
        return " ".join(_shell_word(w).replace("%", "%%") for w in argv)


def host_options(
    profile: str, proxy: ProxySpec, known_hosts: str, user: str | None = None, image: str = ""
) -> list[tuple[str, str]]:
    """The ssh options for one islurm host, in ssh_config spelling."""
    options = [
        ("ProxyCommand", proxy.command(profile, image)),
        # Every job has a new host key, signed by the user's CA for this one principal.
        ("HostKeyAlias", CERT_PRINCIPAL),
        ("StrictHostKeyChecking", "yes"),
        ("UserKnownHostsFile", config_word(known_hosts, expands=True)),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("CheckHostIP", "no"),
        ("UpdateHostKeys", "no"),
        ("ServerAliveInterval", "30"),
        ("ServerAliveCountMax", "4"),
    ]
    if proxy.hands_over:
        options.append(("ProxyUseFdpass", "yes"))
    if user:
        if any(c in user for c in "%$"):
            # Newer ssh versions expand tokens in User, older ones do not: no spelling is right
            # for both.
            raise ValueError(f"cannot put user {user!r} into an ssh config: % and $ are refused")
        options.append(("User", config_word(user, expands=False)))
    return options


def host_name(profile: str, image: str = "") -> str:
    """slurm-<profile>, or slurm-<profile>+<image name> for the profile in a named image."""
    return HOST_PREFIX + profile + (IMAGE_SEP + image if image else "")


def host_block(
    profile: str, proxy: ProxySpec, known_hosts: str, user: str | None = None, image: str = ""
) -> str:
    lines = [f"Host {host_name(profile, image)}"]
    lines += [f"    {k} {v}" for k, v in host_options(profile, proxy, known_hosts, user, image)]
    return "\n".join(lines) + "\n"


def ssh_argv(
    profile: str, proxy: ProxySpec, known_hosts: str, command: list[str], image: str = ""
) -> list[str]:
    """`ssh` with the host's options on the command line (no config file needed)."""
    argv = ["ssh"]
    for key, value in host_options(profile, proxy, known_hosts, image=image):
        argv += ["-o", f"{key}={value}"]
    return [*argv, host_name(profile, image if is_name(image) else ""), *command]


def render(
    profiles: Iterable[str],
    proxy: ProxySpec,
    known_hosts: str,
    user: str | None = None,
    images: Iterable[str] = (),
) -> str:
    """A block per profile, then one per profile and named image ([containers] images)."""
    head = "# islurm hosts, generated by `islurmctl ssh-config`; regenerate rather than edit.\n"
    names = list(profiles)
    hosts = [(p, "") for p in names] + [(p, i) for i in images for p in names]
    return head + "\n".join(host_block(p, proxy, known_hosts, user, i) for p, i in hosts)


def known_hosts_line(ca_public_key: str) -> str:
    """Trust host certificates signed by the user's CA for islurm's principal."""
    return f"@cert-authority {CERT_PRINCIPAL} {ca_public_key.strip()}\n"
