"""sbatch --time values and the limit a profile's argv asks for."""

from __future__ import annotations

import pytest

from islurm.daemon.slurm.parse import parse_sbatch_time, time_limit_of


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 1800),
        ("30:15", 1815),
        ("4:00:00", 14400),
        ("1-12", 129600),
        ("1-12:30", 131400),
        ("1-12:30:15", 131415),
        ("0", 0),
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("1:2:3:4", None),
        ("", None),
        ("$(id)", None),
    ],
)
def test_sbatch_time_values(value: str, seconds: int | None) -> None:
    assert parse_sbatch_time(value) == seconds


def test_the_last_time_option_wins_in_any_spelling() -> None:
    assert time_limit_of(["--partition=gpu", "--time=08:00:00"]) == 28800
    assert time_limit_of(["-t", "5", "--mem=1G"]) == 300
    assert time_limit_of(["-t10"]) == 600
    assert time_limit_of(["--time", "1-0", "--time=30"]) == 1800
    assert time_limit_of(["--partition=gpu"]) is None
    assert time_limit_of(["--time=UNLIMITED"]) is None
    assert time_limit_of(["--time"]) is None  # a dangling option is not a limit
