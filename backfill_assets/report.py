"""Reconciliation reports for people: terminal text, markdown and a standalone HTML page.

Each leads with what its reader asks first: which columns changed on how many rows (when given
the column changes, ``enrichment.changed_columns``), what changed per measure and by how much
(baseline total → candidate total, change in %), and which documented rule explains how much of
it, in the rule's own description. Then the detail: one chart per measure (the total over time,
and small multiples of the groups that carry data; sparse groups are summed), and every group.

The HTML page needs nothing but a browser: inline SVG, no scripts, no external files.
"""

import datetime as dt
import html
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from backfill_assets.enrichment import ColumnChanges
from backfill_assets.plan import ROWS, TIME_GROUPS
from backfill_assets.reconcile import Reconciliation

WORST = 15  # groups listed in the text and markdown
WIDTH = 100  # columns of terminal text
NBSP = "\u00a0"  # keeps a figure and its measure on one line when text is wrapped
PANELS = 12  # small multiples per chart at most; smaller groups are summed into "other"

BASELINE_COLOUR, CANDIDATE_COLOUR, RESIDUAL_COLOUR = "#8a8a8a", "#1f6feb", "#d1242f"


# --------------------------------------------------------------------------------------------
# figures


@dataclass(frozen=True)
class MeasureChange:
    """One measure over the whole window: both totals, each rule's part, the residual."""

    measure: str
    unit: str  # "rows", "count" or "" (unknown)
    decimals: int
    baseline: float
    candidate: float
    rules: dict[str, float]  # what each rule predicts, summed over the groups (signed)
    moved: dict[str, float]  # what each rule moves between groups without changing the total
    residual: float

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline

    @property
    def percent(self) -> float | None:
        return percent_change(self.baseline, self.candidate)

    @property
    def label(self) -> str:
        return measure_label(self.measure)

    def share(self, value: float) -> float | None:
        """``value`` as a percentage of the baseline total."""
        return value / abs(self.baseline) * 100 if self.baseline else None


def measure_label(measure: str) -> str:
    """A measure's name as words: ``gross_revenue`` → ``gross revenue``."""
    return measure.replace("_", " ")


def percent_change(baseline: float, candidate: float) -> float | None:
    """The change from ``baseline`` to ``candidate`` in % of the baseline; None from zero."""
    if baseline == 0:
        return 0.0 if candidate == 0 else None
    return (candidate - baseline) / abs(baseline) * 100


def _is_whole(values: pd.Series) -> bool:
    return bool(((values - values.round()).abs() < 1e-9).all())


def measure_changes(recon: Reconciliation) -> list[MeasureChange]:
    """Per measure, in the plan's order: the totals and each rule's part of the change."""
    out = []
    for measure, totals_ in recon.measure_totals().items():
        rows = recon.table[recon.table["measure"] == measure]
        unit = recon.units.get(measure, ROWS if measure == ROWS else "")
        whole = unit in (ROWS, "count") or _is_whole(rows[["baseline", "candidate"]].stack())
        moved = {
            rule: (float(rows[f"rule_{rule}"].abs().sum()) - abs(total)) / 2
            for rule, total in totals_["rules"].items()
        }
        out.append(
            MeasureChange(
                measure=measure,
                unit=unit,
                decimals=0 if whole else 2,
                baseline=totals_["baseline"],
                candidate=totals_["candidate"],
                rules=totals_["rules"],
                moved=moved,
                residual=totals_["residual"],
            )
        )
    return out


def totals(recon: Reconciliation) -> pd.DataFrame:
    """Per measure: baseline, candidate, delta, each rule and the residual, over all groups."""
    columns = ["baseline", "candidate", "delta", *(f"rule_{r}" for r in recon.rules), "residual"]
    return recon.table.groupby("measure", sort=False)[columns].sum().round(2)


# --------------------------------------------------------------------------------------------
# words and numbers


def number(value: float, decimals: int = 2) -> str:
    """``27,608,339.57``: thousands separators, and never ``-0``."""
    if round(value, decimals) == 0:
        value = 0.0
    return f"{value:,.{decimals}f}"


def _zero(value: float, decimals: int) -> bool:
    """Whether ``value`` shows as zero with ``decimals`` decimals."""
    return round(value, decimals) == 0


def signed(value: float, decimals: int = 2) -> str:
    text = number(value, decimals)
    return text if text.lstrip("0.,") == "" or text.startswith("-") else "+" + text


