"""The cutover summary: the note the runbook says to send to users when a version goes live.

It opens with an announcement a user can forward as is: what changed (the plan's and the
version's own words), by how much per measure (the totals before and after, in %), which rule
explains how much (the rules' descriptions), when it went live, and what it means for each
downstream consumer. Nothing in it is specific to one plan: every word comes from the plan or
the measured figures.

The summary is rendered from the promotion's row in ``backfill.promotions``: its evidence
records the gate's verdicts, the sizes of the known differences and who approved or launched
it. So the text attached to the run and the file written next to the warehouse are the same,
and ``regenerate_summary`` writes the same file again from the log when the promotion could
not (the view had moved, the disk was full). The measure totals come from the log row's
``known_differences.totals`` when it has them, else from the promotion's own reconciliation
(``cutover_summary``) or, regenerating, the same reconciliation run again on the kept tables.
"""

import contextlib
import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from backfill_assets.contract import announcement_lines
from backfill_assets.downstream import summary_lines as consumer_lines
from backfill_assets.plan import Plan
from backfill_assets.publish import PROMOTE, Gate, LogEntry, history
from backfill_assets.reconcile import reconcile
from backfill_assets.report import measure_label, number, percent, percent_change
from backfill_assets.window_checks import ENRICHMENT_COVERAGE_MET, RECONCILES_WITH_BASELINE

# Per measure: baseline and candidate totals and each rule's signed part, as
# ``Reconciliation.measure_totals`` gives them.
Totals = dict[str, dict]

# What a downstream consumer of each kind (``kind: name`` in the plan's ``downstream``) sees
# change; the time is the go-live time.
_CONSUMER_KINDS = {
    "dashboard": "shows the new figures from {time}, for the whole period {period}; figures "
    "read from it before then will not match",
    "export": "what it exports from {time} on carries the new figures; what it exported before "
    "keeps the old ones",
    "model": "reads the new figures from its first run after {time}; what it computed before "
    "came from the old ones",
}
_ANY_CONSUMER = "reads the new figures from {time}"


def _approval(plan: Plan, evidence: dict) -> str:
    """Who approved; or that no approval was needed, and who launched it."""
    approved, launched = evidence.get("approved_by"), evidence.get("launched_by")
    if "launched_by" not in evidence and approved and approved not in plan.spec.approvers:
        # A row logged before approvals were checked against the approvers (risk: low).
        approved, launched = None, approved
    if approved:
        return approved
    text = f"not required (risk: {plan.spec.risk})"
    return text + (f"; launched by {launched} (not an approver)" if launched else "")


def _window(plan: Plan, evidence: dict) -> tuple[dt.date, dt.date]:
    """The window the promotion published (both ends inclusive), as the log recorded it."""
    logged = evidence.get("window")
    if not logged:
        return plan.spec.window.start, plan.spec.window.end
    first, last = (dt.date.fromisoformat(part) for part in logged.split(".."))
    return first, last


def _known_differences(plan: Plan, known: dict | None) -> list[str]:
    rules = {r.name: r.description for r in plan.spec.checks.reconciliation.explained_differences}
    if not known or not known["rules"]:
        return ["Rows and measures equal the baseline within tolerance."]
    measures = known["measures"]
    lines = [
        f"Size of each rule: the sum over all groups ({', '.join(known['by'])}) of the change "
        "it predicts, in absolute value (a refund moved between two groups counts in both).",
        "",
        "| rule | what it means | " + " | ".join(f"Σ|Δ {m}|" for m in measures) + " |",
        "|---|---|" + "---|" * len(measures),
    ]
    for rule, sizes in known["rules"].items():
        cells = " | ".join(f"{sizes[m]:,.2f}" for m in measures)
        lines.append(f"| {rule} | {rules.get(rule, '')} | {cells} |")
    lines += [
        "",
        "Every difference is accounted for by these rules (residuals within "
        f"±{known['tolerance']}).",
    ]
    return lines


@dataclass(frozen=True)
class _Change:
    """One measured difference the announcement names: a measure's total or a column."""

    name: str  # the measure or column, as in the plan
    headline: str  # "gross revenue 18.5% lower"
    detail: str  # "gross revenue: 2,043,509.52 → 1,665,389.10 (-18.5%)"


def _figure(value: float, whole: bool) -> str:
    return number(value, 0 if whole else 2)


def _whole(figures: dict) -> bool:
    """Whether a measure counts (rows, whole numbers): shown without decimals."""
    if "unit" in figures:
        return figures["unit"] in ("rows", "count")
    return float(figures["baseline"]).is_integer() and float(figures["candidate"]).is_integer()


