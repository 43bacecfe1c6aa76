"""From raw samples to the table's rows, with the targets."""

from __future__ import annotations

import statistics
from typing import Any

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
        w = raw["warm"]
        r = _ratio(w["islurm"], w["socat"])
        rows.append(
            Row(
                "warm connect: ssh slurm-cpu true",
                "ms",
                summary(w["islurm"]),
                {"socat ProxyCommand": summary(w["socat"]), "direct": summary(w["direct"])},
                r,
                "islurm/socat",
                "≤ 1.05x socat",
                None if r is None else r <= 1.05,
                f"paired per round islurm/socat {_paired(w['islurm'], w['socat']):.3f}; "
                f"islurm/direct {_ratio(w['islurm'], w['direct']) or float('nan'):.3f}; each "
                "islurm connect > 2 s after the last (the daemon re-checks the sshd banner)",
            )
        )
        r = _ratio(w["islurm-burst"], w["socat"])
        rows.append(
            Row(
                "warm connect in a burst (< 2 s after another)",
                "ms",
                summary(w["islurm-burst"]),
                {"socat ProxyCommand": summary(w["socat"])},
                r,
                "islurm/socat",
                "≤ 1.05x socat",
                None if r is None else r <= 1.05,
                f"paired per round {_paired(w['islurm-burst'], w['socat']):.3f}; the daemon's "
                "last banner check still vouches for the endpoint",
            )
        )
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
            ("hook: job process -> sshd listening", "", None),
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
        t = raw["ssh-throughput"]
        for d, word in (("down", "download"), ("up", "upload")):
            r = _ratio(t[f"islurm-{d}"], t[f"direct-{d}"])
            rows.append(
                Row(
                    f"ssh {word}: ssh slurm-cpu vs direct ssh",
                    "MiB/s",
                    summary(t[f"islurm-{d}"]),
                    {"direct ssh": summary(t[f"direct-{d}"])},
                    r,
                    "islurm/direct",
                    "≥ 0.95x direct",
                    None if r is None else r >= 0.95,
                    _tp_note(t, d),
                )
            )
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
    return rows


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


def _tp_note(t: dict[str, list[float]], d: str) -> str:
    def m(key: str) -> float:
        return _med(t.get(key, []))

    text = (
        f"socat ProxyCommand {m(f'socat-{d}'):.0f} MiB/s "
        f"(islurm/socat {m(f'islurm-{d}') / m(f'socat-{d}'):.2f}); "
        f"CPU s/GiB of the ProxyCommand: shim {m(f'islurm-{d}-proxy-cpu-s-per-GiB'):.2f}, "
        f"socat {m(f'socat-{d}-proxy-cpu-s-per-GiB'):.2f}; of ssh: "
        f"{m(f'islurm-{d}-ssh-cpu-s-per-GiB'):.2f} (islurm), "
        f"{m(f'direct-{d}-ssh-cpu-s-per-GiB'):.2f} (direct); machine busy "
        f"{m(f'islurm-{d}-machine-busy-%'):.0f}% (islurm), "
        f"{m(f'direct-{d}-machine-busy-%'):.0f}% (direct) of 2 vCPUs"
    )
    return text


def _idle_rows(idle: dict[str, Any]) -> list[Row]:
    rows = []
    rates = {}
    for n, d in idle.items():
        rates[n] = d["daemon_calls_per_min"]
        rows.append(
            Row(
                f"Slurm calls per idle minute, {n} open session{'' if n == '1' else 's'}",
                "calls/min",
                summary([d["daemon_calls_per_min"]]),
                {"the hook in the job": summary([d["job_calls_per_min"]])},
                target="≤ 2, not growing",
                met=d["daemon_calls_per_min"] <= min(2.0, min(rates.values()) + 0.01),
                note=f"the daemon's calls in {d['window_s']:.0f} s: "
                + (" ".join(d["daemon_calls"]) or "none"),
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
