"""The laptop's ssh configuration as `islurmctl setup` writes it: our own file of `slurm-*`
hosts, the one `Include` line at the top of ~/.ssh/config that pulls it in, and the check of
what `ssh -G` makes of the result. Pure text building and parsing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from islurm.config.sshconfig import CERT_PRINCIPAL, HOST_PREFIX, ProxySpec, config_word, host_block

# Where setup puts islurm on the login node, relative to the remote home (ssh runs remote
# commands there), so no PATH and no home directory need to be known on the laptop.
REMOTE_VENV = ".local/share/islurm/venv"
REMOTE_PROXY = f"{REMOTE_VENV}/bin/islurm-proxy"
REMOTE_CTL = f"{REMOTE_VENV}/bin/islurmctl"

# Laptop side, as ssh spells them (ssh expands ~ in Include, IdentityFile, UserKnownHostsFile).
KEY = "~/.ssh/islurm"
DIR = "~/.ssh/islurm.d"
CONFIG = f"{DIR}/config"
KNOWN_HOSTS = f"{DIR}/known_hosts"

INCLUDE_COMMENT = "# islurm: added by `islurmctl setup`, removed by `islurmctl uninstall`"
INCLUDE_LINES = f"{INCLUDE_COMMENT}\nInclude {CONFIG}\n"


@dataclass(frozen=True)
class Target:
    """The login node as the laptop's ssh names it, and the cluster user if one was given."""

    login: str
    user: str | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.login}" if self.user else self.login


def render_config(
    target: Target, profiles: Iterable[str], cluster_user: str, laptop_shim: Sequence[str] = ()
) -> str:
    """Our ssh config file: one `Host slurm-<profile>` per profile, reached through the login
    node, and our key offered to the login node in addition to the user's own settings.
    The job's sshd admits only the cluster user, whatever the laptop's user is called.
    `laptop_shim`: the laptop's shim command, for the route where the login node's sshd opens
    the connection to the job (no relay there); empty: the login node's shim relays."""
    proxy = ProxySpec(
        login=target.destination,
        remote_command=REMOTE_PROXY,
        local_command=tuple(laptop_shim),
        fdpass=bool(laptop_shim),
    )
    parts = [
        "# islurm hosts, written by `islurmctl setup`: re-run it rather than edit this file.\n",
        f"Host {config_word(target.login, expands=False)}\n    IdentityFile {KEY}\n",
    ]
    for p in profiles:
        block = host_block(p, proxy, KNOWN_HOSTS, cluster_user)
        parts.append(block + f"    IdentityFile {KEY}\n")
    return "\n".join(parts)


def add_include(text: str | None) -> str:
    """~/.ssh/config with our Include first: ssh keeps the first value it reads for an
    option, so nothing the user wrote above could weaken our hosts' checking."""
    text = text or ""
    if text.startswith(INCLUDE_LINES):
        return text
    return INCLUDE_LINES + remove_include(text)


def remove_include(text: str) -> str:
    """The text without our two lines (wherever they are), every other byte kept."""
    while INCLUDE_LINES in text:
        text = text.replace(INCLUDE_LINES, "", 1)
    return text


def parse_ssh_g(text: str) -> dict[str, str]:
    """`ssh -G HOST` output: one `key value` per line; the first of a repeated key."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out.setdefault(key.lower(), value)
    return out


def check_resolved(host: str, resolved: Mapping[str, str], known_hosts: str) -> list[str]:
    """What is wrong with the options ssh resolved for one of our hosts (empty: all right).
    `known_hosts` is our file as ssh prints it (the ~ expanded)."""
    problems = []
    if resolved.get("stricthostkeychecking") != "true":
        problems.append(
            f"{host}: StrictHostKeyChecking is {resolved.get('stricthostkeychecking')!r}, "
            "not yes: a setting read before our Include wins"
        )
    files = resolved.get("userknownhostsfile", "").split()
    if files[:1] != [known_hosts]:
        problems.append(f"{host}: UserKnownHostsFile is {' '.join(files)!r}, not {known_hosts}")
    if resolved.get("hostkeyalias") != CERT_PRINCIPAL:
        problems.append(
            f"{host}: HostKeyAlias is {resolved.get('hostkeyalias')!r}, not {CERT_PRINCIPAL}"
        )
    return problems


def host_name(profile: str) -> str:
    return f"{HOST_PREFIX}{profile}"
