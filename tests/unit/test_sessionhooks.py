"""The session hook's pure parts: walltime warning schedule, end times, sshd_config text."""

from __future__ import annotations

import time

import pytest

from islurm.sessionhooks.jobinfo import parse_end_time
from islurm.sessionhooks.sshd import SshdConfig
from islurm.sessionhooks.walltime import WalltimeWarnings, format_left


def test_warnings_fire_once_each_in_order() -> None:
    w = WalltimeWarnings([120, 600], end_time=10_000)
    assert w.next_due() == 9_400
    assert w.fire(9_399) is None
    assert w.fire(9_400) == 600
    assert w.next_due() == 9_880
    assert w.fire(9_500) is None
    assert w.fire(9_881) == 119
    assert w.next_due() is None and w.fire(9_999) is None


def test_overdue_leads_collapse_into_one_warning() -> None:
    w = WalltimeWarnings([600, 120], end_time=1_000)
    assert w.fire(950) == 50  # both leads passed: one line, with the real time left
    assert w.next_due() is None


def test_no_end_time_or_no_leads_means_no_warnings() -> None:
    assert WalltimeWarnings([600], None).next_due() is None
    assert WalltimeWarnings([], 1_000).next_due() is None
    assert WalltimeWarnings([0, -5], 1_000).next_due() is None


@pytest.mark.parametrize(
    ("left", "text"),
    [(600, "10 minutes"), (119, "2 minutes"), (90, "90 seconds"), (-3, "0 seconds")],
)
def test_time_left_reads_naturally(left: float, text: str) -> None:
    assert format_left(left) == text


def test_end_time_from_squeue() -> None:
    stamp = parse_end_time("2026-11-24T17:13:11\n")
    assert stamp == time.mktime(time.strptime("2026-11-24T17:13:11", "%Y-%m-%dT%H:%M:%S"))
    for junk in ("N/A", "Unknown", "", "2026-11-24"):
        assert parse_end_time(junk) is None


def test_sshd_config_locks_the_server_down_and_carries_the_job_environment() -> None:
    text = SshdConfig(
        port=22022,
        host_key="/tmp/j d/key",
        user="alice",
        host_cert="/c",
        env={"SLURM_JOB_ID": "42", "SLURM_X": "a b", "SLURM_BAD": 'q"x'},
    ).render()
    lines = text.splitlines()
    for line in (
        "Port 22022",
        "AllowUsers alice",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "StrictModes yes",
        "AuthenticationMethods publickey",
        'HostKey "/tmp/j d/key"',
        "HostCertificate /c",
        "UsePAM no",
    ):
        assert line in lines
    setenv = [ln for ln in lines if ln.startswith("SetEnv")]
    assert setenv == ['SetEnv "SLURM_BAD=q\\"x" SLURM_JOB_ID=42 "SLURM_X=a b"']  # one line
