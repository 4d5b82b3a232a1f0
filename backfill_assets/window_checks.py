"""Window checks: what must hold across a version's whole window before it may be published.

Each check reads the stored tables with set-based SQL over the window and returns a
``WindowCheck``: a verdict, a one-line summary in the plan's words (``3 month(s) failing``) and
figures (the failing partitions as ranges, groups, keys). None loads the window into pandas;
only small results (the reconciliation table, lists of failing partitions) come back to Python.

- ``window_is_complete``: every partition has evidence and at least ``min_rows_per_partition``
  rows;
- ``every_partition_passed_checks``: every partition's own checks passed (from evidence);
- ``built_with_current_code``: every partition's ``code_version`` is the plan's current one;
- ``built_from_current_sources``: every partition's source fingerprint still matches the sources;
- ``sources_are_valid``: no source row leaves a column its declaration ``required`` empty (a row
  without its event time would silently drop out of every partition);
- one check per ``referential_integrity`` rule of the plan (``warn`` rules never block);
- ``reconciles_with_baseline`` (candidate): no unexplained residual beyond tolerance;
- ``trend_has_no_unexplained_jumps``: no partition deviates from its rolling median (of the
  same phase of the cycle, with ``seasonality``) by more than ``max_deviations`` median
  absolute deviations;
- ``enrichment_coverage_met`` (candidate of a column enrichment): rows per partition identical
  to the baseline and the share of rows with the new value at least ``min_coverage``;
- ``schema_contract_kept``: the version's table keeps every column of the published version's
  table with its type, unless the plan declares the change under ``breaking_changes``
  (``contract.py``); added columns are listed;
- ``downstream_queries_work`` (plans whose consumers declare their query): each consumer's
  query runs against the version as if it were published, returns at least ``min_rows`` rows
  and keeps its columns; its totals are compared with the published version's
  (``downstream.py``);
- ``is_fresh`` (a warning, never blocking): the newest partition built is not older than the
  newest complete source partition, so history that arrived after the window is noticed;
- ``shadow_reconciles_with_baseline`` (plans with ``shadow_partitions``; ``shadow.py``): after a
  promotion, the partitions after the promoted window built by both the published version and
  the baseline reconcile, as the window did.

A forward-only plan's view serves the baseline before the cutoff and the candidate from it
(``Plan.served_spans``), so the checks that read each partition's evidence (completeness,
passed, current code and sources) and the referential-integrity rules cover both spans, each
with its own version (``served``); the reconciliation, trend and enrichment compare the
candidate with the baseline over the candidate's span only.

``recheck`` evaluates some of them again on their own, for a verdict reused from
``backfill.window_verdicts`` (``verdicts.py``).

The schema contract and the consumer queries compare the version with the one users see now:
``run_window_checks`` takes it as ``published`` (the publish module reads it from its log), the
baseline when not given.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from backfill_assets import contract, evidence
from backfill_assets.contract import SCHEMA_CONTRACT_KEPT
from backfill_assets.downstream import DOWNSTREAM_QUERIES_WORK, check_consumers, consumer_line
from backfill_assets.fingerprint import changed_partitions
from backfill_assets.partitions import Cadence, Partition, stamp
from backfill_assets.plan import ROWS, Plan, window_params
from backfill_assets.reconcile import Reconciliation, reconcile
from backfill_assets.sources import empty_required, newest_partition
from backfill_assets.warehouse import quote, table_exists

WINDOW_IS_COMPLETE = "window_is_complete"
EVERY_PARTITION_PASSED_CHECKS = "every_partition_passed_checks"
BUILT_WITH_CURRENT_CODE = "built_with_current_code"
BUILT_FROM_CURRENT_SOURCES = "built_from_current_sources"
RECONCILES_WITH_BASELINE = "reconciles_with_baseline"
TREND_HAS_NO_UNEXPLAINED_JUMPS = "trend_has_no_unexplained_jumps"
ENRICHMENT_COVERAGE_MET = "enrichment_coverage_met"
IS_FRESH = "is_fresh"
SOURCES_ARE_VALID = "sources_are_valid"
SHADOW_RECONCILES_WITH_BASELINE = "shadow_reconciles_with_baseline"
LISTED = 20  # how many failing days, groups or keys a result names


@dataclass
class WindowCheck:
    """The verdict of one window check on one version."""

    name: str
    version: str
    passed: bool
    summary: str
    blocking: bool = True
    figures: dict[str, Any] = field(default_factory=dict)
    reconciliation: Reconciliation | None = None


def window_check_names(plan: Plan) -> list[str]:
    """Every window check of a plan, in the order they are evaluated."""
    names = [
        WINDOW_IS_COMPLETE,
        EVERY_PARTITION_PASSED_CHECKS,
        BUILT_WITH_CURRENT_CODE,
        BUILT_FROM_CURRENT_SOURCES,
        SOURCES_ARE_VALID,
        *(rule.name for rule in plan.spec.checks.referential_integrity),
        RECONCILES_WITH_BASELINE,
        TREND_HAS_NO_UNEXPLAINED_JUMPS,
    ]
    if plan.spec.checks.enrichment:
        names.append(ENRICHMENT_COVERAGE_MET)
    names.append(SCHEMA_CONTRACT_KEPT)
    if plan.consumer_queries:
        names.append(DOWNSTREAM_QUERIES_WORK)
    names.append(IS_FRESH)
    if plan.spec.shadow_partitions:
        names.append(SHADOW_RECONCILES_WITH_BASELINE)
    return names


def _window(plan: Plan) -> tuple[Partition, Partition]:
    return plan.window_start, plan.window_end


def partition_ranges(cadence: Cadence, parts: list[Partition]) -> list[str]:
    """Consecutive partitions folded into ranges: ['2024-01-01..2024-01-03', '2024-02-10']."""
    return [
        f"{cadence.label(a)}..{cadence.label(b)}" if a != b else cadence.label(a)
        for a, b in cadence.spans(parts)
    ]


def partitions_text(cadence: Cadence, parts: list[Partition]) -> str:
    """Partitions as ranges, the first few named: '2024-01-01..2024-01-03, 2024-02-10 (+4 more
    ranges)'."""
    ranges = partition_ranges(cadence, parts)
    more = f" (+{len(ranges) - LISTED} more ranges)" if len(ranges) > LISTED else ""
    return ", ".join(ranges[:LISTED]) + more