def percent(value: float | None) -> str:
    """``-18.5%``, ``+2.0%``, ``0.0%``; ``n/a`` for a change from zero."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0.0%"
    if abs(value) < 0.001:
        return f"{'+' if value > 0 else '-'}<0.001%"
    return f"{value:+.1f}%" if abs(value) >= 0.1 else f"{value:+.1g}%"


def share(value: float) -> str:
    """A share of rows: ``14.8%``."""
    return f"{value * 100:.1f}%"


def movement(change: MeasureChange) -> str:
    """``falls 18.5%, from 2,043,509.52 to 1,673,866.58 (-369,642.94)``; ``unchanged at 12``."""
    p, d = change.percent, change.decimals
    figures = f"{number(change.baseline, d)} to {number(change.candidate, d)}"
    if _zero(change.delta, d):
        return f"unchanged at {number(change.candidate, d)}"
    if p is None:
        return f"goes from {figures}"
    way = "falls" if change.delta < 0 else "rises"
    return f"{way} {percent(p).lstrip('+-')}, from {figures} ({signed(change.delta, d)})"


def rule_effect(change: MeasureChange, rule: str) -> str:
    """``-209,190.14 (-10.2%)`` (in % of the baseline total), and what the rule moves between
    groups without changing the total."""
    d, total, moved = change.decimals, change.rules[rule], change.moved[rule]
    parts = []
    if not _zero(total, d):
        parts.append(f"{signed(total, d)} ({percent(change.share(total))})")
    if not _zero(moved, d):
        parts.append(f"moves {number(moved, d)} between groups")
    return ", ".join(parts)


def rule_sentence(measures: list[MeasureChange], rule: str) -> str:
    """``gross revenue -10.2%, net revenue -10.5%``: what a rule does to each measure."""
    effects = []
    for m in measures:
        total, moved = m.rules[rule], m.moved[rule]
        if not _zero(total, m.decimals):
            effects.append(f"{m.label} {percent(m.share(total))}")
        elif not _zero(moved, m.decimals):
            effects.append(f"{m.label} unchanged in total, {number(moved, m.decimals)} moved")
    return ", ".join(effects) or "no change to any measure"


def _failing(recon: Reconciliation, decimals: dict[str, int], most: int = 5) -> str:
    """``month 2025-06-01, region east: gross_revenue +250.00; ...``: the worst unexplained."""
    failing = recon.failing
    listed = [
        ", ".join(f"{b} {_group_value(row[b])}" for b in recon.by)
        + f": {row['measure']} {signed(row['residual'], decimals.get(row['measure'], 2))}"
        for _, row in failing.head(most).iterrows()
    ]
    more = f" and {len(failing) - most:,} more" if len(failing) > most else ""
    return "; ".join(listed) + more + "."


def _tolerance(recon: Reconciliation) -> str:
    return f"within ±{recon.tolerance:g}" if recon.tolerance else "exactly zero"


def verdict(recon: Reconciliation) -> str:
    if recon.table.empty:
        return "PASSED: neither version has rows in the window; there is nothing to compare"
    if recon.passed:
        if (recon.table["delta"] == 0).all():
            return (
                f"PASSED: {recon.candidate} equals {recon.baseline} on every measure in every group"
            )
        return (
            f"PASSED: every difference between {recon.baseline} and {recon.candidate} is "
            f"explained (residuals {_tolerance(recon)})"
        )
    return (
        f"FAILED: {len(recon.failing)} group(s) have a difference no rule explains (residual "
        f"beyond ±{recon.tolerance:g})"
    )


def _group_value(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "NULL"
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _column_lines(changes: ColumnChanges) -> list[str]:
    """One sentence per changed column."""
    return [
        f"{c.column}: {c.rows_changed:,} of {changes.rows_matched:,} rows changed "
        f"({share(changes.share(c))}); filled (not NULL) on {share(changes.coverage_before(c))} "
        f"of rows before, {share(changes.coverage_after(c))} after"
        for c in changes.changed
    ]


def _rows_note(changes: ColumnChanges) -> str:
    """How the rows were matched."""
    return (
        f"rows matched on {', '.join(changes.key)}: {changes.rows_matched:,} of "
        f"{changes.baseline}'s {changes.rows_before:,} and {changes.candidate}'s "
        f"{changes.rows_after:,}"
    )


# --------------------------------------------------------------------------------------------
# terminal text


def _fixed_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> list[str]:
    """A plain text table, numbers right-aligned; text cells shortened to fit ``WIDTH``."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    over = sum(widths) + 2 * (len(widths) - 1) - WIDTH
    while over > 0:
        texts = [i for i, n in enumerate(numeric) if not n and widths[i] > 8]
        if not texts:
            break
        widest = max(texts, key=lambda i: widths[i])
        cut = min(over, widths[widest] - 8)
        widths[widest] -= cut
        over -= cut

    def cell(text: str, i: int) -> str:
        if len(text) > widths[i]:
            text = text[: widths[i] - 1] + "…"
        return text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])

    return ["  ".join(cell(t, i) for i, t in enumerate(line)).rstrip() for line in [header, *rows]]


