"""From raw samples to the table's rows, with the targets."""

from __future__ import annotations

import statistics
from typing import Any

from bench.rows_cost import cost_rows
from bench.stats import Row, summary


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _ratio(a: list[float], b: list[float]) -> float | None:
    if not a or not b:
        return None
    return _med(a) / _med(b)


def _paired(a: list[float], b: list[float]) -> float:
    """Median of the per-round ratios: drift between rounds cancels out."""
    return _med([x / y for x, y in zip(a, b, strict=False) if y])


def build(raw: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "warm" in raw:
        rows += _warm_rows(raw["warm"])
        w = raw["warm"]
        if "route-socat" in w:
            rows += _route_rows(w)
        if "slurm-calls-lone" in w:
            rows.append(
                Row(
                    "Slurm calls per warm connect (lone; in a burst)",
                    "calls",
                    summary(w["slurm-calls-lone"]),
                    {"in a burst": summary(w["slurm-calls-burst"])},
                    note="the daemon's squeue within 0.6 s of the connect's start; mean "
                    f"{statistics.fmean(w['slurm-calls-lone']):.2f} lone, "
                    f"{statistics.fmean(w['slurm-calls-burst']):.2f} in a burst",
                )
            )
    if "cold" in raw:
        c = raw["cold"]
        total = _med(c["total"])
        rows.append(Row("cold connect: total, ssh → true done", "s", summary(c["total"])))
        for key, target, limit in (
            ("ours: shim start -> sbatch", "", None),
            ("slurm: sbatch -> job process", "", None),
            ("hook: job process -> sshd listening", "≤ 0.04 s", 0.04),
            ("ours: sshd listening -> session.ready", "", None),
            ("ours: sshd listening -> splice started", "≤ 0.3 s", 0.3),
            ("ssh: first byte -> done", "", None),
        ):
            s = summary(c[key])
            rows.append(
                Row(
                    "cold: " + key.replace("->", "→"),
                    "s",
                    s,
                    ratio=s["median"] / total if s.get("n") else None,
                    ratio_of="share of total",
                    target=target,
                    met=None if limit is None else s.get("median", 1e9) <= limit,
                )
            )
        s = summary(c["slurm calls"])
        rows.append(
            Row(
                "Slurm calls per cold connect",
                "calls",
                s,
                {
                    "of which the daemon": summary(c["slurm calls (daemon)"]),
                    "the hook in the job": summary(c["slurm calls (job)"]),
                },
                target="≤ 4",
                met=s.get("max", 99) <= 4,
                note="daemon + hook, counted by wrappers on islurmd's PATH (inherited by the job)",
            )
        )
    if "concurrent" in raw:
        k = raw["concurrent"]
        single = raw.get("cold", {}).get("total", [])
        rows.append(
            Row(
                "32 concurrent cold connects: wall until all done",
                "s",
                summary(k["wall"]),
                {"one cold connect": summary(single)} if single else {},
                _ratio(k["wall"], single),
                "32 / one",
            )
        )
        ok = all(j == 1 for j in k["jobs submitted"]) and not any(k["failed"])
        rows.append(
            Row(
                "32 concurrent cold connects: jobs submitted",
                "jobs",
                summary(k["jobs submitted"]),
                target="= 1, all connect",
                met=ok,
                note=f"failed ssh: {sum(k['failed']):.0f} of {32 * len(k['failed'])}",
            )
        )
    if "ssh-throughput" in raw:
        rows += _throughput_rows(raw["ssh-throughput"])
    if "shim-throughput" in raw:
        t = raw["shim-throughput"]
        for d, word in (("down", "node → stdout"), ("up", "stdin → node")):
            r = _ratio(t[f"islurm-{d}"], t[f"socat-{d}"])
            rows.append(
                Row(
                    f"shim alone, {word}, pipes ↔ loopback TCP",
                    "MiB/s",
                    summary(t[f"islurm-{d}"]),
                    {"socat": summary(t[f"socat-{d}"])},
                    r,
                    "islurm/socat",
                    "≥ 1.5x socat",
                    None if r is None else r >= 1.5,
                    f"CPU s/GiB: shim {_med(t[f'islurm-{d}-cpu-s-per-GiB']):.2f}, socat "
                    f"{_med(t[f'socat-{d}-cpu-s-per-GiB']):.2f}",
                )
            )
    if "startup" in raw:
        s = raw["startup"]
        m = summary(s["islurm"])
        rows.append(
            Row(
                "shim start-up → first byte forwarded (daemon lookup included)",
                "ms",
                m,
                {"socat": summary(s["socat"]), "python -I -S -c pass": summary(s["python"])},
                _ratio(s["islurm"], s["socat"]),
                "islurm/socat",
                "≤ 20 ms",
                m.get("median", 1e9) <= 20,
                f"above the interpreter's floor: {_med(s['islurm']) - _med(s['python']):.1f} ms",
            )
        )
    if "idle" in raw:
        rows += _idle_rows(raw["idle"])
    if "queue" in raw:
        rows += queue_rows(raw["queue"])
    return rows + cost_rows(raw)


def _route_rows(w: dict[str, list[float]]) -> list[Row]:
    """The route alone (no ssh handshake to dilute it): where islurm's extra time goes."""
    rows = []
    for kind, when in (("lone", "lone"), ("burst", "in a burst")):
        r = _ratio(w[f"route-islurm-{kind}"], w["route-socat"])
        rows.append(
            Row(
                f"warm route alone, spawn → sshd banner byte, {when}",
                "ms",
                summary(w[f"route-islurm-{kind}"]),
                {"socat": summary(w["route-socat"])},
                r,
                "islurm/socat",
                note=f"of which the daemon's answer (shim start → session.ready): "
                f"{_med(w[f'acquire-{kind}']):.1f} ms [{summary(w[f'acquire-{kind}'])['lo']:.1f}.."
                f"{summary(w[f'acquire-{kind}'])['hi']:.1f}]",
            )
        )
    return rows


def _warm_rows(w: dict[str, list[float]]) -> list[Row]:
    """Headline ratio: the median of per-round ratios to the socat connect of the same round."""
    rows = []
    for name, host, base, label in (
        ("islurm", "ssh slurm-cpu true (login node: fdpass, no relay)", "socat", "lone"),
        ("islurm-burst", "ssh slurm-cpu true in a burst (< 2 s after another)", "socat", "burst"),
        ("relay", "ssh slurm-cpu true, the shim as relay (--relay config)", "socat-2", "lone"),
        (
            "islurm-idle",
            "ssh slurm-cpu true, first after 10 s without a connect (fdpass, no spare)",
            "socat-idle",
            "lone, no spare",
        ),
    ):
        if not w.get(name):
            continue
        r = _paired(w[name], w[base])
        rows.append(
            Row(
                f"warm connect: {host}",
                "ms",
                summary(w[name]),
                {"socat ProxyCommand": summary(w[base]), "direct": summary(w["direct"])},
                r,
                "islurm/socat, median of per-pair ratios",
                "≤ 1.05x socat",
                r <= 1.05,
                f"{len(w[name])} pairs, {label}; ratio of medians "
                f"{_ratio(w[name], w[base]) or float('nan'):.3f}; islurm/direct "
                f"{_paired(w[name], w['direct']):.3f} (paired)",
            )
        )
    return rows


def _throughput_rows(t: dict[str, list[float]]) -> list[Row]:
    rows = []
    for d, word in (("down", "download"), ("up", "upload")):
        for name, what, target, limit in (
            ("islurm", "ssh slurm-cpu (fdpass, no relay)", "≥ 0.98x direct", 0.98),
            ("relay", "ssh slurm-cpu, the shim as relay", "", None),
        ):
            if not t.get(f"{name}-{d}"):
                continue
            r = _paired(t[f"{name}-{d}"], _direct_of(t, name, d))
            rows.append(
                Row(
                    f"ssh {word} 1 GiB: {what} vs direct ssh",
                    "MiB/s",
                    summary(t[f"{name}-{d}"]),
                    {"direct ssh": summary(t[f"direct-{d}"])},
                    r,
                    "islurm/direct, median of per-round ratios",
                    target,
                    None if limit is None else r >= limit,
                    _tp_note(t, name, d),
                )
            )
    return rows


def _direct_of(t: dict[str, list[float]], name: str, d: str) -> list[float]:
    """The direct runs of the rounds `name` ran in: the relay runs every other round."""
    return t[f"direct-{d}"] if name == "islurm" else t[f"direct-{d}"][::2]


def _tp_note(t: dict[str, list[float]], name: str, d: str) -> str:
    def m(key: str) -> float:
        return _med(t.get(key, []))

    ratios = [x / y for x, y in zip(t[f"{name}-{d}"], _direct_of(t, name, d), strict=False) if y]
    spread = ""
    if len(ratios) >= 4:  # how far single rounds stray: this machine is shared and noisy
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        spread = f"per-round ratios p25-p75 {q1:.3f}-{q3:.3f} ({len(ratios)} rounds); "
    text = (
        f"{spread}ratio of medians {m(f'{name}-{d}') / m(f'direct-{d}'):.3f}; socat ProxyCommand "
        f"{m(f'socat-{d}'):.0f} MiB/s; CPU s/GiB of the ProxyCommand: "
        f"{m(f'{name}-{d}-proxy-cpu-s-per-GiB'):.2f} (socat "
        f"{m(f'socat-{d}-proxy-cpu-s-per-GiB'):.2f}); of ssh: "
        f"{m(f'{name}-{d}-ssh-cpu-s-per-GiB'):.2f} ({name}), "
        f"{m(f'direct-{d}-ssh-cpu-s-per-GiB'):.2f} (direct); machine busy "
        f"{m(f'{name}-{d}-machine-busy-%'):.0f}% ({name}), "
        f"{m(f'direct-{d}-machine-busy-%'):.0f}% (direct) of 2 vCPUs"
    )
    return text


def _idle_rows(idle: dict[str, Any]) -> list[Row]:
    rows = []
    for n, d in idle.items():
        rows.append(
            Row(
                f"Slurm calls per idle minute, {n} open session{'' if n == '1' else 's'}",
                "calls/min",
                summary([d["daemon_calls_per_min"]]),
                {"the hook in the job": summary([d["job_calls_per_min"]])},
                note=f"the daemon's calls in {d['window_s']:.0f} s: "
                + (" ".join(d["daemon_calls"]) or "none"),
            )
        )
    calls = sum(len(d["daemon_calls"]) for d in idle.values())
    minutes = sum(d["window_s"] for d in idle.values()) / 60
    rows.append(
        Row(
            "Slurm calls per idle minute, all windows together",
            "calls/min",
            summary([calls / minutes]),
            target="≤ 0.2 per user",
            met=calls / minutes <= 0.2,
            note=f"{calls} call(s) in {minutes:.1f} idle minutes; the safety poll alone "
            "(poll_idle = 10 min) is 0.1/min: windows of 10 min in all hold one of its "
            "polls (two at most), shorter ones none or one, which a rate cannot tell apart",
        )
    )
    top = max(idle, key=int)
    d = idle[top]
    rows.append(
        Row(
            f"islurmd resident memory, {top} open sessions",
            "MB",
            summary([d["rss_mb"]]),
            target="≤ 40 MB",
            met=d["rss_mb"] <= 40,
            note=f"USS {d['uss_mb']:.1f} MB, {d['threads']} threads, {d['fds']} fds",
        )
    )
    low = min(idle, key=int)
    rows.append(
        Row(
            f"islurmd CPU per idle hour, {top} open sessions",
            "s",
            summary([d["cpu_s_per_hour"]]),
            {f"{low} session": summary([idle[low]["cpu_s_per_hour"]])},
            note=f"user+sys over {d['window_s']:.0f} s, scaled; its squeue children: "
            f"{d['children_cpu_s_per_hour']:.1f} s/h",
        )
    )
    return rows


def queue_rows(q: dict[str, Any]) -> list[Row]:
    """Issue 15: Slurm calls of `profiles --available` in a loop and of waiting connects."""
    loops, waiters, window = q["loops"], q["waiters"], q["window"]
    per_call = q["available_calls"] / loops
    waiting_rate = q["waiting_calls"] / window
    return [
        Row(
            f"Slurm calls: profiles --available x{loops} in a loop",
            "calls",
            summary([float(q["available_calls"])]),
            {"wall per call (s)": summary(q["available_seconds"])},
            per_call,
            "calls per run",
            "≤ 1 per run (cached)",
            per_call <= 1.0,
            f"by tool {q['available_tools']}: one sinfo per refresh, sbatch --test-only only "
            "for profiles that do not fit, each answer reused 30 s",
        ),
        Row(
            f"Slurm calls: {waiters} connects waiting at once, {window:.0f} s",
            "calls",
            summary([float(q["waiting_calls"])]),
            {},
            waiting_rate,
            "calls/s",
            "≤ 5 calls/s (shared polls)",
            waiting_rate <= 5.0,
            f"by tool {q['waiting_tools']}",
        ),
    ]
