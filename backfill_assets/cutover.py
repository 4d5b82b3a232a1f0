"""The cutover summary: the note the runbook says to send to users when a version goes live.

The summary is rendered from the promotion's row in ``backfill.promotions``: its evidence
records the gate's verdicts, the sizes of the known differences and who approved or launched
it. So the text attached to the run and the file written next to the warehouse are the same,
and ``regenerate_summary`` writes the same file again from the log when the promotion could
not (the view had moved, the disk was full).
"""

import contextlib
import datetime as dt
import os
import tempfile
from pathlib import Path

import duckdb

from backfill_assets.plan import Plan
from backfill_assets.publish import PROMOTE, Gate, LogEntry, history
from backfill_assets.window_checks import ENRICHMENT_COVERAGE_MET


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


def summary_text(plan: Plan, entry: LogEntry) -> str:
    """Markdown: what changed, how it was validated, known differences, who is affected, undo.

    Rendered from the promotion's log row alone (and the plan's descriptions), so the same
    text comes out at promotion time and when regenerated from ``backfill.promotions``.
    """
    spec = plan.spec
    evidence = entry.evidence
    new = plan.version(entry.version)
    old = plan.version(entry.previous_version) if entry.previous_version else None
    first, last = _window(plan, evidence)
    lines = [
        f"# {plan.name}: `{entry.version}` is now published",
        "",
        f"- **Took effect:** {entry.happened_at:%Y-%m-%d %H:%M:%S} UTC (run `{entry.run_id}`)",
        f"- **View:** `analytics.{plan.name}` now reads `models.{plan.table_name(entry.version)}`"
        f", {first} to {last}"
        + (f" (was `{entry.previous_version}`)" if entry.previous_version else ""),
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
    lines += ["", "## Who is affected", ""]
    lines += [f"- {d}" for d in spec.downstream] or ["- no downstream consumers declared"]
    lines += [
        "",
        "## How to roll back",
        "",
        spec.rollback,
        "",
        f"From the UI: Jobs → `rollback_{plan.name}_job`, with config "
        f"`ops: {{rollback_{plan.name}: {{config: {{by: ..., reason: ...}}}}}}`. It checks "
        "the previous version's partitions again first and names any that fail.",
        "",
    ]
    return "\n".join(lines)


def cutover_summary(plan: Plan, gate: Gate, entry: LogEntry) -> str:
    """The summary of the promotion ``entry`` that ``gate`` allowed.

    What it says about the gate is read from ``entry.evidence``, which the promotion recorded
    from ``gate``; see ``summary_text``.
    """
    if (gate.plan, gate.version) != (entry.model, entry.version):
        raise ValueError(
            f"gate {gate.plan}/{gate.version} is not the gate of {entry.model}/{entry.version}"
        )
    return summary_text(plan, entry)


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
    return write_summary(reports_dir, plan, entry, summary_text(plan, entry))