def completeness(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    cadence, word = plan.cadence, plan.cadence.word
    minimum = plan.spec.checks.completeness.min_rows_per_partition
    built = evidence.row_counts(conn, plan, version, *_window(plan))
    missing = [p for p in plan.window_partitions if p not in built]
    thin = [p for p in plan.window_partitions if p in built and built[p] < minimum]
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} {word}(s) never built: {partitions_text(cadence, missing)}"
        )
    if thin:
        problems.append(
            f"{len(thin)} {word}(s) with fewer than {minimum} row(s): "
            f"{partitions_text(cadence, thin)}"
        )
    return WindowCheck(
        WINDOW_IS_COMPLETE,
        version,
        passed=not (missing or thin),
        summary="; ".join(problems) or f"all {plan.window_size} {word}s built with rows",
        figures={
            "partitions_in_window": plan.window_size,
            "partitions_missing": len(missing),
            "partitions_below_min_rows": len(thin),
            "missing_ranges": partition_ranges(cadence, missing)[:LISTED],
            "thin_ranges": partition_ranges(cadence, thin)[:LISTED],
        },
    )


def every_partition_passed(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str
) -> WindowCheck:
    cadence = plan.cadence
    failing = evidence.failing(conn, plan, version, *_window(plan))
    by_check: dict[str, list[Partition]] = {}
    for part, checks in failing:
        for name, result in checks.items():
            if not result["passed"]:
                by_check.setdefault(name, []).append(part)
    return WindowCheck(
        EVERY_PARTITION_PASSED_CHECKS,
        version,
        passed=not failing,
        summary="; ".join(
            f"{name} failed on {partitions_text(cadence, parts)}"
            for name, parts in by_check.items()
        )
        or f"every built {cadence.word} passed its checks",
        figures={
            "partitions_failing": len(failing),
            **{k: partition_ranges(cadence, v) for k, v in by_check.items()},
        },
    )


