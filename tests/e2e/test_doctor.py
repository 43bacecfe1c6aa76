"""`islurmctl doctor` on the real cluster, as the unprivileged test user: a healthy setup passes
(its own test job cancelled, nothing left behind); a stopped slurmctld is named with its fix."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import TEST_CONFIG, Cluster, User

SLURM_FIX = "      fix: check that slurmctld is running (scontrol ping)"
STATUSES = ("ok    ", "warn  ")


def _good_config() -> str:
    """The test config without its deliberately broken profile: every profile passes here."""
    head, rest = TEST_CONFIG.split("[profiles.bad]", 1)
    return head + "[profiles.short]" + rest.split("[profiles.short]", 1)[1]


def test_doctor_passes_and_cancels_its_own_test_job(user: User, tmp_path: Path) -> None:
    user.prepare(_good_config(), tmp_path)
    r = user.islurmctl("doctor", timeout=300)
    out, err = r.stdout.decode(), r.stderr.decode()
    print(out)  # the report, for whoever reads the test log
    assert r.returncode == 0, out + err
    lines = out.splitlines()
    assert lines and all(ln.startswith(STATUSES) for ln in lines), out
    names = [ln[6:].split(":", 1)[0] for ln in lines]
    assert names[:3] == ["config", "ssh", "ssh-keygen"]
    assert "daemon" in names and "slurm" in names and "profile short" in names
    test_job = lines[-1]
    assert test_job.startswith("ok    test job (cpu): job "), out
    assert "sshd answered SSH-2.0-" in test_job and "(doctor submitted it)" in test_job
    job_id = test_job.split("cancelled job ", 1)[1].split()[0]
    assert user.live_jobs() == []
    mine = [j for j in user.jobs(all_states=True) if j["job_id"] == job_id]
    assert mine and mine[0]["name"] == "islurm-cpu", user.jobs(all_states=True)
    assert mine[0]["state"] in ("CANCELLED", "COMPLETING"), mine


def test_doctor_names_slurm_unreachable_when_slurmctld_is_down(
    user: User, cluster: Cluster
) -> None:
    stopped = cluster.script("stop-ctld")
    try:
        assert stopped.returncode == 0, stopped.stderr
        r = user.islurmctl("doctor", "--quick", timeout=300)
    finally:
        started = cluster.script("start-ctld")
        assert started.returncode == 0, started.stderr
    out = r.stdout.decode()
    print(out)
    assert r.returncode == 5, out  # EXIT["slurm_unreachable"]
    assert "FAIL  slurm: Slurm controller unreachable: " in out
    assert SLURM_FIX in out.splitlines()[out.splitlines().index(_line(out, "FAIL  slurm")) + 1]
    assert "warn  profiles: not checked: Slurm does not answer" in out


def test_doctor_shows_sbatchs_own_refusal_of_a_profile(user: User) -> None:
    r = user.islurmctl("doctor", "--quick", "--profile", "bad", timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 1, out  # EXIT["error"]
    line = _line(out, "FAIL  profile bad: ")
    assert "sbatch --test-only refused it: sbatch: error: invalid partition" in line, out
    fix = out.splitlines()[out.splitlines().index(line) + 1]
    assert fix.startswith("      fix: choose a partition from `sinfo -s`"), out
    assert user.live_jobs() == []


def test_doctor_json(user: User) -> None:
    r = user.islurmctl("doctor", "--quick", "--json", "--profile", "short", timeout=120)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    checks = json.loads(r.stdout)
    assert [c["check"] for c in checks][-3:] == ["daemon", "slurm", "profile short"]
    for c in checks:
        assert set(c) == {"check", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn"), c


def _line(out: str, prefix: str) -> str:
    found = [ln for ln in out.splitlines() if ln.startswith(prefix)]
    assert found, f"no line starting {prefix!r} in:\n{out}"
    return found[0]
