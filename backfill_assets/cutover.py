"""The cutover summary: the note the runbook says to send to users when a version goes live."""

from pathlib import Path

from backfill_assets.plan import Plan
from backfill_assets.publish import Gate, LogEntry
from backfill_assets.window_checks import ENRICHMENT_COVERAGE_MET, RECONCILES_WITH_BASELINE


def cutover_summary(plan: Plan, gate: Gate, entry: LogEntry) -> str:
    """Markdown: what changed, how it was validated, known differences, who is affected, undo."""
    spec = plan.spec
    new = plan.version(entry.version)
    old = plan.version(entry.previous_version) if entry.previous_version else None
    lines = [
        f"# {plan.name}: `{entry.version}` is now published",
        "",
        f"- **Took effect:** {entry.happened_at:%Y-%m-%d %H:%M:%S} UTC (run `{entry.run_id}`)",
        f"- **View:** `analytics.{plan.name}` now reads `models.{plan.table_name(entry.version)}`"
        + (f" (was `{entry.previous_version}`)" if entry.previous_version else ""),
        f"- **Approved by:** {gate.approved_by or 'not required (risk: low)'}",
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
        f"Window {spec.window.start} to {spec.window.end} ({plan.window_days} days), "
        f"grain: {spec.grain}",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    for check in gate.checks:
        result = "passed" if check.passed else ("warning" if not check.blocking else "FAILED")
        lines.append(f"| {check.name} | {result} | {check.summary.replace('|', '/')} |")
    recon = next((c for c in gate.checks if c.name == RECONCILES_WITH_BASELINE), None)
    rules = {r.name: r.description for r in spec.checks.reconciliation.explained_differences}
    lines += ["", f"## Known differences from `{spec.baseline}`", ""]
    if recon and recon.reconciliation is not None and rules:
        table = recon.reconciliation.table
        measures = list(dict.fromkeys(table["measure"]))
        by = ", ".join(recon.reconciliation.by)
        lines += [
            f"Size of each rule: the sum over all groups ({by}) of the change it predicts, "
            "in absolute value (a refund moved between two groups counts in both).",
            "",
            "| rule | what it means | " + " | ".join(f"Σ|Δ {m}|" for m in measures) + " |",
            "|---|---|" + "---|" * len(measures),
        ]
        for rule, description in rules.items():
            sizes = [
                f"{table.loc[table['measure'] == m, 'rule_' + rule].abs().sum():,.2f}"
                for m in measures
            ]
            lines.append(f"| {rule} | {description} | " + " | ".join(sizes) + " |")
        lines += [
            "",
            "Every difference is accounted for by these rules (residuals within "
            f"±{recon.reconciliation.tolerance}).",
        ]
    else:
        lines.append("Rows and measures equal the baseline within tolerance.")
    enrichment = next((c for c in gate.checks if c.name == ENRICHMENT_COVERAGE_MET), None)
    if enrichment and "rows_changed" in enrichment.figures:
        figures = enrichment.figures
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
        f"`ops: {{rollback_{plan.name}: {{config: {{by: ..., reason: ...}}}}}}`.",
        "",
    ]
    return "\n".join(lines)


def write_summary(directory: Path, plan: Plan, entry: LogEntry, text: str) -> Path:
    """Write the summary as ``<dir>/<plan>/cutover-<time>-<version>.md`` and return its path."""
    folder = directory / plan.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cutover-{entry.happened_at:%Y%m%dT%H%M%S}-{entry.version}.md"
    path.write_text(text)
    return path
