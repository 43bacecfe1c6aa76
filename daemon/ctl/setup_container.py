"""Setup's container choice (`islurmctl setup --container IMAGE`): the image the chosen
profiles run in, kept as one marked block in the login node's config.toml
(config/setupconfig.py), so `ssh slurm-<profile>` lands in it. The new file is checked with
the settings loader of this version (the login node runs the same) before it is sent, and
written there only if nobody changed it since setup read it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from islurm.config import setupconfig
from islurm.config.images import ImageArgError, check_image, is_name
from islurm.config.settings import ConfigError, parse_settings
from islurm.daemon.ctl.common import Fail
from islurm.daemon.ctl.exits import Exit
from islurm.daemon.ctl.localfiles import diff_text

QUESTION = "container image for the profiles (a path, docker://..., or a name; empty: none)"


def choose(
    given: str | None, recorded: str | None, ask: Callable[[str, str | None], str | None]
) -> str | None:
    """The image setup records: --container's (an empty one: none), else the answer on a
    terminal (empty keeps the recorded one), else the recorded one; checked like --image."""
    value = given if given is not None else ask(QUESTION, recorded)
    value = (value or "").strip()
    if not value:
        return None
    try:
        return check_image(value)
    except ImageArgError as exc:
        raise Fail(Exit.USAGE, f"--container: {exc}") from None


def new_config(
    info: dict[str, Any], profiles: list[str], image: str | None, created: bool
) -> str | None:
    """The login node's config.toml after setup (None: it must not exist), checked."""
    old: str | None = info.get("config")
    path = str(info.get("config_path", "config.toml"))
    new = setupconfig.with_image(old, profiles, image)
    if new is not None and created and not new.strip():
        return None  # setup made the file for the image alone
    if new is None or new == old:
        return new
    try:
        settings = parse_settings(new, path)
    except ConfigError as exc:
        raise Fail(
            Exit.CONFIG_INVALID,
            f"the login node's config would not load with the image: {exc} (a profile "
            f"defined there itself takes `image = {image!r}` in its own table)",
        ) from None
    if image and is_name(image) and image not in settings.containers.images:
        raise Fail(
            Exit.NOT_FOUND,
            f"--container {image}: no such name under [containers.images] in {path} on "
            "the login node (give a path or a reference instead)",
        )
    return new


def sha256(text: str | None) -> str:
    return "-" if text is None else hashlib.sha256(text.encode()).hexdigest()


def show(info: dict[str, Any], new: str | None) -> str:
    """The change as a diff, named as on the login node."""
    return diff_text(f"{info.get('config_path')} (login node)", info.get("config"), new)
