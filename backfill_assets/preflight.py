"""Preflight: the one-page backfill plan the runbook asks for, with an estimate and blockers.

``backfill-assets plan <name>`` prints it (exit 1 when something blocks the backfill) and the
``preflight/<plan>`` asset attaches it to the UI. It reads the warehouse only:

- the inventory: target, grain and key, window, sources and their coverage of the window
  (first and last day with rows, days with none), versions and what changed, consumers, owner
  and approvers, risk, rollback, strategy, acceptance criteria;
- the work: per version, the days to build (days whose evidence is current are skipped), the
  source rows in scope, the runs ``chunk_days`` makes of them, and an ETA;
- the blockers: days without source rows, fields left vague, a high-risk plan without
  approvers (that one already refuses to load).

The ETA fits each version's recorded builds (``build_cost``: a fixed part per build and a part
per day; the canary records single days and one full chunk when nothing was built yet) to the
runs and days still to build, plus Dagster's own bookkeeping, measured in docs/benchmarks.md:
about ``RUN_OVERHEAD_S`` per run and ``EVENTS_PER_DAY_S`` per day and model (one materialization
and one check result). Runs are counted for one backfill of the whole range left to build, all
versions together, as the UI launches it.
"""

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import changed_days
from backfill_assets.plan import Plan
from backfill_assets.sources import Source, rows_per_day, source_problems
from backfill_assets.warehouse import relation, table_exists
from backfill_assets.window_checks import days_text

RUN_OVERHEAD_S = 6.0
EVENTS_PER_DAY_S = 0.08


@dataclass
class VersionWork:
    version: str
    days_to_build: int
    runs: int
    seconds_per_day: float | None
    eta_seconds: float | None


@dataclass
class Preflight:
    plan: str
    lines: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    work: list[VersionWork] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.blockers

    def text(self) -> str:
        verdict = (
            "READY: nothing blocks this backfill"
            if self.ready
            else f"NOT READY: {len(self.blockers)} blocker(s)"
        )
        return "\n".join([*self.lines, "", verdict, *(f"  - {b}" for b in self.blockers)])


def _coverage(conn, plan: Plan, source: Source) -> tuple[str, set[dt.date]]:
    """One line on an event source's coverage of the window, and the days it has rows."""
    start, end = plan.spec.window.start, plan.spec.window.end + dt.timedelta(days=1)
    per_day = rows_per_day(conn, source, start, end)
    window = [start + dt.timedelta(days=i) for i in range(plan.window_days)]
    with_rows = [d for d in window if per_day.get(d)]
    empty = [d for d in window if not per_day.get(d)]
    if not with_rows:
        return f"{source.table}: no rows in the window", set()
    return (
        f"{source.table}: {sum(per_day.values()):,} rows, first day {with_rows[0]}, last day "
        f"{with_rows[-1]}, {len(empty)} day(s) without rows"
        + (f": {days_text(empty)}" if empty else ""),
        set(with_rows),
    )


def _current_days(conn, plan: Plan, version: str) -> set[dt.date]:
    """Days of the window whose evidence is current (built, code and sources unchanged)."""
    start, end = plan.spec.window.start, plan.spec.window.end + dt.timedelta(days=1)
    built = evidence.current_code_days(conn, plan, version, start, end)
    stale = {c.day for c in changed_days(conn, plan, start, end, [version])}
    return built - stale


