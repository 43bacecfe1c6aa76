"""The bench's issue-15 rows (bench/rows.py queue_rows) from raw samples."""

from __future__ import annotations

from bench.rows import build


def _raw(available: int, waiting: int) -> dict[str, object]:
    return {
        "queue": {
            "loops": 10,
            "available_calls": available,
            "available_tools": {"sinfo": 1, "sbatch": available - 1},
            "available_seconds": [0.2] * 10,
            "waiters": 10,
            "window": 10.0,
            "waiting_calls": waiting,
            "waiting_tools": {"squeue": waiting},
        }
    }


def test_queue_rows_count_calls_per_run_and_per_second() -> None:
    loop, waiting = build(_raw(available=5, waiting=30))
    assert loop.name == "Slurm calls: profiles --available x10 in a loop"
    assert (loop.ratio, loop.met, loop.islurm["median"]) == (0.5, True, 5.0)
    assert "'sinfo': 1" in loop.note
    assert (waiting.ratio, waiting.met) == (3.0, True)
    over, flood = build(_raw(available=40, waiting=100))
    assert over.met is False and flood.met is False