def _changes(entry: LogEntry, totals: Totals | None) -> list[_Change]:
    """The measures whose totals changed, and the enriched column if it changed."""
    out = []
    for measure, figures in (totals or {}).items():
        before, after, whole = figures["baseline"], figures["candidate"], _whole(figures)
        if _figure(after - before, whole) == _figure(0, whole):
            continue
        change = percent_change(before, after)
        label = measure_label(measure)
        if change is None:
            headline = f"{label} {_figure(after, whole)} (was 0)"
        else:
            way = "lower" if after < before else "higher"
            headline = f"{label} {percent(change).lstrip('+-')} {way}"
        detail = f"{label}: {_figure(before, whole)} → {_figure(after, whole)} ({percent(change)})"
        out.append(_Change(measure, headline, detail))
    checks = entry.evidence.get("checks", {})
    figures = checks.get(ENRICHMENT_COVERAGE_MET, {}).get("figures", {})
    if figures.get("rows_changed"):
        column, changed, rows = figures["column"], figures["rows_changed"], figures["rows"]
        text = f"{column} different on {figures['share_changed']:.1%} of rows"
        out.append(_Change(column, text, f"{text} ({changed:,} of {rows:,})"))
    return out


def _words(text: str) -> set[str]:
    """The words of a name or text that can tie a consumer to a measure or column."""
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) >= 4}


def _consumer_line(consumer: str, changes: list[_Change], time: str, period: str) -> str:
    """What one downstream consumer sees change: the changes whose names share a word with its
    description (a dashboard of segments: the segment column), else all of them."""
    if not changes:
        return f"- **{consumer}**: no measured difference; it shows the same figures as before."
    kind, _, name = consumer.rpartition(":")
    text = _CONSUMER_KINDS.get(kind.strip().lower(), _ANY_CONSUMER).format(time=time, period=period)
    named = [c for c in changes if _words(c.name) & _words(name)]
    return f"- **{consumer}**: {text} ({', '.join(c.headline for c in named or changes)})."


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def _rule_effect(rule: str, totals: Totals, sizes: dict[str, float], by: list[str]) -> str:
    """``gross revenue -10.2%, net revenue -10.5%`` (of the previous totals), and what the rule
    moves between groups without changing a total: half its logged size ``sizes`` beyond its
    net effect (what leaves one group arrives in another)."""
    effects, moves = [], []
    for measure, figures in totals.items():
        label, before = measure_label(measure), figures["baseline"]
        part = figures.get("rules", {}).get(rule, 0.0)
        whole = _whole(figures)
        moved = (sizes.get(measure, 0.0) - abs(part)) / 2
        if _figure(part, whole) != _figure(0, whole):
            share = percent(part / abs(before) * 100) if before else _figure(part, whole)
            effects.append(f"{label} {share}")
        if _figure(moved, whole) != _figure(0, whole):
            moves.append(f"{label} {_figure(moved, whole)}")
    text = ", ".join(effects) or "no total changes"
    if moves:
        text += f"; moves between groups ({', '.join(by)}): {', '.join(moves)}"
    return text


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.;])\s", text.strip(), maxsplit=1)[0].rstrip(".;")


def announcement(plan: Plan, entry: LogEntry, totals: Totals | None = None) -> list[str]:
    """The short message to forward to users, as markdown lines.

    ``totals``: per measure, the totals before and after and each rule's part (see
    ``Totals``); the log row's own ``known_differences.totals`` win when it has them.
    """
    spec = plan.spec
    known = entry.evidence.get("known_differences") or {}
    totals = known.get("totals") or totals
    first, last = _window(plan, entry.evidence)
    period = f"{first} to {last}"
    time = f"{entry.happened_at:%Y-%m-%d %H:%M} UTC"
    changes = _changes(entry, totals)
    what = _first_sentence(spec.description)
    head = f"**From {time}, `analytics.{plan.name}` ({what}) follows a new definition.**"
    changed = {c.name for c in changes}
    unchanged = [measure_label(m) for m in totals or {} if m not in changed]
    said = [_and([c.headline for c in changes])] if changes else []
    said += [f"{_and(unchanged)} unchanged"] if unchanged else []
    # The figures compare with the baseline, which is what users saw unless another version
    # was published in between.
    before = "before" if entry.previous_version in (None, spec.baseline) else spec.baseline
    if said:
        head += f" Over {period}, compared with {before}: {'; '.join(said)}."
    else:
        head += " The size of the change was not recorded for this promotion."
    lines = [head, "", f"**What changes:** {plan.version(entry.version).change}"]
    if entry.evidence.get("discontinuity"):
        lines += ["", f"**Discontinuity:** {entry.evidence['discontinuity']}."]
    if changes:
        lines += ["", f"**By how much** ({period}, {before} → now):", ""]
        lines += [f"- {c.detail}" for c in changes]
    rules = spec.checks.reconciliation.explained_differences
    if totals and rules:
        lines += ["", "**Why** (each documented change, in % of the previous total):", ""]
        for rule in rules:
            sizes = (known.get("rules") or {}).get(rule.name, {})
            effect = _rule_effect(rule.name, totals, sizes, known.get("by") or [])
            lines.append(f"- {rule.description.rstrip('.')}: {effect}.")
    lines += ["", "**What it means for you:**", ""]
    lines += [_consumer_line(c, changes, time, period) for c in spec.downstream] or [
        "- no downstream consumers are declared"
    ]
    lines += [
        "",
        f"Questions to {spec.owner}. If something looks wrong, the change can be rolled back: "
        "the previous version is kept as it was.",
    ]
    return lines


