"""Reconciliation reports for people: terminal text, markdown and a standalone HTML page.

The HTML page needs nothing but a browser: the table, a chart per measure and group of baseline
vs candidate over time (inline SVG), and the unexplained residual.
"""

import html
from pathlib import Path

import pandas as pd

from backfill_assets.reconcile import Reconciliation

WORST = 15


def totals(recon: Reconciliation) -> pd.DataFrame:
    """Per measure: baseline, candidate, delta, each rule and the residual, over all groups."""
    columns = ["baseline", "candidate", "delta", *(f"rule_{r}" for r in recon.rules), "residual"]
    return recon.table.groupby("measure", sort=False)[columns].sum().round(2)


def verdict(recon: Reconciliation) -> str:
    if recon.passed:
        return (
            f"PASSED: every difference between {recon.baseline} and {recon.candidate} is "
            f"explained (residuals within ±{recon.tolerance})"
        )
    return (
        f"FAILED: {len(recon.failing)} group(s) have an unexplained residual beyond "
        f"±{recon.tolerance}"
    )


def reconciliation_markdown(recon: Reconciliation) -> str:
    lines = [
        f"**{recon.plan}: {recon.candidate} vs {recon.baseline}, {recon.start}..{recon.end}**",
        "",
        verdict(recon),
        "",
        _md_table(totals(recon)),
        "",
        f"Worst {WORST} groups:",
        "",
        _md_table(recon.table.head(WORST).set_index(recon.by + ["measure"])),
    ]
    return "\n".join(lines)


def _md_table(frame: pd.DataFrame) -> str:
    frame = frame.reset_index()
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return (
        "NULL" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
    )


def reconciliation_text(recon: Reconciliation) -> str:
    """What ``backfill-assets reconcile`` prints."""
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        worst = recon.table.head(WORST).copy()
        return "\n".join(
            [
                f"{recon.plan}: {recon.candidate} vs {recon.baseline}, {recon.start}..{recon.end}, "
                f"by {', '.join(recon.by)}",
                verdict(recon),
                "",
                "totals per measure:",
                totals(recon).to_string(),
                "",
                f"worst {min(WORST, len(worst))} of {len(recon.table)} groups:",
                worst.to_string(index=False),
            ]
        )


def _svg_chart(labels: list[str], series: dict[str, list[float]], title: str) -> str:
    width, height, pad = 380, 170, 36
    values = [v for vs in series.values() for v in vs]
    low, high = min(values + [0.0]), max(values + [0.0])
    span = (high - low) or 1.0
    n = max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * i / n

    def y(v: float) -> float:
        return height - pad + (-(v - low) / span) * (height - 2 * pad)

    colours = {"baseline": "#888888", "candidate": "#1f6feb", "residual": "#d1242f"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{pad}" y="14" font-size="12">{html.escape(title)}</text>',
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#ccc"/>',
        f'<text x="2" y="{y(high) + 4:.1f}" font-size="9">{high:,.0f}</text>',
        f'<text x="2" y="{y(low) + 4:.1f}" font-size="9">{low:,.0f}</text>',
    ]
    for name, vs in series.items():
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs))
        parts.append(
            f'<polyline fill="none" stroke="{colours.get(name, "#333")}" stroke-width="1.5" '
            f'points="{points}"><title>{html.escape(name)}</title></polyline>'
        )
    if labels:
        parts.append(
            f'<text x="{pad}" y="{height - 8}" font-size="9">{html.escape(labels[0])}</text>'
        )
        parts.append(
            f'<text x="{width - pad}" y="{height - 8}" font-size="9" text-anchor="end">'
            f"{html.escape(labels[-1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def write_html(recon: Reconciliation, path: Path) -> Path:
    """A standalone HTML reconciliation report for business owners."""
    table = recon.table.copy()
    time_by, facets = recon.by[0], recon.by[1:]
    charts = []
    for measure in dict.fromkeys(table["measure"]):
        rows = table[table["measure"] == measure]
        groups = rows.groupby(facets, dropna=False) if facets else [((), rows)]
        for facet, part in groups:
            part = part.sort_values(time_by)
            label = ", ".join(
                f"{f}={'NULL' if pd.isna(v) else v}"
                for f, v in zip(
                    facets, facet if isinstance(facet, tuple) else (facet,), strict=False
                )
            )
            labels = [str(v) for v in part[time_by]]
            charts.append(
                _svg_chart(
                    labels,
                    {
                        "baseline": part["baseline"].tolist(),
                        "candidate": part["candidate"].tolist(),
                        "residual": part["residual"].tolist(),
                    },
                    f"{measure} {label}".strip(),
                )
            )
    total_html = totals(recon).to_html(float_format=lambda v: f"{v:,.2f}")
    full_html = table.to_html(index=False, float_format=lambda v: f"{v:,.2f}", na_rep="NULL")
    status_colour = "#1a7f37" if recon.passed else "#d1242f"
    title = html.escape(f"Reconciliation: {recon.plan} {recon.candidate} vs {recon.baseline}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
.verdict {{ font-weight: bold; color: {status_colour}; }}
.charts svg {{ margin: 4px; border: 1px solid #eee; }}
.legend span {{ margin-right: 1em; }}
</style></head><body>
<h1>Reconciliation: {html.escape(recon.plan)}</h1>
<p>{html.escape(recon.candidate)} (candidate) against {html.escape(recon.baseline)} (baseline),
{recon.start} to {recon.end}, grouped by {html.escape(", ".join(recon.by))}.</p>
<p class="verdict">{html.escape(verdict(recon))}</p>
<p>Each difference between the two versions is predicted by a documented rule; the residual is
what no rule explains and must be zero (within ±{recon.tolerance}).</p>
<h2>Totals per measure</h2>{total_html}
<h2>Baseline vs candidate over time</h2>
<p class="legend"><span style="color:#888">■ baseline</span>
<span style="color:#1f6feb">■ candidate</span>
<span style="color:#d1242f">■ unexplained residual</span></p>
<div class="charts">{"".join(charts)}</div>
<h2>Every group (worst residual first)</h2>{full_html}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
