"""`make demo` as the README promises: it ends with the compute node's hostname via ssh."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import REPO, User


def test_demo_ends_with_the_compute_node_hostname_through_ssh(user: User) -> None:
    user.reset()  # cold: no daemon, no job
    r = subprocess.run(
        ["bash", str(REPO / "cluster" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "via ssh slurm-cpu" in ln)
    assert line.split(":", 1)[1].split()[0] == "c1", r.stdout
    assert [j["name"] for j in user.live_jobs()] == ["islurm-cpu"]
