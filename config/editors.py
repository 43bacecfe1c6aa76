"""VS Code and its relatives: where each keeps settings.json on Linux, macOS and Windows, and
the Remote-SSH settings islurm's hosts need (a ProxyCommand that may wait in Slurm's queue).
Pure: the caller passes the platform, home and environment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PurePath, PurePosixPath, PureWindowsPath

# Each editor's folder name under the platform's application-data directory.
EDITORS = {
    "VS Code": "Code",
    "VS Code Insiders": "Code - Insiders",
    "Cursor": "Cursor",
    "VSCodium": "VSCodium",
}
# Beyond the connect timeout, a margin for ssh and VS Code's own server start.
TIMEOUT_MARGIN = 60


def app_data(platform: str, home: str, env: Mapping[str, str]) -> PurePath:
    """The directory holding `<editor>/User/settings.json` (sys.platform spelling)."""
    if platform.startswith("win"):
        base = env.get("APPDATA") or str(PureWindowsPath(home, "AppData", "Roaming"))
        return PureWindowsPath(base)
    if platform == "darwin":
        return PurePosixPath(home, "Library", "Application Support")
    xdg = env.get("XDG_CONFIG_HOME", "")
    return PurePosixPath(xdg if xdg.startswith("/") else f"{home}/.config")


def editor_dirs(platform: str, home: str, env: Mapping[str, str]) -> dict[str, PurePath]:
    """Each editor's own directory (it exists where the editor was installed and run)."""
    base = app_data(platform, home, env)
    return {name: base / folder for name, folder in EDITORS.items()}


def settings_file(editor_dir: PurePath) -> PurePath:
    return editor_dir / "User" / "settings.json"


def remote_ssh_settings(
    hosts: Iterable[str], connect_timeout: float
) -> list[tuple[tuple[str, ...], object]]:
    """(path, value) pairs to set; a path of two names sets a key inside an object."""
    settings: list[tuple[tuple[str, ...], object]] = [
        # Remote-SSH gives up after 15 s by default; a job may wait in the queue for longer.
        (("remote.SSH.connectTimeout",), int(connect_timeout) + TIMEOUT_MARGIN),
        # The login terminal shows islurm's progress ("waiting for a node ...").
        (("remote.SSH.showLoginTerminal",), True),
        # Home directories are shared between login and compute nodes (often NFS).
        (("remote.SSH.lockfilesInTmp",), True),
    ]
    settings += [(("remote.SSH.remotePlatform", h), "linux") for h in hosts]
    return settings


def merge(text: str, settings: list[tuple[tuple[str, ...], object]]) -> str:
    """settings.json text with `settings` set; everything else kept byte for byte (jsonc).
    An object on a path that does not exist yet is created."""
    from islurm.config import jsonc

    for path, value in settings:
        if len(path) == 2:
            try:
                jsonc.get(text, path[:1])
            except KeyError:
                text = jsonc.set_value(text, path[:1], {})
        try:
            if jsonc.get(text, path) == value:
                continue  # right already: not even its spelling changes
        except KeyError:
            pass
        text = jsonc.set_value(text, path, value)
    return text
