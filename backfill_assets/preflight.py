"""Preflight: the one-page backfill plan the runbook asks for, with an estimate and blockers.

``backfill-assets plan <name>`` prints it (exit 1 when something blocks the backfill) and the
``preflight/<plan>__preflight`` asset attaches it to the UI. It reads the warehouse only:

- the inventory: target, grain and key, cadence and window, sources and their coverage of the
  window (first and last partition with rows, partitions with none), versions and what
  changed, consumers, owner and approvers, risk, rollback, strategy, acceptance criteria;
- the work: per version, the partitions to build (those whose evidence is current are
  skipped), the runs ``chunk`` makes of them, and an ETA;
- the blockers: partitions without source rows, fields left vague, a source that is missing.

The ETA fits each version's recorded builds (``build_cost``: a fixed part per build and a part
per partition; the canary records single partitions and one full chunk when nothing was built
yet) to the runs and partitions still to build, plus Dagster's own bookkeeping, measured in
docs/benchmarks.md: about ``RUN_OVERHEAD_S`` per run and ``EVENTS_PER_PARTITION_S`` per
partition and model (a planned and a stored materialization and check result). Runs are
counted for one backfill of the whole range left to build, all versions together, as the UI
launches it.
"""

from dataclasses import dataclass, field

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import changed_partitions
from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.sources import Source, rows_per_partition, source_problems
from backfill_assets.warehouse import relation, table_exists
from backfill_assets.window_checks import partitions_text

# A run's start-up (queue, process, code load: 4.5-6 s) and the shipped instance's events per
# partition and model (a planned and a stored materialization and check result: ~6 ms, rounded
# up for a busier instance), docs/benchmarks.md.
RUN_OVERHEAD_S = 6.0
EVENTS_PER_PARTITION_S = 0.01


@dataclass
class VersionWork:
    version: str
    to_build: int
    runs: int
    seconds_per_partition: float | None
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


def _coverage(conn, plan: Plan, source: Source) -> tuple[str, set[Partition]]:
    """One line on an event source's coverage of the window, and the partitions with rows."""
    cadence, word = plan.cadence, plan.cadence.word
    start, end = cadence.utc(plan.window_start), cadence.utc(plan.window_end)
    found = rows_per_partition(conn, source, cadence.sql_floor, start, end)
    per_partition = {cadence.value(p): n for p, n in found.items()}
    window = plan.window_partitions
    with_rows = [p for p in window if per_partition.get(p)]
    empty = [p for p in window if not per_partition.get(p)]
    if not with_rows:
        return f"{source.table}: no rows in the window", set()
    return (
        f"{source.table}: {sum(per_partition.values()):,} rows, first {word} "
        f"{cadence.label(with_rows[0])}, last {word} {cadence.label(with_rows[-1])}, "
        f"{len(empty)} {word}(s) without rows"
        + (f": {partitions_text(cadence, empty)}" if empty else ""),
        set(with_rows),
    )


def _current(conn, plan: Plan, version: str) -> set[Partition]:
    """Partitions of the window whose evidence is current (built, code and sources same)."""
    start, end = plan.window_start, plan.window_end
    built = evidence.current_code(conn, plan, version, start, end)
    stale = {c.partition for c in changed_partitions(conn, plan, start, end, [version])}
    return built - stale


