"""Hostile characters in the values islurm writes into ssh_config (config/sshconfig.py) and the
job's sshd_config (sessionhooks/sshd.py), read back by the real OpenSSH binaries: `ssh -G`,
a real ssh run whose ProxyCommand records its argv, and `sshd -T`. Each value must come back
exactly, or be refused with a clear error."""

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from islurm.config.sshconfig import ProxySpec, render, ssh_argv
from islurm.sessionhooks import sshd

SSHD = "/usr/sbin/sshd"
RECORDER = "import sys, json; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
PYTHON = "/usr/bin/python3"

CLASSES = {
    "space": "a b",
    "tab": "a\tb",
    "single quote": "o'brien",
    "double quote": 'say "hi"',
    "backslash": "a\\b",
    "trailing backslash": "end\\",
    "dollar": "a$b $HOME",
    "percent": "100%x %h",
    "hash": "a #b",
    "non-ASCII": "é日ñ",
}
REFUSED = {"newline": "a\nb", "carriage return": "a\rb", "NUL": "a\x00b"}
needs_binaries = pytest.mark.skipif(
    not (shutil.which("ssh") and os.access(SSHD, os.X_OK)), reason="needs OpenSSH"
)


def settings(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, []).append(value)
    return out


def user_ok(value: str) -> bool:
    return not any(c in value for c in "%$")


@needs_binaries
@pytest.mark.parametrize("value", CLASSES.values(), ids=CLASSES.keys())
def test_ssh_reads_the_generated_config_back_exactly(tmp_path: Path, value: str) -> None:
    known = str(tmp_path / f"known {value}")
    out = tmp_path / "argv.json"
    proxy = ProxySpec(login=None, local_command=(PYTHON, "-c", RECORDER, str(out), value))
    user = value if user_ok(value) else None
    config = tmp_path / "ssh_config"
    config.write_text(render(["cpu"], proxy, known, user), encoding="utf-8")

    parsed = subprocess.run(
        ["ssh", "-G", "-F", str(config), "slurm-cpu"], capture_output=True, text=True, timeout=30
    )
    assert parsed.returncode == 0, parsed.stderr
    got = settings(parsed.stdout)
    assert got["userknownhostsfile"] == [known]
    if user is not None:
        assert got["user"] == [user]

    subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "slurm-cpu", "true"],
        capture_output=True,
        timeout=30,
    )
    assert json.loads(out.read_text(encoding="utf-8")) == [value, "cpu"]


@needs_binaries
@pytest.mark.parametrize("value", CLASSES.values(), ids=CLASSES.keys())
def test_ssh_reads_the_command_line_options_back_exactly(tmp_path: Path, value: str) -> None:
    known = str(tmp_path / f"known {value}")
    out = tmp_path / "argv.json"
    proxy = ProxySpec(login=None, local_command=(PYTHON, "-c", RECORDER, str(out), value))
    argv = ssh_argv("cpu", proxy, known, ["true"])
    assert argv[0] == "ssh"
    parsed = subprocess.run(
        ["ssh", "-G", "-F", "/dev/null", *argv[1:]], capture_output=True, text=True, timeout=30
    )
    assert parsed.returncode == 0, parsed.stderr
    assert settings(parsed.stdout)["userknownhostsfile"] == [known]
    subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", *argv[1:]],
        capture_output=True,
        timeout=30,
    )
    assert json.loads(out.read_text(encoding="utf-8")) == [value, "cpu"]


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
def test_line_breaks_are_refused_in_every_ssh_config_value(value: str) -> None:
    plain = ProxySpec(login=None, local_command=(PYTHON,))
    with pytest.raises(ValueError, match="line break"):
        render(["cpu"], plain, f"/k{value}")
    with pytest.raises(ValueError, match="line break"):
        render(["cpu"], ProxySpec(login=None, local_command=(PYTHON, value)), "/k")
    with pytest.raises(ValueError, match="line break"):
        render(["cpu"], plain, "/k", user=f"u{value}")
    with pytest.raises(ValueError, match="line break"):
        ssh_argv("cpu", plain, f"/k{value}", [])


def test_values_ssh_would_expand_are_refused() -> None:
    plain = ProxySpec(login=None, local_command=(PYTHON,))
    with pytest.raises(ValueError, match="expands"):
        render(["cpu"], plain, "/home/${USER}/known_hosts")
    for user in ("a%b", "a$b"):
        with pytest.raises(ValueError, match="refused"):
            render(["cpu"], plain, "/k", user=user)


# -- sshd -------------------------------------------------------------------------------------


