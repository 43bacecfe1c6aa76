"""Who may update, from where, how often: the user's [update], overridden by the site file,
and the classic opt-out file. Pure resolution plus the reading of those two files."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from islurm.config import paths
from islurm.config.settings import UPDATE_MODES, UpdateSettings, parse_duration

SITE_FILE = "/etc/islurm/site.toml"
SITE_ENV = "ISLURM_SITE_CONFIG"  # tests (and unusual sites) point elsewhere
# No built-in remote: the project has no public repository to name. Until the user's config or
# the site file sets `channel`, no check is made and `check` says how to set one.
DEFAULT_TAGS = "v*"
_SITE_KEYS = {"mode", "channel", "interval", "pin"}


class SiteError(ValueError):
    """The site file is unusable: updates stay off until an admin fixes it."""


@dataclass(frozen=True)
class Site:
    """What the site file sets (None: not set, the user decides)."""

    path: str
    mode: str | None = None
    channel: str | None = None
    interval: float | None = None
    pin: str | None = None


@dataclass(frozen=True)
class Policy:
    mode: str
    remote: str
    tags: str  # glob over tag names
    interval: float
    pin: str | None
    #: why the mode is what it is, in words for `islurmctl check` / `status`
    reason: str

    @property
    def configured(self) -> bool:
        """A channel (git remote) is set."""
        return bool(self.remote)

    @property
    def network(self) -> bool:
        """Checks may reach out: the mode allows it and there is somewhere to ask."""
        return self.mode != "off" and self.configured


def site_path() -> str:
    return os.environ.get(SITE_ENV) or SITE_FILE


def noauto_path() -> str:
    return os.path.join(paths.config_dir(), "noauto")


def load_site(path: str | None = None) -> Site | None:
    """The site file's [update] table, None if there is no site file; SiteError if bad."""
    path = path or site_path()
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SiteError(f"{path}: {exc}") from None
    table = raw.get("update", {})
    if not isinstance(table, dict) or set(table) - _SITE_KEYS:
        raise SiteError(f"{path}: [update] allows only {', '.join(sorted(_SITE_KEYS))}")
    mode, channel, pin = table.get("mode"), table.get("channel"), table.get("pin")
    if mode is not None and mode not in UPDATE_MODES:
        raise SiteError(f"{path}: update.mode: expected one of {', '.join(UPDATE_MODES)}")
    for key, value in (("channel", channel), ("pin", pin)):
        if value is not None and (not isinstance(value, str) or "\n" in value):
            raise SiteError(f"{path}: update.{key}: expected a one-line string")
    interval = None
    if "interval" in table:
        try:
            interval = max(10.0, parse_duration(table["interval"]))
        except ValueError as exc:
            raise SiteError(f"{path}: update.interval: {exc}") from None
    return Site(path, mode, channel, interval, pin)


def split_channel(channel: str) -> tuple[str, str]:
    """(remote, tag glob) from "URL#glob" / "URL" / "" (no remote: not configured)."""
    remote, _, tags = channel.strip().partition("#")
    return remote, tags or DEFAULT_TAGS


def resolve(user: UpdateSettings, site: Site | None, noauto: bool) -> Policy:
    """The effective policy: the site wins key by key; the opt-out file turns it off."""
    mode, reason = user.mode, f"mode {user.mode} (your config)"
    channel, interval, pin = user.channel, user.interval, None
    if site is not None:
        if site.mode is not None:
            mode, reason = site.mode, f"mode {site.mode} set by the site ({site.path})"
        channel = site.channel if site.channel is not None else channel
        interval = site.interval if site.interval is not None else interval
        pin = site.pin
    if noauto and mode != "off":
        mode, reason = "off", f"off: the opt-out file {noauto_path()} exists"
    remote, tags = split_channel(channel)
    if mode != "off" and not remote:
        reason = (
            f'{reason}, but no channel is configured: set channel = "<git URL>" under '
            f"[update] in {paths.config_file()} (or an admin in {site_path()})"
        )
    return Policy(mode, remote, tags, interval, pin, reason)


def current_policy(user: UpdateSettings) -> Policy:
    """resolve() with the files as they are now; a bad site file means off (and says why)."""
    try:
        site = load_site()
    except SiteError as exc:
        remote, tags = split_channel(user.channel)
        return Policy("off", remote, tags, user.interval, None, f"off: bad site file: {exc}")
    return resolve(user, site, os.path.exists(noauto_path()))