def _shadow_lines(plan: Plan, entry: LogEntry) -> list[str]:
    """The shadow period the promotion started, as its log row recorded it."""
    shadow = entry.evidence.get("shadow")
    if not shadow:
        return []
    return [
        f"- **Shadow period:** `{shadow['baseline']}` keeps being built for the "
        f"{shadow['partitions']} {plan.cadence.word}(s) after the window ({shadow['first']} to "
        f"{shadow['last']}) and reconciled with `{entry.version}` every morning "
        f"(`monitor_{plan.name}_schedule`, check `shadow_reconciles_with_baseline`); then it is "
        "retired: no longer built, its table kept."
    ]


def summary_text(plan: Plan, entry: LogEntry, totals: Totals | None = None) -> str:
    """Markdown: a forwardable announcement, then what changed, how it was validated, known
    differences, who is affected, undo.

    Rendered from the promotion's log row (and the plan's descriptions), so the same text
    comes out at promotion time and when regenerated from ``backfill.promotions``. ``totals``:
    the measure totals of the promotion's reconciliation, for a log row that does not carry
    them (see ``announcement``).
    """
    spec = plan.spec
    evidence = entry.evidence
    new = plan.version(entry.version)
    old = plan.version(entry.previous_version) if entry.previous_version else None
    first, last = _window(plan, evidence)
    lines = [
        f"# {plan.name}: `{entry.version}` is now published",
        "",
        "## Announcement (forward as is)",
        "",
        *announcement(plan, entry, totals),
        "",
        "## The promotion",
        "",
        f"- **Took effect:** {entry.happened_at:%Y-%m-%d %H:%M:%S} UTC (run `{entry.run_id}`)",
        f"- **View:** `analytics.{plan.name}` now reads `models.{plan.table_name(entry.version)}`"
        f", {first} to {last}"
        + (f" (was `{entry.previous_version}`)" if entry.previous_version else ""),
        *(
            [f"- **Discontinuity:** {evidence['discontinuity']}"]
            if evidence.get("discontinuity")
            else []
        ),
        *_shadow_lines(plan, entry),
        f"- **Approved by:** {_approval(plan, evidence)}",
        f"- **Owner:** {spec.owner}",
    ]
    if entry.reason:
        lines.append(f"- **Note:** {entry.reason}")
    lines += ["", "## What changed", "", new.change]
    if old:
        lines += ["", f"Before, `{old.name}`: {old.change}"]
    lines += [
        "",
        "## Validation",
        "",
        f"Window {first} to {last} ({plan.with_window(first, last).window_size} "
        f"{plan.cadence.word}s), grain: {spec.grain}",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    reused = evidence.get("verdict_reused_from")
    if reused:
        rechecked = ", ".join(reused.get("rechecked") or []) or "none"
        lines[-2:-2] = [
            f"Window checks as evaluated by run {reused.get('run_id') or '-'} "
            f"({reused.get('evaluated_in')}) at {reused.get('evaluated_at', '')[:19]} UTC; "
            f"nothing they read changed since. Evaluated again: {rechecked}.",
            "",
        ]
    checks = evidence.get("checks", {})
    for name, check in checks.items():
        blocking = check.get("blocking", True)
        result = "passed" if check["passed"] else ("warning" if not blocking else "FAILED")
        lines.append(f"| {name} | {result} | {check['summary'].replace('|', '/')} |")
    lines += ["", f"## Known differences from `{spec.baseline}`", ""]
    if "known_differences" in evidence:
        lines += _known_differences(plan, evidence["known_differences"])
    else:
        lines.append(
            "Not recorded for this promotion; `backfill-assets reconcile "
            f"{plan.name}` prints the reconciliation."
        )
    figures = checks.get(ENRICHMENT_COVERAGE_MET, {}).get("figures", {})
    if "rows_changed" in figures:
        lines += [
            "",
            f"`{figures['column']}` differs from `{spec.baseline}` on {figures['rows_changed']:,} "
            f"of {figures['rows']:,} rows ({figures['share_changed']:.2%}); it is filled on "
            f"{figures['coverage']:.2%} of rows.",
        ]
    for section in (announcement_lines(evidence), consumer_lines(evidence)):
        if section:
            lines += ["", *section]
    lines += ["", "## Who is affected", ""]
    lines += [
        f"- {d}" + (f" (owner: {d.owner})" if getattr(d, "owner", "") else "")
        for d in spec.downstream
    ] or ["- no downstream consumers declared"]
    lines += [
        "",
        "## How to roll back",
        "",
        spec.rollback,
        "",
        f"From the UI: Jobs → `rollback_{plan.name}_job`, with config "
        f"`ops: {{rollback_{plan.name}: {{config: {{by: ..., reason: ...}}}}}}`. It checks "
        "the previous version's partitions again first and names any that fail. Add "
        "`to_version: <version>` or `to_log_row: <n>` to go back further; the target's "
        "partitions and consumer queries are checked again first.",
        "",
    ]
    return "\n".join(lines)


def cutover_summary(plan: Plan, gate: Gate, entry: LogEntry) -> str:
    """The summary of the promotion ``entry`` that ``gate`` allowed.

    What it says about the gate is read from ``entry.evidence``, which the promotion recorded
    from ``gate``; the measure totals, when the evidence lacks them, from the gate's
    reconciliation. See ``summary_text``.
    """
    if (gate.plan, gate.version) != (entry.model, entry.version):
        raise ValueError(
            f"gate {gate.plan}/{gate.version} is not the gate of {entry.model}/{entry.version}"
        )
    check = next((c for c in gate.checks if c.name == RECONCILES_WITH_BASELINE), None)
    recon = check.reconciliation if check else None
    return summary_text(plan, entry, recon.measure_totals() if recon else None)


def summary_name(version: str, happened_at: dt.datetime) -> str:
    """``cutover-<time>-<version>.md``: names sort in the order the promotions happened."""
    return f"cutover-{happened_at:%Y%m%dT%H%M%S}-{version}.md"


def summary_path(directory: Path, plan: Plan, entry: LogEntry) -> Path:
    return directory / plan.name / summary_name(entry.version, entry.happened_at)


def prepare_folder(directory: Path, plan: Plan) -> Path:
    """Create ``<dir>/<plan>`` and make sure a file can be written in it; raise ``OSError``
    if not. Done before a promotion commits, so that a folder that cannot take the summary
    stops the promotion while nothing has changed yet."""
    folder = directory / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass
    return folder


def write_summary(directory: Path, plan: Plan, entry: LogEntry, text: str) -> Path:
    """Write the summary as ``<dir>/<plan>/cutover-<time>-<version>.md`` and return its path.

    Written to a temporary file and renamed, so a write that fails (a full disk) leaves no
    half a summary behind.
    """
    path = summary_path(directory, plan, entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    return path


def regenerate_summary(conn: duckdb.DuckDBPyConnection, plan: Plan, reports_dir: Path) -> Path:
    """Write the cutover summary of the plan's latest promotion again, from the log; return
    its path (the same name the promotion gave it). Raise ``ValueError`` when the plan was
    never promoted."""
    promotions = [e for e in history(conn, plan) if e.action == PROMOTE]
    if not promotions:
        raise ValueError(
            f"{plan.name}: backfill.promotions holds no promotion of it, so there is no "
            f"cutover summary to write. Fix: promote a version first (promote_{plan.name}_job)."
        )
    entry = promotions[-1]
    return write_summary(
        reports_dir, plan, entry, summary_text(plan, entry, _totals(conn, plan, entry))
    )


def _totals(conn: duckdb.DuckDBPyConnection, plan: Plan, entry: LogEntry) -> Totals | None:
    """The promotion's measure totals: from its log row, else its reconciliation run again over
    the logged window on the kept tables (the same figures unless a partition was rebuilt
    since); None when that cannot run (a table is gone)."""
    known = entry.evidence.get("known_differences") or {}
    if known.get("totals"):
        return known["totals"]
    first, last = _window(plan, entry.evidence)
    try:
        return reconcile(
            conn, plan.with_window(first, last), candidate=entry.version
        ).measure_totals()
    except (duckdb.Error, ValueError):  # a table is gone; the plan's window moved
        return None
