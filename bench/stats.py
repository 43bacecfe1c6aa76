"""Summaries, result rows, the table and the comparison with a previous run."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


def summary(samples: list[float]) -> dict[str, float]:
    """Median and spread (p10-p90; min-max when there are fewer than 10 samples)."""
    xs = sorted(x for x in samples if x is not None and math.isfinite(x))
    if not xs:
        return {"n": 0}
    if len(xs) >= 10:
        deciles = statistics.quantiles(xs, n=10, method="inclusive")
        lo, hi, spread = deciles[0], deciles[-1], "p10-p90"
    else:
        lo, hi, spread = xs[0], xs[-1], "min-max"
    return {
        "n": len(xs),
        "median": statistics.median(xs),
        "lo": lo,
        "hi": hi,
        "min": xs[0],
        "max": xs[-1],
        "spread": spread,  # type: ignore[dict-item]
    }


@dataclass
class Row:
    """One line of the table."""

    name: str
    unit: str
    islurm: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    ratio: float | None = None
    ratio_of: str = ""  # what the ratio compares, e.g. "islurm/socat"
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit in ("ms", "MiB/s", "MB"):
        return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"
    if unit == "s":
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if unit in ("calls", "jobs", "calls/min", "%"):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"
    return f"{value:.3g}"


def cell(s: dict[str, float], unit: str) -> str:
    if not s or not s.get("n"):
        return "n/a"
    text = f"{fmt(s['median'], unit)} {unit}"
    if s["n"] > 1 and s["lo"] != s["hi"]:
        text += f" [{fmt(s['lo'], unit)}..{fmt(s['hi'], unit)}]"
    return text + f" n={s['n']:.0f}"


def render(rows: list[Row], markdown: bool = False) -> str:
    head = ["measurement", "islurm", "baseline(s)", "ratio", "target", "met?"]
    body = []
    for r in rows:
        base = "; ".join(f"{k}: {cell(v, r.unit)}" for k, v in r.baselines.items()) or "—"
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f} ({r.ratio_of})"
        met = "—" if r.met is None else ("yes" if r.met else "NO")
        body.append([r.name, cell(r.islurm, r.unit), base, ratio, r.target or "—", met])
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
        return "\n".join(lines) + ("\n\nNotes:\n" + "\n".join(notes) if notes else "") + "\n"
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in body
    ]
    return "\n".join(out) + "\n\nNotes:\n" + "\n".join(notes) + "\n"


def compare(previous: dict[str, Any], rows: list[Row]) -> str:
    """The previous run's medians and ratios beside this run's (ratios are the comparable part)."""
    old = {r["name"]: r for r in previous.get("rows", [])}
    lines = [
        f"comparison with the previous run ({previous.get('started', '?')}):",
        f"  {'measurement':<48} {'islurm then':>14} {'islurm now':>14} "
        f"{'ratio then':>10} {'ratio now':>10}",
    ]
    for r in rows:
        o = old.get(r.name)
        if o is None:
            continue
        then = o.get("islurm", {}).get("median")
        now = r.islurm.get("median")
        rt, rn = o.get("ratio"), r.ratio
        lines.append(
            f"  {r.name[:48]:<48} {fmt(then, r.unit) + ' ' + r.unit:>14} "
            f"{fmt(now, r.unit) + ' ' + r.unit:>14} "
            f"{'—' if rt is None else f'{rt:.3f}':>10} {'—' if rn is None else f'{rn:.3f}':>10}"
        )
    return "\n".join(lines) + "\n"
