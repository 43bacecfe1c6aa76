"""What `islurmctl setup` and `uninstall` run on the login node before (or after) islurm is
there: sent as the program of `python3 -c` over ssh, so it uses the standard library only
and syntax a Python 3.7 still compiles (it reports an old version rather than failing on
it). It prints one JSON object on stdout; pip's chatter goes to stderr.

  probe [--add-key LINE]      versions and what exists; append LINE to authorized_keys once
  install SHA256 [--offline]  read files (name, size, bytes) from stdin, install into the venv
  uninstall [--remove-key LINE] [--remove-ca]
"""

from __future__ import annotations

import getpass
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
        with open(path) as f:
            return f.read()
    except OSError:
        return None


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


def uninstall(args: list[str]) -> dict[str, Any]:
    out = {"units": False, "venv": False, "key_removed": False, "ca_removed": False}
    ctl = os.path.join(VENV, "bin", "islurmctl")
    if os.path.exists(ctl):
        r = subprocess.run([ctl, "service", "uninstall"], stdout=sys.stderr, stderr=sys.stderr)
        out["units"] = r.returncode == 0
    top = os.path.dirname(VENV)
    if os.path.isdir(top):
        shutil.rmtree(top)
        out["venv"] = True
    if "--remove-key" in args:
        out["key_removed"] = remove_key(args[args.index("--remove-key") + 1])
    if "--remove-ca" in args and os.path.isdir(CA):
        shutil.rmtree(CA)
        out["ca_removed"] = True
    return out


def main(argv: list[str]) -> None:
    os.chdir(os.path.expanduser("~"))
    actions = {"probe": probe, "install": install, "uninstall": uninstall}
    result = actions[argv[0]](argv[1:])
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
