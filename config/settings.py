"""The resolved configuration: built-in defaults.toml overlaid by the user's config.toml.

Everything is validated here, once; a bad file is refused with file:line:key and what is allowed.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from islurm.config.images import ImageArgError, check_image, is_name
from islurm.config.toml_locate import line_of_key

PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A config file that cannot be used, pointing at the offending key."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}")
        self.path, self.line, self.key, self.detail = path, line, key, message


@dataclass(frozen=True)
class Profile:
    name: str
    sbatch: tuple[str, ...]
    description: str = ""
    container: str = ""  # the image every session runs in ("" = on the node); key `image`
    runtime: str = ""  # enroot | apptainer | podman; "" = by the image's kind
    idle_grace: float = 600.0
    walltime_warnings: tuple[float, ...] = (600.0, 120.0)
    connect_timeout: float = 1800.0
    #: profiles that serve a connect whose job has not started after `fallback_after`
    fallbacks: tuple[str, ...] = ()
    fallback_after: float = 120.0
    keep_pending: bool = False  # keep the job that did not start (the next connect gets it)
    modules: tuple[str, ...] = ()  # environment modules the job loads once at its start


@dataclass(frozen=True)
class DaemonSettings:
    port_range: tuple[int, int] = (20000, 29999)
    poll_busy: float = 0.5
    poll_idle: float = 600.0
    shutdown_grace: float = 5.0
    idle_exit: float = 1800.0


@dataclass(frozen=True)
class ContainerSettings:
    cache_dir: str = ""  # "" = $XDG_CACHE_HOME/islurm/images
    cache_limit: int = 50 << 30  # bytes
    project_roots: tuple[str, ...] = ()  # images under these are copied to the cache first
    binds: tuple[str, ...] = ()  # host dirs mounted into every container (home always is)
    images: dict[str, str] = field(default_factory=dict)  # name -> image, for --image NAME


UPDATE_MODES = ("auto", "check-only", "off")


@dataclass(frozen=True)
class UpdateSettings:
    """The user's [update] table (a site file may override it: daemon/update/policy.py)."""

    mode: str = "auto"
    #: git remote, optionally followed by "#" and a tag glob; "" = the project's release tags
    channel: str = ""
    interval: float = 86400.0