def code_current(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    current = plan.version(version).code_version
    stale = evidence.stale_code(conn, plan, version, *_window(plan))
    old = sorted({code for _, code in stale})
    return WindowCheck(
        BUILT_WITH_CURRENT_CODE,
        version,
        passed=not stale,
        summary=(
            f"{len(stale)} {plan.cadence.word}(s) built with code_version {old}, current is "
            f"{current!r}: {partitions_text(plan.cadence, [p for p, _ in stale])}"
            if stale
            else f"every built {plan.cadence.word} has code_version {current!r}"
        ),
        figures={"partitions_stale_code": len(stale), "current_code_version": current},
    )


def sources_current(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    changed = changed_partitions(conn, plan, *_window(plan), [version])
    parts = [c.partition for c in changed]
    word = plan.cadence.word
    return WindowCheck(
        BUILT_FROM_CURRENT_SOURCES,
        version,
        passed=not changed,
        summary=(
            f"sources changed since {len(parts)} {word}(s) were built: "
            f"{partitions_text(plan.cadence, parts)}"
            if changed
            else f"every built {word} matches its sources"
        ),
        figures={
            "partitions_changed": len(parts),
            "changed_ranges": partition_ranges(plan.cadence, parts)[:LISTED],
        },
    )


def sources_valid(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    problems, figures = [], {}
    for source in plan.sources:
        for column, (count, keys) in empty_required(conn, source).items():
            problems.append(
                f"{source.table}.{column} empty in {count:,} row(s) (e.g. {', '.join(keys)})"
            )
            figures[f"{source.table}.{column}"] = count
    return WindowCheck(
        SOURCES_ARE_VALID,
        version,
        passed=not problems,
        summary="; ".join(problems) + ". Fix: correct or remove those source rows"
        if problems
        else "no required source value is empty",
        figures={"empty_required_values": figures},
    )


def referential_integrity(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str
) -> list[WindowCheck]:
    results = []
    conn.execute(f"CREATE OR REPLACE TEMP VIEW model AS SELECT * FROM {plan.model_table(version)}")
    for rule in plan.spec.checks.referential_integrity:
        sql = plan.read_sql(rule.sql)
        count, days, keys = conn.execute(
            f"""
            SELECT count(*),
                   list(DISTINCT CAST(day AS VARCHAR) ORDER BY CAST(day AS VARCHAR))[1:{LISTED}],
                   list(CAST(key AS VARCHAR) ORDER BY day, key)[1:{LISTED}]
            FROM ({sql})
            """,
            window_params(sql, plan.cadence, *_window(plan)),
        ).fetchone()
        results.append(
            WindowCheck(
                rule.name,
                version,
                passed=count == 0,
                blocking=rule.severity == "error",
                summary=(
                    f"{count} offending row(s) ({rule.description}); first on "
                    f"{', '.join(str(d) for d in days[:5])}: keys {', '.join(keys[:5])}"
                    if count
                    else f"no offending rows ({rule.description})"
                ),
                figures={
                    "offending_rows": count,
                    "first_days": [str(d) for d in days or []],
                    "first_keys": list(keys or []),
                    "severity": rule.severity,
                },
            )
        )
    conn.execute("DROP VIEW IF EXISTS model")
    return results


def reconciliation(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    return reconciliation_check(reconcile(conn, plan, candidate=version), version)


def reconciliation_check(
    recon: Reconciliation, version: str, name: str = RECONCILES_WITH_BASELINE, span: str = ""
) -> WindowCheck:
    """A reconciliation as a window check named ``name``; ``span`` prefixes its summary."""
    failing = recon.failing
    groups = [
        ", ".join(f"{b}={'NULL' if pd.isna(row[b]) else row[b]}" for b in recon.by)
        + f" {row['measure']}: {row['residual']:+,.2f}"
        for _, row in failing.head(LISTED).iterrows()
    ]
    explained = recon.table[[f"rule_{r}" for r in recon.rules]].abs().sum() if recon.rules else {}
    return WindowCheck(
        name,
        version,
        passed=recon.passed,
        summary=span
        + (
            f"{len(failing)} group(s) with an unexplained residual beyond ±{recon.tolerance}: "
            + "; ".join(groups[:5])
            if not recon.passed
            else f"every difference from {recon.baseline} is explained "
            f"(total absolute delta {recon.total_delta:,.2f}, residuals within "
            f"±{recon.tolerance})"
        ),
        figures={
            "groups": len(recon.table),
            "groups_unexplained": len(failing),
            "total_abs_delta": round(recon.total_delta, 2),
            "max_abs_residual": round(float(recon.table["residual"].abs().max() or 0), 6)
            if len(recon.table)
            else 0.0,
            "explained_by_rule": {k: round(float(v), 2) for k, v in dict(explained).items()},
            "worst_groups": groups,
        },
        reconciliation=recon,
    )


def trend(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    spec, cadence = plan.spec.checks.trend, plan.cadence
    season = spec.seasonality or 1
    # Neighbours on each side: half the window, counted in partitions of the same phase.
    half = max(2, spec.window_partitions // (2 * season))
    value = "count(*)" if spec.measure == ROWS else f"sum({quote(spec.measure)})"
    pc = plan.partition_column
    rows = conn.execute(
        f"""
        WITH series AS (
            SELECT {pc} AS p, CAST({value} AS DOUBLE) AS x,
                   (list_position(CAST($partitions AS TIMESTAMP[]), CAST({pc} AS TIMESTAMP)) - 1)
                       % {season} AS phase
            FROM {plan.model_table(version)}
            WHERE {pc} >= $start AND {pc} < $end
            GROUP BY ALL
        ),
        centred AS (
            SELECT p, x, phase, median(x) OVER w AS med
            FROM series
            WINDOW w AS (PARTITION BY phase ORDER BY p
                         ROWS BETWEEN {half} PRECEDING AND {half} FOLLOWING)
        ),
        spread AS (
            SELECT p, x, med, median(abs(x - med)) OVER w AS mad
            FROM centred
            WINDOW w AS (PARTITION BY phase ORDER BY p
                         ROWS BETWEEN {half} PRECEDING AND {half} FOLLOWING)
        )
        SELECT p, x, med, greatest(1.4826 * mad, 0.01 * abs(med), 1e-9) AS scale
        FROM spread
        WHERE abs(x - med) > $k * greatest(1.4826 * mad, 0.01 * abs(med), 1e-9)
        ORDER BY p
        """,
        {
            "start": plan.window_start,
            "end": plan.window_end,
            "partitions": [stamp(p) for p in plan.window_partitions],
            "k": spec.max_deviations,
        },
    ).fetchall()
    listed = [
        f"{cadence.label(cadence.value(p))}: {x:,.2f} vs median {m:,.2f} ({(x - m) / s:+.1f} MAD)"
        for p, x, m, s in rows
    ]
    compared = (
        f"the median of the same phase of its {season}-{cadence.word} cycle"
        if season > 1
        else f"the rolling {spec.window_partitions}-{cadence.word} median"
    )
    return WindowCheck(
        TREND_HAS_NO_UNEXPLAINED_JUMPS,
        version,
        passed=not rows,
        summary=(
            f"{len(rows)} {cadence.word}(s) jump beyond {spec.max_deviations} MADs of {compared} "
            f"of {spec.measure}: " + "; ".join(listed[:5])
            if rows
            else f"{spec.measure} per {cadence.word} stays within {spec.max_deviations} MADs of "
            f"{compared}"
        ),
        figures={"partitions_jumping": len(rows), "partitions": listed[:LISTED]},
    )


def enrichment(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    spec = plan.spec.checks.enrichment
    assert spec is not None
    column = quote(spec.column)
    pc = plan.partition_column
    keys = ", ".join(quote(k) for k in plan.spec.unique_key)
    window = {"start": plan.window_start, "end": plan.window_end}
    changed = conn.execute(
        f"""
        SELECT count(*)
        FROM {plan.model_table(version)} AS c
        JOIN {plan.model_table(plan.spec.baseline)} AS b USING ({keys})
        WHERE c.{pc} >= $start AND c.{pc} < $end AND c.{column} IS DISTINCT FROM b.{column}
        """,
        window,
    ).fetchone()[0]
    differing, total, covered = conn.execute(
        f"""
        WITH c AS (
            SELECT {pc} AS p, count(*) AS n, count({column}) AS covered
            FROM {plan.model_table(version)}
            WHERE {pc} >= $start AND {pc} < $end GROUP BY ALL
        ),
        b AS (
            SELECT {pc} AS p, count(*) AS n
            FROM {plan.model_table(plan.spec.baseline)}
            WHERE {pc} >= $start AND {pc} < $end GROUP BY ALL
        )
        SELECT
            list(coalesce(c.p, b.p) ORDER BY coalesce(c.p, b.p))
                FILTER (WHERE c.n IS DISTINCT FROM b.n),
            coalesce(sum(c.n), 0),
            coalesce(sum(c.covered), 0)
        FROM c FULL JOIN b USING (p)
        """,
        window,
    ).fetchone()
    differing = [plan.cadence.value(p) for p in differing or []]
    coverage = covered / total if total else 0.0
    ok = not differing and coverage >= spec.min_coverage
    word = plan.cadence.word
    return WindowCheck(
        ENRICHMENT_COVERAGE_MET,
        version,
        passed=ok,
        summary=(
            f"{spec.column} filled on {coverage:.2%} of rows (minimum {spec.min_coverage:.2%}), "
            f"changed on {changed:,} rows; "
            + (
                f"row counts differ from {plan.spec.baseline} on "
                f"{partitions_text(plan.cadence, differing)}"
                if differing
                else f"row counts per {word} equal {plan.spec.baseline}"
            )
        ),
        figures={
            "column": spec.column,
            "rows": int(total),
            "rows_changed": int(changed),
            "share_changed": round(changed / total, 6) if total else 0.0,
            "coverage": round(coverage, 6),
            "min_coverage": spec.min_coverage,
            "partitions_with_different_row_counts": len(differing),
            "differing_ranges": partition_ranges(plan.cadence, differing)[:LISTED],
        },
    )


def schema_contract(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, published: str | None = None
) -> WindowCheck:
    published = published or plan.spec.baseline
    if version == published:
        return WindowCheck(
            SCHEMA_CONTRACT_KEPT, version, True, f"{version} is the published version"
        )
    theirs = contract.table_columns(conn, "models", plan.table_name(published))
    if not theirs:
        return WindowCheck(
            SCHEMA_CONTRACT_KEPT,
            version,
            passed=False,
            summary=f"the published version's table models.{plan.table_name(published)} does "
            "not exist, so there are no columns to compare with",
        )
    mine = contract.table_columns(conn, "models", plan.table_name(version))
    found = contract.compare(plan, version, mine, published, theirs)
    return WindowCheck(
        SCHEMA_CONTRACT_KEPT,
        version,
        passed=found.kept,
        summary=contract.summary(found),
        figures=found.figures(),
    )


def downstream_queries(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, published: str | None = None
) -> WindowCheck:
    results = check_consumers(conn, plan, version, published or plan.spec.baseline)
    figures = {r.consumer.name: r.figures() for r in results}
    failing = [r for r in results if not r.passed]
    shown = failing or results
    return WindowCheck(
        DOWNSTREAM_QUERIES_WORK,
        version,
        passed=not failing,
        summary=(
            f"{len(failing)} of {len(results)} consumer query(ies) would break: "
            if failing
            else f"{len(results)} consumer query(ies) work on {version} as if published: "
        )
        + "; ".join(consumer_line(r.consumer.name, figures[r.consumer.name]) for r in shown),
        figures={
            "consumers": figures,
            "consumers_failing": [r.consumer.name for r in failing],
        },
    )


def freshness(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    cadence = plan.cadence
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    current = (
        cadence.floor(now)
        if cadence.is_hourly
        else cadence.floor(now.replace(tzinfo=dt.UTC).astimezone(cadence.zone).date())
    )
    newest_source = max(
        (
            newest_partition(conn, s, cadence.sql_floor, cadence.utc(current))
            for s in plan.sources
            if not s.is_dimension
        ),
        default=None,
        key=lambda p: stamp(p) if p is not None else dt.datetime.min,
    )
    newest_source = None if newest_source is None else cadence.value(newest_source)
    newest_built = evidence.newest_applied(conn, plan, version)
    fresh = newest_source is None or (newest_built is not None and newest_built >= newest_source)
    behind = (
        len(cadence.starts(cadence.next(newest_built), cadence.next(newest_source)))
        if newest_source and newest_built and not fresh
        else None
    )
    label = cadence.label
    return WindowCheck(
        IS_FRESH,
        version,
        passed=fresh,
        blocking=False,
        summary=(
            f"newest {cadence.word} built {label(newest_built) if newest_built else None}, "
            f"newest complete source {cadence.word} "
            f"{label(newest_source) if newest_source else None}"
            + (
                ""
                if fresh
                else f": {behind if behind is not None else 'all'} {cadence.word}(s) behind; "
                "backfill the new ones"
            )
        ),
        figures={
            "newest_built_partition": str(newest_built),
            "newest_source_partition": str(newest_source),
            "partitions_behind": behind if behind is not None else 0,
        },
    )


def _span_label(plan: Plan, version: str) -> str:
    """``legacy 2024-01-01..2024-01-14``: a version and the span of the window it serves."""
    return f"{version} {partition_ranges(plan.cadence, plan.window_partitions)[0]}"


def _merged(name: str, version: str, parts: list[tuple[str, WindowCheck]]) -> WindowCheck:
    """One verdict from the same check on each served span: it passes when every span does;
    its summary and figures name each span (the failing ones first)."""
    ordered = sorted(parts, key=lambda part: part[1].passed)
    return WindowCheck(
        name,
        version,
        passed=all(check.passed for _, check in parts),
        blocking=all(check.blocking for _, check in parts),
        summary="; ".join(f"{label}: {check.summary}" for label, check in ordered),
        figures={"served_spans": {label: check.figures for label, check in parts}},
    )


def served(
    check, conn: duckdb.DuckDBPyConnection, plan: Plan, version: str
) -> WindowCheck | list[WindowCheck]:
    """``check(conn, plan, version)`` over what the view serves while ``version`` is published:
    the window of ``version``, or for a forward-only plan the baseline's span before the
    cutoff and ``version``'s from it, merged into one verdict per check name."""
    spans = plan.served_spans(version)
    if len(spans) == 1:
        (only, span), *_ = spans
        return check(conn, span, only)
    results = [(_span_label(span, v), check(conn, span, v)) for v, span in spans]
    if isinstance(results[0][1], list):
        names = [c.name for c in results[0][1]]
        return [
            _merged(
                name,
                version,
                [(label, next(c for c in found if c.name == name)) for label, found in results],
            )
            for name in names
        ]
    return _merged(results[0][1].name, version, results)


def run_window_checks(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str | None = None,
    published: str | None = None,
) -> list[WindowCheck]:
    """All window checks of the plan for ``version`` (default: the candidate); the schema
    contract and the consumer queries compare it with ``published`` (default: the baseline)."""
    version = version or plan.spec.candidate
    if not table_exists(conn, "models", plan.table_name(version)):
        return [
            WindowCheck(
                name,
                version,
                passed=False,
                summary=f"models.{plan.table_name(version)} has not been built yet",
            )
            for name in window_check_names(plan)
        ]
    results = [
        served(completeness, conn, plan, version),
        served(every_partition_passed, conn, plan, version),
        served(code_current, conn, plan, version),
        served(sources_current, conn, plan, version),
        sources_valid(conn, plan, version),
        *served(referential_integrity, conn, plan, version),
    ]
    # What ``version`` itself serves: the window, or a forward-only candidate's span from the
    # cutoff; the comparisons with the baseline cover that only.
    own = plan.served_spans(version)[-1][1]
    baseline_built = table_exists(conn, "models", plan.table_name(plan.spec.baseline))
    if version == plan.spec.baseline:
        results.append(WindowCheck(RECONCILES_WITH_BASELINE, version, True, "this is the baseline"))
    elif baseline_built:
        results.append(reconciliation(conn, own, version))
    else:
        results.append(
            WindowCheck(
                RECONCILES_WITH_BASELINE,
                version,
                passed=False,
                summary=f"the baseline {plan.spec.baseline} has not been built yet",
            )
        )
    results.append(trend(conn, own, version))
    if plan.spec.checks.enrichment:
        if version == plan.spec.baseline:
            results.append(WindowCheck(ENRICHMENT_COVERAGE_MET, version, True, "the baseline"))
        elif baseline_built:
            results.append(enrichment(conn, own, version))
        else:
            results.append(
                WindowCheck(ENRICHMENT_COVERAGE_MET, version, False, "baseline not built yet")
            )
    results.append(schema_contract(conn, plan, version, published))
    if plan.consumer_queries:
        results.append(downstream_queries(conn, plan, version, published))
    results.append(freshness(conn, plan, version))
    return results


def recheck(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    published: str | None,
    names: list[str],
) -> dict[str, WindowCheck]:
    """The checks ``names`` evaluated again, as ``run_window_checks`` evaluates them: those a
    recorded verdict cannot vouch for (``verdicts.rechecked``: the clock, tables outside the
    plan). None while the version's table is missing: its recorded verdict says so."""
    if not table_exists(conn, "models", plan.table_name(version)):
        return {}
    found = {}
    if DOWNSTREAM_QUERIES_WORK in names and plan.consumer_queries:
        found[DOWNSTREAM_QUERIES_WORK] = downstream_queries(conn, plan, version, published)
    if IS_FRESH in names:
        found[IS_FRESH] = freshness(conn, plan, version)
    return found