def _runs(plan: Plan, todo: list[Partition]) -> int:
    """Runs of a backfill launched for the range first..last of ``todo`` (as the UI does)."""
    if not todo:
        return 0
    span = len(plan.cadence.starts(min(todo), plan.cadence.next(max(todo))))
    return -(-span // plan.chunk)


def build_cost(conn, plan: Plan, version: str) -> tuple[float, float] | None:
    """(seconds per build, seconds per partition) of the version's recorded builds.

    Every build leaves one evidence row per partition with the same ``written_at``; a build of
    n partitions took n x ``build_seconds``. With builds of different sizes (the canary builds
    single partitions and one full chunk) a least-squares line gives the fixed and the
    per-partition part; with one size only, or when noise makes the larger builds no slower
    per build (a slope of zero or less: nothing to tell the parts apart), the fixed part is
    taken as zero and every second counts per partition.
    """
    rows = evidence.build_sizes(conn, plan, version)
    if not rows:
        return None
    n = len(rows)
    mean_x = sum(d for d, _ in rows) / n
    mean_y = sum(s for _, s in rows) / n
    var = sum((d - mean_x) ** 2 for d, _ in rows)
    slope = sum((d - mean_x) * (s - mean_y) for d, s in rows) / var if var else 0.0
    if slope <= 0:
        return 0.0, mean_y / mean_x
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
    cadence, word = plan.cadence, plan.cadence.word
    zone = "" if cadence.is_hourly else f" ({cadence.timezone})"
    lines += [
        f"Backfill plan: {plan.name} ({plan.path})",
        f"  target     models.{plan.name}__<version>, published as analytics.{plan.name}",
        f"  grain      {spec.grain} Key: ({', '.join(spec.unique_key)}), "
        f"partitioned by {spec.partition_column}: one partition per {word}{zone}"
        + (f" (UTC hours, {cadence.timezone} days)" if cadence.is_hourly else ""),
        f"  window     {cadence.label(plan.window_start)} .. "
        f"{cadence.label(plan.window_partitions[-1])} ({plan.window_size} {word}s), "
        f"{plan.chunk} {word}s per run",
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
        f"    per {word}: unique ({', '.join(spec.unique_key)}); null-rate limits "
        + ", ".join(f"{c} <= {r:g}" for c, r in checks.null_rates.items())
        + f"; {len(checks.known_records)} known record(s) on the candidate",
        f"    window: every {word} built with "
        f">= {checks.completeness.min_rows_per_partition} row(s); "
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
    with_rows: set[Partition] = set()
    event_sources = 0
    for source in spec.sources:
        if not table_exists(conn, *source.table.split(".")):
            lines.append(f"    {source.table}: missing")
        elif source.is_dimension:
            count = conn.execute(f"SELECT count(*) FROM {relation(source.table)}").fetchone()[0]
            lines.append(f"    {source.table}: {count:,} rows (a dimension: every {word} reads it)")
        else:
            line, found = _coverage(conn, plan, source)
            lines.append(f"    {line}")
            with_rows |= found
            event_sources += 1
    empty = [p for p in plan.window_partitions if p not in with_rows]
    if event_sources and not unreadable and empty:
        report.blockers.append(
            f"{len(empty)} {word}(s) of the window have no row in any event source: "
            f"{partitions_text(cadence, empty)}; load them, or shorten the window"
        )
    report.blockers += [f"vague plan field: {p}" for p in _vague(plan)]

    lines.append("  work")
    evidence_ready = not unreadable
    todo_by_version = {}
    for version in plan.version_names:
        current = _current(conn, plan, version) if evidence_ready else set()
        todo_by_version[version] = (
            current,
            [p for p in plan.window_partitions if p not in current],
        )
    # One backfill builds every selected version of a chunk in the same run.
    runs = _runs(plan, [p for _, todo in todo_by_version.values() for p in todo])
    total_eta = runs * RUN_OVERHEAD_S if runs else 0.0
    for version, (current, todo) in todo_by_version.items():
        cost = build_cost(conn, plan, version) if evidence_ready else None
        if not todo:
            eta = 0.0
        elif cost is not None:
            fixed, each = cost
            eta = runs * fixed + len(todo) * (each + EVENTS_PER_PARTITION_S)
        else:
            eta = None
        report.work.append(VersionWork(version, len(todo), runs, cost[1] if cost else None, eta))
        total_eta += eta or 0.0
        lines.append(
            f"    {version}: {len(todo)} {word}(s) to build ({len(current)} current)"
            + (
                f", ~{eta / 60:.1f} min of building"
                if eta is not None
                else f", no build times yet: run the canary (sample_{plan.name}_job) for an ETA"
            )
        )
    if all(w.eta_seconds is not None for w in report.work):
        lines.append(
            f"    {runs} run(s) of up to {plan.chunk} {word}s; total ETA ~{total_eta / 60:.1f} "
            f"min (building, plus ~{RUN_OVERHEAD_S:.0f} s a run and ~{EVENTS_PER_PARTITION_S} s "
            f"a {word} and model of Dagster bookkeeping)"
        )
    return report
