"""What `islurmctl setup` and `uninstall` run on the login node before (or after) islurm is
there: sent as the program of `python3 -c` over ssh, so it uses the standard library only
and syntax a Python 3.7 still compiles (it reports an old version rather than failing on
it). It prints one JSON object on stdout; pip's chatter goes to stderr.

  probe [--add-key LINE]      versions and what exists; append LINE to authorized_keys once
  install SHA256 [--offline]  read files (name, size, bytes) from stdin, install into the venv
  write-config SHA256|- [--remove]
                              config.toml := stdin (or removed) if it still has SHA256
  uninstall [--remove-key LINE] [--remove-ca] [--config-created]
                              `islurmctl purge` (daemon, jobs, units, islurm's own files),
                              then the venv and our public key
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

VENV = os.path.join(".local", "share", "islurm", "venv")
MARK = os.path.join(VENV, "islurm-wheel.sha256")
CA = os.path.join(".config", "islurm", "ca")
AUTH = os.path.join(".ssh", "authorized_keys")
MIN_PYTHON = (3, 11)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except OSError:
        return None


def config_file() -> str:
    """islurm's config.toml as config/paths.py finds it (this file cannot import it)."""
    explicit = os.environ.get("ISLURM_CONFIG")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "islurm", "config.toml")


def installed_version() -> str | None:
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        return None
    code = "import importlib.metadata as m; print(m.version('islurm'))"
    r = subprocess.run([py, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return None
    return r.stdout.decode().strip() or None


def add_key(line: str) -> bool:
    os.makedirs(".ssh", mode=0o700, exist_ok=True)
    text = _read(AUTH) or ""
    if line in text.splitlines():
        return False
    fd = os.open(AUTH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(("" if text == "" or text.endswith("\n") else "\n") + line + "\n")
    os.chmod(AUTH, 0o600)
    return True


def remove_key(line: str) -> bool:
    text = _read(AUTH)
    if text is None or line + "\n" not in text:
        return False
    with open(AUTH, "w") as f:
        f.write(text.replace(line + "\n", "", 1))
    return True


def probe(args: list[str]) -> dict[str, Any]:
    out = {
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "python_ok": tuple(sys.version_info[:2]) >= MIN_PYTHON,
        "installed": installed_version(),
        "wheel_sha256": (_read(MARK) or "").strip() or None,
        "ca_exists": os.path.isdir(CA),
        "config_path": config_file(),
        "config": _read(config_file()),
        "key_added": False,
        "user": getpass.getuser(),
    }
    if args[:1] == ["--add-key"]:
        out["key_added"] = add_key(args[1])
    return out


def _receive(directory: str) -> list[str]:
    """Files from stdin: a line with the base name, a line with the size, the bytes."""
    names: list[str] = []
    inp = sys.stdin.buffer
    while True:
        name = inp.readline().decode().strip()
        if not name:
            return names
        size = int(inp.readline())
        if os.path.basename(name) != name or not name.endswith(".whl"):
            raise SystemExit("refusing file name " + repr(name))
        with open(os.path.join(directory, name), "wb") as f:
            f.write(inp.read(size))
        names.append(name)


def _pip(*args: str) -> None:
    py = os.path.join(VENV, "bin", "python")
    argv = [py, "-m", "pip", "-q", "--disable-pip-version-check", *args]
    subprocess.run(argv, check=True, stdout=sys.stderr)


def install(args: list[str]) -> dict[str, Any]:
    sha, offline = args[0], "--offline" in args
    tmp = tempfile.mkdtemp(prefix="islurm-setup-")
    try:
        names = _receive(tmp)
        ours = [n for n in names if n.startswith("islurm-")]
        if len(ours) != 1:
            raise SystemExit("expected one islurm wheel, got " + repr(names))
        wheel = os.path.join(tmp, ours[0])
        if not os.path.exists(os.path.join(VENV, "bin", "python")):
            os.makedirs(os.path.dirname(VENV), mode=0o700, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, stdout=sys.stderr)
        index = ["--no-index", "--find-links", tmp] if offline else []
        _pip("install", "--force-reinstall", "--no-deps", wheel)
        _pip("install", *index, wheel)
        with open(MARK, "w") as f:
            f.write(sha + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"installed": installed_version()}


def write_config(args: list[str]) -> dict[str, Any]:
    """Replace config.toml with stdin's text only if it is still what setup read (SHA256 of
    its bytes; "-": it did not exist), so an edit made meanwhile is never lost."""
    path, text = config_file(), sys.stdin.buffer.read()
    current = _read(path)
    have = "-" if current is None else hashlib.sha256(current.encode("utf-8")).hexdigest()
    if have != args[0]:
        raise SystemExit(path + " changed while setup ran: run setup again")
    if "--remove" in args:
        if current is not None:
            os.unlink(path)
        return {"written": current is not None}
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".islurm-setup.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(text)
    if current is not None:
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)
    return {"written": True}


def uninstall(args: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"venv": False, "key_removed": False, "purge": None}
    ctl = os.path.join(VENV, "bin", "islurmctl")
    if os.path.exists(ctl):
        flags = [f for f in ("--remove-ca", "--config-created") if f in args]
        r = subprocess.run([ctl, "purge", "--json", *flags], stdout=subprocess.PIPE)
        if r.returncode != 0:
            raise SystemExit("`islurmctl purge` failed on the login node: nothing else removed")
        out["purge"] = json.loads(r.stdout.decode())
    top = os.path.dirname(VENV)
    if os.path.isdir(top):
        shutil.rmtree(top)
        out["venv"] = True
    if "--remove-key" in args:
        out["key_removed"] = remove_key(args[args.index("--remove-key") + 1])
    return out


def main(argv: list[str]) -> None:
    os.chdir(os.path.expanduser("~"))
    actions = {
        "probe": probe,
        "install": install,
        "write-config": write_config,
        "uninstall": uninstall,
    }
    result = actions[argv[0]](argv[1:])
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