def _runs(days: list[dt.date], chunk_days: int) -> int:
    """Runs of a backfill launched for the range first..last of ``days`` (as the UI does)."""
    if not days:
        return 0
    span = (max(days) - min(days)).days + 1
    return -(-span // chunk_days)


def build_cost(conn, plan: Plan, version: str) -> tuple[float, float] | None:
    """(seconds per build, seconds per day) of the version's recorded builds.

    Every build leaves one evidence row per day with the same ``written_at``; a build of n days
    took n x ``build_seconds``. With builds of different sizes (the canary builds single days and
    one full chunk) a least-squares line gives the fixed and the per-day part; with one size only,
    the fixed part is taken as zero.
    """
    rows = evidence.build_sizes(conn, plan, version)
    if not rows:
        return None
    n = len(rows)
    mean_x = sum(d for d, _ in rows) / n
    mean_y = sum(s for _, s in rows) / n
    var = sum((d - mean_x) ** 2 for d, _ in rows)
    if var == 0:
        return 0.0, mean_y / mean_x
    slope = sum((d - mean_x) * (s - mean_y) for d, s in rows) / var
    slope = max(slope, 0.0)
    return max(mean_y - slope * mean_x, 0.0), slope


def _vague(plan: Plan) -> list[str]:
    spec = plan.spec
    problems = []
    if not spec.grain.lower().startswith("one row per"):
        problems.append("grain: say it as 'One row per ...' so the key can be checked against it")
    if len(spec.rollback.split()) < 8:
        problems.append("rollback: say in a sentence what to run and what happens")
    if not spec.downstream:
        problems.append("downstream: name who reads the published view (or why nobody does)")
    for version in spec.versions:
        if len(version.change.split()) < 6:
            problems.append(f"versions[{version.name}].change: say what changed and why")
    return problems


def preflight(conn: duckdb.DuckDBPyConnection, plan: Plan) -> Preflight:
    """The preflight report of one plan against the warehouse as it is."""
    spec = plan.spec
    evidence.ensure_evidence(conn)
    report = Preflight(plan.name)
    checks = spec.checks
    recon = checks.reconciliation
    lines = report.lines
    lines += [
        f"Backfill plan: {plan.name} ({plan.path})",
        f"  target     models.{plan.name}__<version>, published as analytics.{plan.name}",
        f"  grain      {spec.grain} Key: ({', '.join(spec.unique_key)}), "
        f"partitioned by {spec.partition_column} (UTC days)",
        f"  window     {spec.window.start} .. {spec.window.end} ({plan.window_days} days), "
        f"{spec.chunk_days} days per run",
        f"  strategy   {spec.strategy}; risk {spec.risk}",
        f"  owner      {spec.owner}; approvers {', '.join(spec.approvers) or 'none'}",
        f"  downstream {'; '.join(spec.downstream) or 'none declared'}",
        f"  rollback   {spec.rollback}",
        "  versions",
    ]
    for version in spec.versions:
        role = (
            "baseline"
            if version.name == spec.baseline
            else ("candidate" if version.name == spec.candidate else "other")
        )
        lines.append(f"    {version.name} ({role}, {version.code_version}): {version.change}")
    lines += [
        "  acceptance",
        f"    per day: unique ({', '.join(spec.unique_key)}); null-rate limits "
        + ", ".join(f"{c} <= {r:g}" for c, r in checks.null_rates.items())
        + f"; {len(checks.known_records)} known record(s) on the candidate",
        f"    window: every day built with >= {checks.completeness.min_rows_per_day} row(s); "
        f"sources and code unchanged since; "
        + (", ".join(r.name for r in checks.referential_integrity) or "no integrity rules")
        + f"; reconciliation by {', '.join(recon.by)} on {', '.join(recon.measures)} "
        f"within ±{recon.tolerance:g} explained by "
        + (", ".join(r.name for r in recon.explained_differences) or "no rules")
        + f"; trend of {checks.trend.measure} within {checks.trend.max_deviations:g} MADs",
        "  sources",
    ]
    unreadable = source_problems(conn, plan.sources)
    report.blockers += [f"source: {problem}" for problem in unreadable]
    days_with_rows: set[dt.date] = set()
    event_sources = 0
    for source in spec.sources:
        if not table_exists(conn, *source.table.split(".")):
            lines.append(f"    {source.table}: missing")
        elif source.is_dimension:
            count = conn.execute(f"SELECT count(*) FROM {relation(source.table)}").fetchone()[0]
            lines.append(f"    {source.table}: {count:,} rows (a dimension: every day reads it)")
        else:
            line, days = _coverage(conn, plan, source)
            lines.append(f"    {line}")
            days_with_rows |= days
            event_sources += 1
    window_days = [spec.window.start + dt.timedelta(days=i) for i in range(plan.window_days)]
    empty_days = [d for d in window_days if d not in days_with_rows]
    if event_sources and not unreadable and empty_days:
        report.blockers.append(
            f"{len(empty_days)} day(s) of the window have no row in any event source: "
            f"{days_text(empty_days)}; load them, or shorten the window"
        )
    report.blockers += [f"vague plan field: {p}" for p in _vague(plan)]

    lines.append("  work")
    evidence_ready = not unreadable
    total_eta = 0.0
    todo_by_version = {}
    for version in plan.version_names:
        current = _current_days(conn, plan, version) if evidence_ready else set()
        todo_by_version[version] = (current, [d for d in window_days if d not in current])
    # One backfill builds every selected version of a chunk in the same run.
    runs = _runs([d for _, todo in todo_by_version.values() for d in todo], spec.chunk_days)
    total_eta = runs * RUN_OVERHEAD_S if runs else 0.0
    for version, (current, todo) in todo_by_version.items():
        cost = build_cost(conn, plan, version) if evidence_ready else None
        if not todo:
            eta = 0.0
        elif cost is not None:
            fixed, per_day = cost
            eta = runs * fixed + len(todo) * (per_day + EVENTS_PER_DAY_S)
        else:
            eta = None
        report.work.append(VersionWork(version, len(todo), runs, cost[1] if cost else None, eta))
        total_eta += eta or 0.0
        lines.append(
            f"    {version}: {len(todo)} day(s) to build ({len(current)} current)"
            + (
                f", ~{eta / 60:.1f} min of building"
                if eta is not None
                else f", no build times yet: run the canary (sample_{plan.name}_job) for an ETA"
            )
        )
    if all(w.eta_seconds is not None for w in report.work):
        lines.append(
            f"    {runs} run(s) of up to {spec.chunk_days} days; total ETA ~{total_eta / 60:.1f} "
            f"min (building, plus ~{RUN_OVERHEAD_S:.0f} s a run and ~{EVENTS_PER_DAY_S} s a day "
            "and model of Dagster bookkeeping)"
        )
    return report
