"""The line a dotted TOML key sits on (config/toml_locate.py), for config error messages."""

import pytest

from islurm.config.toml_locate import line_of_key

CONFIG = """\
# islurm config
[defaults]
idle_grace = "10m"

[profiles.cpu]
description = "a [bracket] in a string"
sbatch = ["--partition=cpu"]

[ profiles . "gpu.big" ]   # quoted key with a dot, spaces around the dots
'sbatch' = ["--gres=gpu:4"]
"time limit" = "1h"

[profiles.empty]
"""


@pytest.mark.parametrize(
    ("dotted", "line"),
    [
        (["defaults", "idle_grace"], 3),
        ("defaults.idle_grace", 3),
        (["profiles", "cpu", "sbatch"], 7),
        (["profiles", "cpu"], 5),
        (["profiles", "gpu.big"], 9),
        ('profiles."gpu.big".sbatch', 10),
        (["profiles", "gpu.big", "time limit"], 11),
        (["defaults"], 2),
    ],
)
def test_keys_and_tables_are_found(dotted: list[str] | str, line: int) -> None:
    assert line_of_key(CONFIG, dotted) == line


def test_a_key_not_written_out_points_at_its_table() -> None:
    assert line_of_key(CONFIG, ["profiles", "empty", "sbatch"]) == 13
    assert line_of_key(CONFIG, ["defaults", "walltime_warnings"]) == 2


def test_nothing_found_is_none() -> None:
    assert line_of_key(CONFIG, ["daemon", "poll"]) is None
    assert line_of_key("", "defaults.idle_grace") is None


def test_a_key_of_another_table_with_the_same_name_is_not_taken() -> None:
    text = "[a]\nx = 1\n[b]\ny = 2\n"
    assert line_of_key(text, ["b", "x"]) == 3  # the header of [b], not a.x on line 2
    assert line_of_key(text, ["x"]) is None  # top-level x is not a.x


def test_a_top_level_key_before_any_table() -> None:
    assert line_of_key('title = "x"\n[t]\ntitle = 1\n', ["title"]) == 1


def test_the_first_header_of_a_table_wins_for_a_missing_key() -> None:
    text = "[p]\na = 1\n[q]\n[p.sub]\n"
    assert line_of_key(text, ["p", "b"]) == 1
