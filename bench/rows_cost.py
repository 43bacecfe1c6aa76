"""Rows for the login node's cost: the daemon's start, two hops, many users."""

from __future__ import annotations

import statistics
from typing import Any

from bench.stats import Row, summary


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _paired(a: list[float], b: list[float]) -> float:
    return _med([x / y for x, y in zip(a, b, strict=False) if y])


def cost_rows(raw: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "daemon-start" in raw:
        rows += _daemon_start(raw["daemon-start"])
    if "two-hops" in raw:
        rows += _two_hops(raw["two-hops"])
    if "many-users" in raw:
        rows += _crowd(raw["many-users"])
    return rows


def _daemon_start(d: dict[str, list[float]]) -> list[Row]:
    s = summary(d["serving"])
    extra = _med(d["starting-total"]) - _med(d["running-total"])
    share = [a - b for a, b in zip(d["starting-to-sbatch"], d["running-to-sbatch"], strict=False)]
    return [
        Row(
            "islurmd start: process start → serving (daemon.status answered)",
            "s",
            s,
            target="≤ 0.35 s",
            met=s.get("median", 9.0) <= 0.35,
            note="spawned as the user by bench/dstart_probe.py; no other daemon of the user",
        ),
        Row(
            "cold connect that starts islurmd, minus one with islurmd running",
            "s",
            summary(share),
            {
                "starting islurmd": summary(d["starting-total"]),
                "islurmd running": summary(d["running-total"]),
            },
            target="≤ 0.4 s",
            met=bool(share) and _med(share) <= 0.4,
            note=f"per-pair difference of shim start → sbatch over {len(share)} interleaved "
            "pairs (from sbatch on, both connects are the same: Slurm starts the job, the hook "
            f"starts sshd): starting {_med(d['starting-to-sbatch']):.3f} s, running "
            f"{_med(d['running-to-sbatch']):.3f} s, through the traced relay shim; the totals "
            "carry Slurm's 0-1 s scheduling loop: their difference of medians is "
            f"{extra:+.3f} s",
        ),
    ]


def _two_hops(t: dict[str, list[float]]) -> list[Row]:
    r = _paired(t["laptop"], t["jump"])
    rows = [
        Row(
            "two hops, warm connect: islurm-proxy --via login cpu vs ssh -J login",
            "ms",
            summary(t["laptop"]),
            {"ssh -J login (floor)": summary(t["jump"])},
            r,
            "islurm/floor, median of per-pair ratios",
            "≤ 1.05x floor",
            r <= 1.05,
            f"{len(t['laptop'])} interleaved pairs; ratio of medians "
            f"{_med(t['laptop']) / _med(t['jump']):.3f}; the remembered route (ssh -W to the "
            "job, nothing asked of the login node; full routes taken meanwhile: "
            f"{t['full-routes-during-remembered'][0]:.0f}); login node: a second sshd on loopback",
        )
    ]
    if t.get("full"):
        r = _paired(t["full"], t["full-jump"])
        rows.append(
            Row(
                "two hops, warm connect, the full route (nothing remembered) vs ssh -J login",
                "ms",
                summary(t["full"]),
                {"ssh -J login (floor)": summary(t["full-jump"])},
                r,
                "islurm/floor, median of per-pair ratios",
                "",
                None,
                f"{len(t['full'])} interleaved pairs, the remembered route removed before each: "
                "ssh -D to the login node, its islurm-proxy asks islurmd (a first connect, or "
                "one after the job changed)",
            )
        )
    for d, word in (("down", "download"), ("up", "upload")):
        r = _paired(t[f"laptop-{d}"], t[f"jump-{d}"])
        rows.append(
            Row(
                f"two hops, ssh {word} 1 GiB: laptop path vs ssh -J login",
                "MiB/s",
                summary(t[f"laptop-{d}"]),
                {"ssh -J login (floor)": summary(t[f"jump-{d}"])},
                r,
                "islurm/floor, median of per-pair ratios",
                "≥ 0.95x floor",
                r >= 0.95,
                "CPU s/GiB of the laptop's ssh: "
                f"{_med(t[f'laptop-{d}-ssh-cpu-s-per-GiB']):.2f} (islurm), "
                f"{_med(t[f'jump-{d}-ssh-cpu-s-per-GiB']):.2f} (floor); machine busy "
                f"{_med(t[f'laptop-{d}-machine-busy-%']):.0f}% (islurm), "
                f"{_med(t[f'jump-{d}-machine-busy-%']):.0f}% (floor) of 2 vCPUs",
            )
        )
    return rows


def _crowd(c: dict[str, Any]) -> list[Row]:
    n, sessions = c["users"], c["islurm_sessions"]
    per_user = sorted(c["rpcs_by_user"].values())
    return [
        Row(
            f"{n} users, 1 job + 2 idle sessions each: slurmctld RPCs per minute, all together",
            "calls/min",
            summary([c["rpcs_per_min_total"]]),
            {"plain nc sessions": summary([0.0])},
            target="≤ 10",
            met=c["rpcs_per_min_total"] <= 10,
            note=f"sdiag per-user counts over {c['window_s']:.0f} s; per user: max "
            f"{per_user[-1] if per_user else 0}, users with any: "
            f"{sum(1 for x in per_user if x)} of {n}; nc makes no Slurm call (no tool at all); "
            f"everyone else (root: slurmd, slurmstepd, the bench's squeue; other users) "
            f"{c['rpcs_other_users_per_min']:.0f}/min",
        ),
        Row(
            f"{n} users: resident memory of islurm processes (PSS), total",
            "MB",
            summary([c["islurm_pss_mb"]]),
            {f"{2 * n} nc ProxyCommands": summary([c["nc_pss_mb"]])},
            note=f"{c['islurm_processes']} islurm processes ({', '.join(c['islurm_kinds'])}); "
            f"RSS {c['islurm_rss_mb']:.0f} MB; per user {c['islurm_pss_mb'] / n:.1f} MB PSS "
            f"({c['islurm_rss_mb'] / n:.1f} RSS), per session {c['islurm_pss_mb'] / sessions:.1f}"
            f" MB; nc: {c['nc_processes']} processes, RSS {c['nc_rss_mb']:.0f} MB, "
            f"{c['nc_pss_mb'] / max(1, c['nc_processes']):.2f} MB PSS per session",
        ),
        Row(
            f"{n} users: CPU of islurm processes per idle hour, total",
            "s",
            summary([c["islurm_cpu_s_per_hour"]]),
            {f"{2 * n} nc ProxyCommands": summary([c["nc_cpu_s_per_hour"]])},
            note=f"user+sys over {c['window_s']:.0f} s, scaled; per user "
            f"{c['islurm_cpu_s_per_hour'] / n:.2f} s/h; sessions still open at the end: "
            f"{c['sessions_alive']} of {4 * n}",
        ),
    ]