@pytest.fixture
def sshd_dir() -> Iterator[Path]:
    """A directory an unprivileged sshd -T can read (as root, sshd wants /run/sshd; as any
    other user it does not, and the job's sshd never runs as root)."""
    path = Path(tempfile.mkdtemp(prefix="isl-sshd-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sshd_T(directory: Path, config: str) -> dict[str, list[str]]:
    cfg = directory / "sshd_config"
    cfg.write_text(config, encoding="utf-8")
    as_nobody = os.getuid() == 0
    if as_nobody:
        for path in [directory, *directory.iterdir()]:
            os.chown(path, 65534, 65534)
    proc = subprocess.run(
        [SSHD, "-T", "-f", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        user=65534 if as_nobody else None,
        group=65534 if as_nobody else None,
        extra_groups=[] if as_nobody else None,
    )
    assert proc.returncode == 0, proc.stderr
    return settings(proc.stdout)


@needs_binaries
@pytest.mark.parametrize("value", CLASSES.values(), ids=CLASSES.keys())
def test_sshd_reads_the_generated_config_back_exactly(sshd_dir: Path, value: str) -> None:
    key = str(sshd_dir / f"key {value}")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    config = sshd.SshdConfig(
        port=22022,
        host_key=key,
        user=value,
        env={"SLURM_JOB_ACCOUNT": value, "SLURM_JOB_ID": "42", "SLURM_BROKEN": "a\nb"},
    ).render()
    got = sshd_T(sshd_dir, config)
    assert got["hostkey"] == [key]
    assert got["allowusers"] == [value]
    assert sorted(got["setenv"]) == [f"SLURM_JOB_ACCOUNT={value}", "SLURM_JOB_ID=42"]
    assert got["logingracetime"] == ["20"]
    assert got["maxstartups"] == ["64:30:128"]


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
def test_line_breaks_are_refused_in_sshd_config_paths(value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        sshd.SshdConfig(port=1, host_key=f"/k{value}", user="alice").render()
    text = sshd.SshdConfig(
        port=1, host_key="/k", user="alice", env={"SLURM_A": value, "SLURM_B": "ok"}
    ).render()
    assert [ln for ln in text.splitlines() if ln.startswith("SetEnv")] == ["SetEnv SLURM_B=ok"]


# -- PerSourcePenalties: only where sshd knows it ---------------------------------------------


@needs_binaries
def test_penalties_probe_asks_this_sshd_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = subprocess.run([SSHD, "-V"], capture_output=True, text=True).stderr
    expected = not version.startswith(("OpenSSH_8.", "OpenSSH_9.0", "OpenSSH_9.1", "OpenSSH_9.2"))
    assert sshd.per_source_penalties_supported(SSHD, str(tmp_path)) is expected
    cache = json.loads((tmp_path / "sshd-features.json").read_text(encoding="utf-8"))
    assert list(cache.values()) == [expected]

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached answer needs no process")

    monkeypatch.setattr("subprocess.run", no_process)
    assert sshd.per_source_penalties_supported(SSHD, str(tmp_path)) is expected


def test_penalties_probe_is_keyed_by_the_binary(tmp_path: Path) -> None:
    fake = tmp_path / "sshd"
    fake.write_text("#!/bin/sh\nexit 1\n")  # says nothing: it parsed the keyword
    fake.chmod(0o755)
    assert sshd.per_source_penalties_supported(str(fake), str(tmp_path)) is True
    fake.write_text(
        '#!/bin/sh\necho "$3: line 1: Bad configuration option: PerSourcePenalties" >&2\nexit 255\n'
    )  # another build at the same path: size and mtime differ
    assert sshd.per_source_penalties_supported(str(fake), str(tmp_path)) is False
    assert sorted(json.loads((tmp_path / "sshd-features.json").read_text()).values()) == [
        False,
        True,
    ]
    assert sshd.per_source_penalties_supported(str(tmp_path / "missing"), str(tmp_path)) is False


def test_penalties_are_written_only_when_supported() -> None:
    base = sshd.SshdConfig(port=1, host_key="/k", user="alice")
    assert "PerSourcePenalties" not in base.render()
    lines = sshd.SshdConfig(
        port=1,
        host_key="/k",
        user="alice",
        per_source_penalties=True,
        penalty_exempt=("10.0.0.5", "fd00::5"),
    ).render()
    assert sshd.PER_SOURCE_PENALTIES in lines.splitlines()
    assert "PerSourcePenaltyExemptList 10.0.0.5,fd00::5" in lines.splitlines()