def _wrap(text: str, indent: str, first: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def _changes_text(changes: ColumnChanges) -> list[str]:
    if not changes.columns:
        return []
    if not changes.changed:
        return _wrap(
            f"Changed columns: none of {', '.join(changes.unchanged)} ({_rows_note(changes)}).",
            "  ",
            "",
        )
    lines = _wrap(f"Changed columns ({_rows_note(changes)}):", "  ", "")
    for change, sentence in zip(changes.changed, _column_lines(changes), strict=True):
        lines += _wrap(sentence, "    ", "  ")
        rows = [
            [_group_value(r.before), _group_value(r.after), f"{int(r.rows):,}"]
            for r in change.top.itertuples()
        ]
        table = _fixed_table(
            [changes.baseline, changes.candidate, "rows"], rows, [False, False, True]
        )
        lines += ["    " + line for line in table]
        if change.distinct_changes > len(rows):
            lines.append(f"    (top {len(rows)} of {change.distinct_changes:,} value changes)")
    if changes.unchanged:
        lines += _wrap("unchanged: " + ", ".join(changes.unchanged), "    ", "  ")
    return lines


def _measure_rows(measures: list) -> list[list[str]]:
    """Per measure: its name, both totals, the change and the change in %, formatted."""
    return [
        [
            m.measure,
            number(m.baseline, m.decimals),
            number(m.candidate, m.decimals),
            signed(m.delta, m.decimals),
            percent(m.percent),
        ]
        for m in measures
    ]


def reconciliation_text(recon: Reconciliation, changes: ColumnChanges | None = None) -> str:
    """What ``backfill-assets reconcile`` prints, readable at 100 columns.

    ``changes``: the plan's column changes (``enrichment.changed_columns``), listed first.
    """
    b, c = recon.baseline, recon.candidate
    lines = [
        f"{recon.plan}: {c} against {b}, {recon.start}..{recon.end}, by {', '.join(recon.by)}",
        verdict(recon),
        "",
    ]
    if recon.discontinuity:
        lines += [*_wrap(f"Discontinuity: {recon.discontinuity}.", "  ", ""), ""]
    if changes is not None and changes.columns:
        lines += [*_changes_text(changes), ""]
    measures = measure_changes(recon)
    if measures:
        lines.append("What changed (totals over the window):")
        header = ["measure", b, c, "change", "change %"]
        rows = _measure_rows(measures)
        lines += ["  " + line for line in _fixed_table(header, rows, [False, *[True] * 4])]
        lines.append("")
    if recon.rules and measures:
        lines.append(f"What explains it (each rule's part of the change, in % of the {b} total):")
        for rule in recon.rules:
            lines += _wrap(f"{recon.descriptions.get(rule, rule)} [{rule}]", "    ", "  - ")
            effects = [
                f"{m.measure}: {rule_effect(m, rule)}".replace(" ", NBSP)
                for m in measures
                if rule_effect(m, rule)
            ]
            text = "; ".join(effects) or "no change to any measure"
            lines += [line.replace(NBSP, " ") for line in _wrap(text, "      ")]
        residuals = [m for m in measures if not _zero(m.residual, m.decimals)]
        lines += _wrap(
            "not explained by any rule: "
            + (
                "; ".join(f"{m.measure} {signed(m.residual, m.decimals)}" for m in residuals)
                if residuals
                else "nothing"
            ),
            "    ",
            "  - ",
        )
        lines.append("")
    lines += _worst_text(recon, measures)
    return "\n".join(lines).rstrip() + "\n"


def _worst_text(recon: Reconciliation, measures: list[MeasureChange]) -> list[str]:
    table = recon.table
    if table.empty:
        return ["no rows in either version over the window"]
    if recon.passed and (table["delta"] == 0).all():
        return [f"all {len(table):,} groups are equal in {recon.baseline} and {recon.candidate}"]
    decimals = {m.measure: m.decimals for m in measures}
    worst = table.head(WORST)
    rows = [
        [
            *(_group_value(row[b]) for b in recon.by),
            row["measure"],
            number(row["baseline"], decimals[row["measure"]]),
            number(row["candidate"], decimals[row["measure"]]),
            signed(row["delta"], decimals[row["measure"]]),
            signed(row["residual"], decimals[row["measure"]]),
            "NO" if row["unexplained"] else "yes",
        ]
        for _, row in worst.iterrows()
    ]
    header = [*recon.by, "measure", recon.baseline, recon.candidate, "change", "residual"]
    header += ["explained"]
    numeric = [False] * (len(recon.by) + 1) + [True] * 4 + [False]
    return [
        f"worst {len(worst)} of {len(table):,} groups (largest unexplained residual first, "
        "then largest change):",
        *_fixed_table(header, rows, numeric),
    ]


# --------------------------------------------------------------------------------------------
# markdown (Dagster metadata)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def clean(text: str) -> str:
        return text.replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(clean(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def reconciliation_markdown(recon: Reconciliation, changes: ColumnChanges | None = None) -> str:
    """The same story as the text, as markdown for the Dagster UI."""
    b, c = recon.baseline, recon.candidate
    measures = measure_changes(recon)
    lines = [
        f"**{recon.plan}: {c} against {b}, {recon.start}..{recon.end}**",
        "",
        verdict(recon),
        "",
    ]
    if recon.discontinuity:
        lines += [f"**Discontinuity:** {recon.discontinuity}.", ""]
    if changes is not None and changes.changed:
        lines += [f"- {line}" for line in _column_lines(changes)] + [""]
    lines += [f"- {measure_label(m.measure)}: {movement(m)}" for m in measures] + [""]
    if measures:
        lines += [_md_table(["measure", b, c, "change", "change %"], _measure_rows(measures)), ""]
    if recon.rules and measures:
        rows = [
            [recon.descriptions.get(r, r), *(rule_effect(m, r) or "0" for m in measures)]
            for r in recon.rules
        ]
        rows.append(
            ["not explained by any rule", *(signed(m.residual, m.decimals) for m in measures)]
        )
        lines += [_md_table(["rule", *(m.measure for m in measures)], rows), ""]
    worst = recon.table.head(WORST)
    decimals = {m.measure: m.decimals for m in measures}
    if len(worst):
        rows = [
            [
                *(_group_value(row[g]) for g in recon.by),
                row["measure"],
                *(
                    (signed if f in ("delta", "residual") else number)(
                        row[f], decimals[row["measure"]]
                    )
                    for f in ("baseline", "candidate", "delta", "residual")
                ),
            ]
            for _, row in worst.iterrows()
        ]
        header = [*recon.by, "measure", b, c, "change", "residual"]
        lines += [f"Worst {len(worst)} groups:", "", _md_table(header, rows)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# charts (inline SVG)


def _moment(value) -> dt.datetime:
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.combine(value, dt.time())


def _nice_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round numbers from at most ``low`` to at least ``high``, about ``most`` of them."""
    if high == low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(most - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(ticks[-1] + step)
    return ticks


def _tick_text(value: float, step: float) -> str:
    """``250,000``, ``1.5M``, ``2B``; decimals only when the step needs them."""
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if max(abs(value), step) >= size and step >= size / 100:
            text = f"{value / size:,.2f}".rstrip("0").rstrip(".")
            return ("0" if text in ("-0", "") else text) + suffix
    decimals = 0 if step >= 1 else min(6, -math.floor(math.log10(step)))
    return number(value, decimals)


def _time_ticks(low: dt.datetime, high: dt.datetime, most: int) -> list[tuple[dt.datetime, str]]:
    """Ticks on calendar boundaries (years, months, days or hours) between two moments."""
    days = (high - low).total_seconds() / 86400
    if days >= 45:
        for step in (1, 2, 3, 4, 6, 12, 24, 60):
            index = low.year * 12 + low.month - 1 + (low.day > 1 or low.hour > 0)
            ticks = []
            while True:
                moment = dt.datetime(index // 12, index % 12 + 1, 1)
                if moment > high:
                    break
                if index % step == 0:
                    ticks.append(moment)
                index += 1
            if len(ticks) <= most:
                break
        form = "%Y" if step >= 12 else "%Y-%m"
        return [(t, t.strftime(form)) for t in ticks]
    if days >= 2:
        first = dt.datetime.combine(low.date(), dt.time())
        first += dt.timedelta(days=1) if first < low else dt.timedelta()
        for step in (1, 2, 7, 14, 28):
            ticks = [first + dt.timedelta(days=i) for i in range(0, int(days) + 1, step)]
            ticks = [t for t in ticks if t <= high]
            if len(ticks) <= most:
                break
        return [(t, t.strftime("%Y-%m-%d")) for t in ticks]
    for step in (1, 2, 3, 6, 12, 24):
        hours = int(days * 24)
        ticks = [low + dt.timedelta(hours=i) for i in range(0, hours + 1, step)]
        if len(ticks) <= most:
            break
    return [(t, t.strftime("%m-%d %H:00")) for t in ticks]


@dataclass
class _Series:
    """A time series of one group and measure: both versions and where it is unexplained."""

    label: str
    times: list[dt.datetime]
    baseline: list[float]
    candidate: list[float]
    unexplained: list[bool]

    @property
    def size(self) -> float:
        return sum(abs(v) for v in self.baseline) + sum(abs(v) for v in self.candidate)


def _series(rows: pd.DataFrame, time_by: str, label: str, times: list) -> _Series:
    """Summed per time point, with zero where the group has no row (measures are sums)."""
    summed = rows.groupby(time_by, sort=True).agg(
        baseline=("baseline", "sum"), candidate=("candidate", "sum"), bad=("unexplained", "any")
    )
    summed = summed.reindex(times)
    return _Series(
        label,
        [_moment(t) for t in times],
        summed["baseline"].astype(float).fillna(0.0).tolist(),
        summed["candidate"].astype(float).fillna(0.0).tolist(),
        summed["bad"].eq(True).tolist(),
    )


def _panel(
    series: _Series,
    box: tuple[float, float, float, float],
    span: tuple[dt.datetime, dt.datetime],
    title: str,
    y_title: str,
    x_ticks: int,
    y_ticks: int,
) -> list[str]:
    """One line chart in the rectangle ``box`` (x, y, width, height) of the SVG."""
    left, top, width, height = box
    plot_l, plot_r = left + (64 if y_title else 52), left + width - 12
    plot_t, plot_b = top + 22, top + height - 24
    values = [*series.baseline, *series.candidate, 0.0]
    ticks = _nice_ticks(min(values), max(values), y_ticks)
    low, high = ticks[0], ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    start, end = span
    seconds = (end - start).total_seconds() or 86400.0

    def x(moment: dt.datetime) -> float:
        if end == start:
            return (plot_l + plot_r) / 2
        return plot_l + (plot_r - plot_l) * (moment - start).total_seconds() / seconds

    def y(value: float) -> float:
        return plot_b - (plot_b - plot_t) * (value - low) / ((high - low) or 1.0)

    parts = [
        f'<text x="{plot_l:.1f}" y="{top + 14:.1f}" class="panel-title">{html.escape(title)}</text>'
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{plot_l:.1f}" x2="{plot_r:.1f}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'class="{"zero" if tick == 0 else "grid"}"/>'
            f'<text x="{plot_l - 5:.1f}" y="{y(tick) + 3.5:.1f}" class="tick" '
            f'text-anchor="end">{_tick_text(tick, step)}</text>'
        )
    for moment, label in _time_ticks(start, end, x_ticks) if end > start else [(start, "")]:
        text = label or _group_value(start)
        parts.append(
            f'<line x1="{x(moment):.1f}" x2="{x(moment):.1f}" y1="{plot_b:.1f}" '
            f'y2="{plot_b + 4:.1f}" class="axis"/>'
            f'<text x="{x(moment):.1f}" y="{plot_b + 16:.1f}" class="tick" '
            f'text-anchor="middle">{text}</text>'
        )
    parts.append(
        f'<line x1="{plot_l:.1f}" x2="{plot_r:.1f}" y1="{plot_b:.1f}" y2="{plot_b:.1f}" '
        'class="axis"/>'
    )
    if y_title:
        middle = (plot_t + plot_b) / 2
        parts.append(
            f'<text transform="translate({left + 12:.1f},{middle:.1f}) rotate(-90)" '
            f'class="axis-title" text-anchor="middle">{html.escape(y_title)}</text>'
        )
    dots = len(series.times) <= 40
    for name, values_, colour in (
        ("baseline", series.baseline, BASELINE_COLOUR),
        ("candidate", series.candidate, CANDIDATE_COLOUR),
    ):
        points = " ".join(
            f"{x(t):.1f},{y(v):.1f}" for t, v in zip(series.times, values_, strict=True)
        )
        dash = ' stroke-dasharray="5 3"' if name == "baseline" else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{points}"/>'
        )
        if dots:
            parts += [
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>'
                for t, v in zip(series.times, values_, strict=True)
            ]
    parts += [
        f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="4.5" fill="none" '
        f'stroke="{RESIDUAL_COLOUR}" stroke-width="2"/>'
        for t, v, bad in zip(series.times, series.candidate, series.unexplained, strict=True)
        if bad
    ]
    return parts


def _facet_label(by: list[str], key: tuple) -> str:
    return " / ".join(
        f"(no {name})" if _group_value(value) == "NULL" else _group_value(value)
        for name, value in zip(by, key, strict=True)
    )


def _chart(recon: Reconciliation, change: MeasureChange) -> tuple[str, str]:
    """One SVG for a measure, and a note on the groups it does not draw on their own."""
    time_by = next((b for b in recon.by if b in TIME_GROUPS), None)
    rows = recon.table[recon.table["measure"] == change.measure]
    if time_by is None:
        return _bar_chart(recon, change, rows), ""
    facets = [b for b in recon.by if b != time_by]
    times = sorted(set(rows[time_by]))
    span = (_moment(times[0]), _moment(times[-1]))
    y_title = change.label + (f" ({change.unit})" if change.unit not in ("", change.label) else "")
    word = {"month": "month", "day": "day"}.get(time_by, "partition")
    total = _series(rows, time_by, "all groups", times)
    width, main_height = 1000, 300
    parts = _panel(
        total,
        (0, 0, width, main_height),
        span,
        f"All groups, per {word}: {recon.baseline} {number(change.baseline, change.decimals)} → "
        f"{recon.candidate} {number(change.candidate, change.decimals)} "
        f"({percent(change.percent)})",
        y_title,
        10,
        6,
    )
    note = ""
    if facets:
        needed = min(len(times), max(3, math.ceil(len(times) / 2)))
        groups, sparse = [], []
        for key, part in rows.groupby(facets, dropna=False, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            label = _facet_label(facets, key)
            present = part[(part["baseline"] != 0) | (part["candidate"] != 0)][time_by].nunique()
            (groups if present >= needed else sparse).append((label, part, present))
        groups.sort(key=lambda g: -_series(g[1], time_by, g[0], times).size)
        if len(groups) > PANELS:
            sparse += groups[PANELS - 1 :]
            groups = groups[: PANELS - 1]
        panels = [_series(part, time_by, label, times) for label, part, _ in groups]
        if sparse:
            summed = pd.concat([part for _, part, _ in sparse])
            other = _series(summed, time_by, "", times)
            names = ", ".join(label for label, _, _ in sparse)
            present = sum(1 for b, c in zip(other.baseline, other.candidate, strict=True) if b or c)
            if present >= needed:
                other.label = f"other ({len(sparse)}: {names})"
                panels.append(other)
            else:
                note = (
                    f"Not drawn on their own, as they hold data in too few {word}s (they are in "
                    f"the total): {', '.join(f'{n} ({p} {word}s)' for n, _, p in sparse)}."
                )
        columns = 4 if len(panels) > 4 else max(len(panels), 1)
        panel_w, panel_h = width / columns, 170
        for i, series in enumerate(panels):
            box = (i % columns * panel_w, main_height + 10 + i // columns * panel_h)
            p = percent_change(sum(series.baseline), sum(series.candidate))
            parts += _panel(
                series,
                (*box, panel_w, panel_h),
                span,
                f"{series.label}: {percent(p)}",
                "",
                3,
                4,
            )
        height = main_height + 10 + math.ceil(len(panels) / columns) * panel_h
    else:
        height = main_height
    return _svg(
        parts, width, height, f"{change.label}: {recon.baseline} and {recon.candidate}"
    ), note


def _bar_chart(recon: Reconciliation, change: MeasureChange, rows: pd.DataFrame) -> str:
    """Without a time group: both versions per group, the largest groups first."""
    keys = rows[recon.by].apply(lambda r: _facet_label(recon.by, tuple(r)), axis=1)
    frame = pd.DataFrame(
        {"label": keys, "baseline": rows["baseline"], "candidate": rows["candidate"]}
    )
    frame = frame.groupby("label", dropna=False, sort=False).sum()
    frame = frame.reindex(frame.abs().sum(axis=1).sort_values(ascending=False).index)
    if len(frame) > PANELS:
        rest = frame.iloc[PANELS - 1 :].sum()
        frame = pd.concat(
            [frame.iloc[: PANELS - 1], pd.DataFrame([rest], index=[f"other ({len(frame) - 11})"])]
        )
    values = [0.0, *frame["baseline"], *frame["candidate"]]
    ticks = _nice_ticks(min(values), max(values), 6)
    low, high, step = ticks[0], ticks[-1], ticks[1] - ticks[0]
    width, left, right, row_h = 1000, 220, 980, 30
    height = 40 + row_h * len(frame) + 30

    def x(value: float) -> float:
        return left + (right - left) * (value - low) / ((high - low) or 1.0)

    parts = []
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="30" y2="{height - 30}" '
            f'class="{"zero" if tick == 0 else "grid"}"/><text x="{x(tick):.1f}" '
            f'y="{height - 14}" class="tick" text-anchor="middle">{_tick_text(tick, step)}</text>'
        )
    for i, (label, row) in enumerate(frame.iterrows()):
        top = 36 + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{top + 16}" class="tick" text-anchor="end">'
            f"{html.escape(str(label))}</text>"
        )
        for j, (value, colour) in enumerate(
            ((row["baseline"], BASELINE_COLOUR), (row["candidate"], CANDIDATE_COLOUR))
        ):
            x0, x1 = sorted((x(0), x(value)))
            parts.append(
                f'<rect x="{x0:.1f}" y="{top + 2 + j * 11}" width="{max(x1 - x0, 0.5):.1f}" '
                f'height="10" fill="{colour}"/>'
            )
    unit = f" ({change.unit})" if change.unit else ""
    parts.append(f'<text x="{left}" y="18" class="panel-title">{change.label}{unit}</text>')
    return _svg(parts, width, height, f"{change.label} per group")


def _svg(parts: list[str], width: float, height: float, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        f'aria-label="{html.escape(label)}">' + "".join(parts) + "</svg>"
    )


# --------------------------------------------------------------------------------------------
# the HTML page


def _html_table(
    header: list[str], rows: list[list[str]], numeric: list[bool], css: str = ""
) -> str:
    """Cells are HTML already (escape text before)."""
    head = "".join(
        f'<th class="{"num" if n else "text"}">{h}</th>'
        for h, n in zip(header, numeric, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if n else "text"}">{c}</td>'
            for c, n in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _changes_html(changes: ColumnChanges) -> str:
    e = html.escape
    b, c = e(changes.baseline), e(changes.candidate)
    parts = [
        "<h2>Changed columns</h2>",
        f"<p>Each row of {c} compared with the same row of {b} ({e(_rows_note(changes))}).</p>",
    ]
    if not changes.changed:
        compared = ", ".join(changes.unchanged) or "none besides the key and the measures"
        parts.append(f"<p>No column changed. Compared: {e(compared)}.</p>")
    for change in changes.changed:
        rows = [
            [
                e(_group_value(r.before)),
                e(_group_value(r.after)),
                f"{int(r.rows):,}",
                share(int(r.rows) / changes.rows_matched),
            ]
            for r in change.top.itertuples()
        ]
        more = (
            f"<p class='note'>The {len(rows)} most frequent of {change.distinct_changes:,} "
            "value changes.</p>"
            if change.distinct_changes > len(rows)
            else ""
        )
        parts += [
            f"<h3>{e(change.column)}</h3>",
            f"<p><b>{change.rows_changed:,}</b> of {changes.rows_matched:,} rows change "
            f"(<b>{share(changes.share(change))}</b>). Filled (not NULL) on "
            f"{share(changes.coverage_before(change))} of rows in {b} and "
            f"{share(changes.coverage_after(change))} in {c}.</p>",
            _html_table(
                [f"in {b}", f"in {c}", "rows", "of matched rows"],
                rows,
                [False, False, True, True],
            ),
            more,
        ]
    if changes.changed and changes.unchanged:
        parts.append(f"<p>Unchanged: {e(', '.join(changes.unchanged))}.</p>")
    if changes.only_after or changes.only_before:
        parts.append(
            "<p>Not compared: "
            + "; ".join(
                f"only in {e(v)}: {e(', '.join(cols))}"
                for v, cols in (
                    (changes.candidate, changes.only_after),
                    (changes.baseline, changes.only_before),
                )
                if cols
            )
            + ".</p>"
        )
    return "".join(parts)


def _summary_html(
    recon: Reconciliation, measures: list[MeasureChange], changes: ColumnChanges | None
) -> str:
    e = html.escape
    items = []
    if changes is not None:
        items += [
            f"<li><b>{e(c.column)}</b> changes on {c.rows_changed:,} of "
            f"{changes.rows_matched:,} rows ({share(changes.share(c))}).</li>"
            for c in changes.changed
        ]
    items += [f"<li><b>{e(m.label.capitalize())}</b>: {e(movement(m))}.</li>" for m in measures]
    if not recon.passed:
        failing = _failing(recon, {m.measure: m.decimals for m in measures})
        items.append(f"<li class='bad'><b>Not explained by any rule:</b> {e(failing)}</li>")
    text = [f"<ul class='summary'>{''.join(items)}</ul>"]
    if recon.rules and measures:
        why = [
            f"<li>{e(recon.descriptions.get(rule, rule))} <span class='pct'>→ "
            f"{e(rule_sentence(measures, rule))}</span></li>"
            for rule in recon.rules
        ]
        text.append(
            f"<p><b>Why</b> (the plan's documented rules; each change in % of the "
            f"{e(recon.baseline)} total):</p><ul class='summary'>{''.join(why)}</ul>"
        )
    if recon.candidate_change:
        text.append(f"<p><b>What {e(recon.candidate)} changes:</b> {e(recon.candidate_change)}</p>")
    if recon.baseline_change:
        text.append(f"<p><b>Before ({e(recon.baseline)}):</b> {e(recon.baseline_change)}</p>")
    return "".join(text)


def _rules_html(recon: Reconciliation, measures: list[MeasureChange]) -> str:
    e = html.escape
    if not recon.rules:
        return ""
    rows = []
    for rule in recon.rules:
        cells = [f"{e(recon.descriptions.get(rule, rule))}<br><span class='name'>{e(rule)}</span>"]
        for m in measures:
            total, moved = m.rules[rule], m.moved[rule]
            cell = []
            if not _zero(total, m.decimals):
                cell.append(
                    f"{signed(total, m.decimals)}<br><span class='pct'>"
                    f"{percent(m.share(total))} of {e(recon.baseline)}</span>"
                )
            if not _zero(moved, m.decimals):
                cell.append(
                    f"<span class='pct'>moves {number(moved, m.decimals)} between groups</span>"
                )
            cells.append("<br>".join(cell) or "0")
        rows.append(cells)
    rows.append(
        ["<b>Not explained by any rule</b>"]
        + [
            f"<b>{signed(m.residual, m.decimals)}</b>" if not _zero(m.residual, m.decimals) else "0"
            for m in measures
        ]
    )
    rows.append(
        ["<b>Total change</b>"]
        + [
            f"<b>{signed(m.delta, m.decimals)}</b><br><span class='pct'>{percent(m.percent)}</span>"
            for m in measures
        ]
    )
    header = ["Rule (from the plan)", *(e(m.label) for m in measures)]
    return (
        "<h2>What explains the change</h2><p>What each documented rule predicts, summed over "
        f"all groups, and in % of the {e(recon.baseline)} total. A rule that shifts amounts "
        "between groups (months, regions) without changing the total says how much it moves."
        "</p>" + _html_table(header, rows, [False, *[True] * len(measures)], "rules")
    )


def write_html(recon: Reconciliation, path: Path, changes: ColumnChanges | None = None) -> Path:
    """A standalone HTML reconciliation report for business owners.

    ``changes``: the plan's column changes (``enrichment.changed_columns``), shown first.
    """
    e = html.escape
    b, c = e(recon.baseline), e(recon.candidate)
    measures = measure_changes(recon)
    totals_rows = [
        [
            e(m.label),
            e(m.unit),
            number(m.baseline, m.decimals),
            number(m.candidate, m.decimals),
            signed(m.delta, m.decimals),
            f"<b>{percent(m.percent)}</b>",
        ]
        for m in measures
    ]
    charts = [] if len(recon.table) else ["<p>Neither version has rows in the window.</p>"]
    for m in measures if len(recon.table) else []:
        svg, note = _chart(recon, m)
        charts.append(
            f"<h3>{e(m.label.capitalize())}</h3>{svg}"
            + (f"<p class='note'>{e(note)}</p>" if note else "")
        )
    groups = recon.table
    figures = ["baseline", "candidate", "delta", *(f"rule_{r}" for r in recon.rules), "residual"]
    decimals = {m.measure: m.decimals for m in measures}
    group_rows = [
        [
            *(e(_group_value(row[g])) for g in recon.by),
            e(row["measure"]),
            *(number(row[f], decimals[row["measure"]]) for f in figures),
            "<b class='bad'>no</b>" if row["unexplained"] else "yes",
        ]
        for _, row in groups.iterrows()
    ]
    group_header = [
        *(e(g) for g in recon.by),
        "measure",
        b,
        c,
        "change",
        *(
            f"<span title='{e(recon.descriptions.get(r, ''))}'>rule: {e(r)}</span>"
            for r in recon.rules
        ),
        "residual",
        "explained",
    ]
    numeric = [False] * (len(recon.by) + 1) + [True] * len(figures) + [False]
    ok = recon.passed
    title = e(f"{recon.plan}: {recon.candidate} against {recon.baseline}")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1040px; color: #222;
       line-height: 1.45; padding: 0 1em; }}
h1 {{ margin-bottom: 0.2em; }}
h2 {{ margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }}
.lede {{ font-size: 1.05em; color: #444; margin-top: 0; }}
.meta, .note, .name, .pct {{ color: #666; font-size: 0.85em; }}
.verdict {{ font-weight: bold; padding: 0.6em 0.8em; border-radius: 4px;
           background: {"#e6f4ea" if ok else "#fde8e8"}; color: {"#1a7f37" if ok else "#b42318"}; }}
.summary li {{ margin: 0.3em 0; font-size: 1.05em; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 0.6em 0; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }}
th {{ background: #f6f8fa; }}
td.num, th.num {{ text-align: right; white-space: nowrap; }}
td.text, th.text {{ text-align: left; }}
table.rules td.text {{ max-width: 420px; }}
.bad {{ color: #b42318; }}
.legend span {{ margin-right: 1.4em; }}
svg {{ display: block; margin: 0.4em 0 1em; font-family: system-ui, sans-serif; }}
svg .tick {{ font-size: 11px; fill: #555; }}
svg .panel-title {{ font-size: 12px; font-weight: 600; fill: #222; }}
svg .axis-title {{ font-size: 12px; fill: #333; }}
svg .grid {{ stroke: #eee; }} svg .zero {{ stroke: #999; }} svg .axis {{ stroke: #999; }}
details summary {{ cursor: pointer; font-weight: 600; margin: 1em 0; }}
</style></head><body>
<h1>{e(recon.plan)}: what changes from {b} to {c}</h1>
<p class="lede">{e(recon.description)}</p>
<p class="meta">{c} (candidate) against {b} (baseline, what is published today),
partitions {recon.start} to {recon.end} (both included), compared per
{e(", ".join(recon.by))}.</p>
<p class="verdict">{e(verdict(recon))}</p>
{f"<p class='verdict'>Discontinuity: {e(recon.discontinuity)}.</p>" if recon.discontinuity else ""}
<h2>In short</h2>
{_summary_html(recon, measures, changes)}
{_changes_html(changes) if changes is not None and changes.changed else ""}
<h2>Totals per measure</h2>
{
        _html_table(
            ["measure", "unit", b, c, "change", "change %"],
            totals_rows,
            [False, False, True, True, True, True],
        )
    }
{_rules_html(recon, measures)}
{_changes_html(changes) if changes is not None and changes.columns and not changes.changed else ""}
<h2>Charts</h2>
<p class="legend"><span style="color:{BASELINE_COLOUR}">- - {b} (baseline)</span>
<span style="color:{CANDIDATE_COLOUR}">—— {c} (candidate)</span>
<span style="color:{RESIDUAL_COLOUR}">○ a difference no rule explains</span></p>
<p class="note">Each chart: the measure summed over all groups, then each group that has data in
most periods on its own scale; groups with data in only a few periods are summed.</p>
{"".join(charts)}
<details><summary>Every group ({len(groups):,}, largest unexplained residual first)</summary>
{_html_table(group_header, group_rows, numeric)}
<p class="note">A difference counts as explained when its residual is {_tolerance(recon)}.</p>
</details>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