@dataclass(frozen=True)
class Settings:
    path: str
    daemon: DaemonSettings
    update: UpdateSettings
    defaults: Profile = field(default_factory=lambda: Profile(name="", sbatch=()))
    profiles: dict[str, Profile] = field(default_factory=dict)
    containers: ContainerSettings = field(default_factory=ContainerSettings)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "90s", "10m", "4h"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        if not 0 <= value < math.inf:  # also refuses NaN
            raise ValueError(f"a duration must be a finite number >= 0, got {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"expected seconds or a string like '10m', '4h'; got {value!r}")


_SECTIONS: dict[str, set[str]] = {
    "daemon": {"port_range", "poll_busy", "poll_idle", "shutdown_grace", "idle_exit"},
    "update": {"mode", "channel", "interval", "auto_update", "remote"},
    "defaults": {
        "idle_grace",
        "walltime_warnings",
        "connect_timeout",
        "container",
        "image",
        "runtime",
    },
    "containers": {"cache_dir", "cache_limit", "project_roots", "binds", "images"},
}
_QUEUE_KEYS = {"fallbacks", "fallback_after", "keep_pending", "modules"}
_PROFILE_KEYS = {"description", "sbatch", *_SECTIONS["defaults"], *_QUEUE_KEYS}


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _dotted(*parts: str) -> str:
    """A TOML key path as written in a file: parts that are not bare keys are quoted."""
    return ".".join(p if _BARE_KEY.match(p) else '"' + p.replace('"', '\\"') + '"' for p in parts)


def _builtin() -> dict[str, Any]:
    text = resources.files("islurm.config").joinpath("defaults.toml").read_text("utf-8")
    return tomllib.loads(text)


class _Reader:
    """Validates one file's tables, remembering where to point when something is wrong."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, dotted: str, message: str) -> ConfigError:
        return ConfigError(self.path, line_of_key(self.text, dotted), dotted, message)

    def check_keys(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(f"{prefix}.{key}", f"unknown key; allowed here: {hint}")

    def duration(self, table: dict[str, Any], key: str, prefix: str, default: float) -> float:
        if key not in table:
            return default
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            raise self.fail(f"{prefix}.{key}", str(exc)) from None

    def string(self, table: dict[str, Any], key: str, prefix: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(f"{prefix}.{key}", f"expected a string, got {type(value).__name__}")
        if "\n" in value or "\x00" in value:
            raise self.fail(f"{prefix}.{key}", "newlines and NUL bytes are not allowed")
        return value


def _table(raw: dict[str, Any], key: str, reader: _Reader) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise reader.fail(key, "expected a table")
    return value


def _daemon(raw: dict[str, Any], r: _Reader, base: DaemonSettings) -> DaemonSettings:
    t = _table(raw, "daemon", r)
    r.check_keys(t, _SECTIONS["daemon"], "daemon")
    port_range = base.port_range
    if "port_range" in t:
        pr = t["port_range"]
        ok = isinstance(pr, list) and len(pr) == 2 and all(type(p) is int for p in pr)
        if not ok or not 1024 <= pr[0] <= pr[1] <= 65535:
            raise r.fail(
                "daemon.port_range", "expected [low, high] with 1024 <= low <= high <= 65535"
            )
        port_range = (pr[0], pr[1])
    return DaemonSettings(
        port_range=port_range,
        poll_busy=r.duration(t, "poll_busy", "daemon", base.poll_busy),
        poll_idle=r.duration(t, "poll_idle", "daemon", base.poll_idle),
        shutdown_grace=r.duration(t, "shutdown_grace", "daemon", base.shutdown_grace),
        idle_exit=r.duration(t, "idle_exit", "daemon", base.idle_exit),
    )


def _update(raw: dict[str, Any], r: _Reader, base: UpdateSettings) -> UpdateSettings:
    t = _table(raw, "update", r)
    r.check_keys(t, _SECTIONS["update"], "update")
    mode, channel = base.mode, base.channel
    # The keys of islurm 0.1 (and the classic tool): auto_update maps onto mode, remote onto
    # channel; written beside their new names they are refused (which one would win?).
    if "auto_update" in t:
        if "mode" in t:
            raise r.fail("update.auto_update", "replaced by update.mode; keep only mode")
        if not isinstance(t["auto_update"], bool):
            raise r.fail("update.auto_update", "expected true or false (better: mode = ...)")
        mode = "auto" if t["auto_update"] else "off"
    if "remote" in t:
        if "channel" in t:
            raise r.fail("update.remote", "replaced by update.channel; keep only channel")
        channel = r.string(t, "remote", "update", "")
    mode = r.string(t, "mode", "update", mode)
    if mode not in UPDATE_MODES:
        raise r.fail("update.mode", f"expected one of {', '.join(UPDATE_MODES)}; got {mode!r}")
    interval = r.duration(t, "interval", "update", base.interval)
    if interval < 10:
        raise r.fail("update.interval", "at least 10 s (a check reaches out to the network)")
    return UpdateSettings(
        mode=mode, channel=r.string(t, "channel", "update", channel), interval=interval
    )


def _session_options(t: dict[str, Any], r: _Reader, prefix: str, base: Profile) -> dict[str, Any]:
    warnings = base.walltime_warnings
    if "walltime_warnings" in t:
        value = t["walltime_warnings"]
        if not isinstance(value, list):
            raise r.fail(f"{prefix}.walltime_warnings", "expected a list of durations")
        try:
            warnings = tuple(sorted((parse_duration(v) for v in value), reverse=True))
        except ValueError as exc:
            raise r.fail(f"{prefix}.walltime_warnings", str(exc)) from None
    return {
        "idle_grace": r.duration(t, "idle_grace", prefix, base.idle_grace),
        "connect_timeout": r.duration(t, "connect_timeout", prefix, base.connect_timeout),
        "container": r.string(t, "image", prefix, r.string(t, "container", prefix, base.container)),
        "runtime": _runtime(r.string(t, "runtime", prefix, base.runtime), r, prefix),
        "walltime_warnings": warnings,
    }


_RUNTIMES = ("", "enroot", "apptainer", "singularity", "podman")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def _runtime(value: str, r: _Reader, prefix: str) -> str:
    if value not in _RUNTIMES:
        raise r.fail(f"{prefix}.runtime", f"expected one of {', '.join(_RUNTIMES[1:])}")
    return value


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as "500M", "20G"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))
    raise ValueError(f"expected bytes or a string like '500M', '20G'; got {value!r}")


def _paths(t: dict[str, Any], key: str, r: _Reader, base: tuple[str, ...]) -> tuple[str, ...]:
    if key not in t:
        return base
    value = t[key]
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.startswith("/") for v in value
    ):
        raise r.fail(f"containers.{key}", "expected a list of absolute paths")
    return tuple(value)


def _containers(raw: dict[str, Any], r: _Reader, base: ContainerSettings) -> ContainerSettings:
    t = _table(raw, "containers", r)
    r.check_keys(t, _SECTIONS["containers"], "containers")
    limit = base.cache_limit
    if "cache_limit" in t:
        try:
            limit = parse_size(t["cache_limit"])
        except ValueError as exc:
            raise r.fail("containers.cache_limit", str(exc)) from None
    return ContainerSettings(
        cache_dir=r.string(t, "cache_dir", "containers", base.cache_dir),
        cache_limit=limit,
        project_roots=_paths(t, "project_roots", r, base.project_roots),
        binds=_paths(t, "binds", r, base.binds),
        images=_images(t, r, base.images),
    )


def _images(t: dict[str, Any], r: _Reader, base: dict[str, str]) -> dict[str, str]:
    """[containers.images]: name = image, for `islurm-proxy P --image NAME` and the
    `slurm-<profile>+<name>` hosts."""
    value = t.get("images", base)
    if not isinstance(value, dict):
        raise r.fail("containers.images", "expected a table of name = image")
    out = {}
    for name, image in value.items():
        key = _dotted("containers", "images", name)
        if not is_name(name):
            raise r.fail(key, "image names use a-z, 0-9, '_', '.' and '-' (at most 40)")
        if not isinstance(image, str) or is_name(image):
            raise r.fail(key, "expected an absolute path or a reference such as docker://x")
        try:
            out[name] = check_image(image)
        except ImageArgError as exc:
            raise r.fail(key, str(exc)) from None
    return out


def _sbatch_options(value: object, r: _Reader, dotted: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise r.fail(dotted, 'expected a list of sbatch options, e.g. ["--partition=gpu"]')
    for opt in value:
        if not opt.startswith("-") or "\n" in opt or "\x00" in opt:
            raise r.fail(dotted, f"{opt!r} is not an sbatch option (must start with '-')")
    return tuple(value)


def _words(
    t: dict[str, Any], key: str, r: _Reader, prefix: str, base: tuple[str, ...]
) -> tuple[str, ...]:
    if key not in t:
        return base
    value = t[key]
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.strip() and not re.search(r"\s", v) for v in value
    ):
        raise r.fail(f"{prefix}.{key}", "expected a list of names without spaces")
    return tuple(value)


def _queue_options(t: dict[str, Any], r: _Reader, prefix: str, base: Profile) -> dict[str, Any]:
    """fallbacks, fallback_after, keep_pending, modules: a profile's own, never inherited
    from [defaults]."""
    keep = t.get("keep_pending", base.keep_pending)
    if not isinstance(keep, bool):
        raise r.fail(f"{prefix}.keep_pending", "expected true or false")
    return {
        "fallbacks": _words(t, "fallbacks", r, prefix, base.fallbacks),
        "fallback_after": r.duration(t, "fallback_after", prefix, base.fallback_after),
        "keep_pending": keep,
        "modules": _words(t, "modules", r, prefix, base.modules),
    }


def _check_fallbacks(profiles: dict[str, Profile], r: _Reader) -> None:
    for name, p in profiles.items():
        for fb in p.fallbacks:
            if fb == name or fb not in profiles:
                raise r.fail(
                    f"{_dotted('profiles', name)}.fallbacks",
                    f"{fb!r} is not another profile; known: {', '.join(sorted(profiles))}",
                )


def _profiles(
    raw: dict[str, Any], r: _Reader, defaults: Profile, base: dict[str, Profile]
) -> dict[str, Profile]:
    t = _table(raw, "profiles", r)
    out = dict(base)
    for name, body in t.items():
        prefix = _dotted("profiles", name)
        if not PROFILE_NAME.match(name):
            raise r.fail(prefix, "profile names use a-z, 0-9, '-' and '_' (at most 40)")
        if not isinstance(body, dict):
            raise r.fail(prefix, "expected a table")
        r.check_keys(body, _PROFILE_KEYS, prefix)
        inherited = out.get(name, defaults)
        if "sbatch" in body:
            sbatch = _sbatch_options(body["sbatch"], r, f"{prefix}.sbatch")
        elif name in out:
            sbatch = out[name].sbatch
        else:
            raise r.fail(f"{prefix}.sbatch", "a new profile needs its sbatch options")
        out[name] = Profile(
            name=name,
            sbatch=sbatch,
            description=r.string(body, "description", prefix, inherited.description),
            **_session_options(body, r, prefix, inherited),
            **_queue_options(body, r, prefix, inherited if name in out else Profile("", ())),
        )
    _check_fallbacks(out, r)
    return out


def _layer(raw: dict[str, Any], r: _Reader, base: Settings) -> Settings:
    for key in raw:
        if key not in {*_SECTIONS, "profiles"}:
            allowed = ", ".join(sorted({*_SECTIONS, "profiles"}))
            raise r.fail(key, f"unknown table; allowed at the top level: {allowed}")
    dt = _table(raw, "defaults", r)
    r.check_keys(dt, _SECTIONS["defaults"], "defaults")
    new_defaults = Profile(name="", sbatch=(), **_session_options(dt, r, "defaults", base.defaults))
    # Built-in profiles take the user's [defaults] for keys they do not set themselves.
    rebased = {
        n: Profile(
            name=n,
            sbatch=p.sbatch,
            description=p.description,
            **_session_options({}, r, "defaults", new_defaults),
            **_queue_options({}, r, "defaults", p),
        )
        for n, p in base.profiles.items()
    }
    return Settings(
        path=r.path,
        daemon=_daemon(raw, r, base.daemon),
        update=_update(raw, r, base.update),
        defaults=new_defaults,
        profiles=_profiles(raw, r, new_defaults, rebased),
        containers=_containers(raw, r, base.containers),
    )


def _base() -> Settings:
    empty = Settings(path="(built-in)", daemon=DaemonSettings(), update=UpdateSettings())
    return _layer(_builtin(), _Reader("(built-in defaults.toml)", ""), empty)


def load_settings(path: str | None) -> Settings:
    """Built-in defaults, overlaid by the file at `path` if it exists."""
    if path is None or not Path(path).exists():
        base = _base()
        return Settings(
            path or "(built-in)",
            base.daemon,
            base.update,
            base.defaults,
            base.profiles,
            base.containers,
        )
    try:
        text = Path(path).read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, "(encoding)", f"the file is not UTF-8: {exc}") from None
    return parse_settings(text, path)


def parse_settings(text: str, path: str) -> Settings:
    """The settings `text` (a config.toml's content, named `path` in errors) lays over the
    built-in defaults."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, int(m.group(1)) if m else None, "(syntax)", str(exc)) from None
    return _layer(raw, _Reader(path, text), _base())
