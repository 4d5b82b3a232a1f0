"""Window checks: what must hold across a version's whole window before it may be published.

Each check reads the stored tables with set-based SQL over the window and returns a
``WindowCheck``: a verdict, a one-line summary and figures (the failing days as date ranges,
groups, keys). None loads the window into pandas; only small results (the reconciliation
table, lists of failing days) come back to Python.

- ``window_is_complete``: every day has evidence and at least ``min_rows_per_day`` rows;
- ``every_day_passed_checks``: every day's per-partition checks passed (from evidence);
- ``built_with_current_code``: every day's ``code_version`` is the plan's current one;
- ``built_from_current_sources``: every day's source fingerprint still matches the sources;
- ``sources_are_valid``: no source row leaves a column its declaration ``required`` empty (a row
  without its event time would silently drop out of every partition);
- one check per ``referential_integrity`` rule of the plan (``warn`` rules never block);
- ``reconciles_with_baseline`` (candidate): no unexplained residual beyond tolerance;
- ``trend_has_no_unexplained_jumps``: no day deviates from its rolling median by more than
  ``max_deviations`` median absolute deviations;
- ``enrichment_coverage_met`` (candidate of a column enrichment): rows per day identical to the
  baseline and the share of rows with the new value at least ``min_coverage``;
- ``is_fresh`` (a warning, never blocking): the newest day built is not older than the newest
  complete source day, so days that arrived after the window are noticed once it is published.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from backfill_assets import evidence
from backfill_assets.fingerprint import changed_days
from backfill_assets.partitions import day_spans
from backfill_assets.plan import ROWS, Plan
from backfill_assets.reconcile import Reconciliation, reconcile
from backfill_assets.sources import empty_required, newest_complete_day
from backfill_assets.warehouse import quote, table_exists

WINDOW_IS_COMPLETE = "window_is_complete"
EVERY_DAY_PASSED_CHECKS = "every_day_passed_checks"
BUILT_WITH_CURRENT_CODE = "built_with_current_code"
BUILT_FROM_CURRENT_SOURCES = "built_from_current_sources"
RECONCILES_WITH_BASELINE = "reconciles_with_baseline"
TREND_HAS_NO_UNEXPLAINED_JUMPS = "trend_has_no_unexplained_jumps"
ENRICHMENT_COVERAGE_MET = "enrichment_coverage_met"
IS_FRESH = "is_fresh"
SOURCES_ARE_VALID = "sources_are_valid"
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
        EVERY_DAY_PASSED_CHECKS,
        BUILT_WITH_CURRENT_CODE,
        BUILT_FROM_CURRENT_SOURCES,
        SOURCES_ARE_VALID,
        *(rule.name for rule in plan.spec.checks.referential_integrity),
        RECONCILES_WITH_BASELINE,
        TREND_HAS_NO_UNEXPLAINED_JUMPS,
    ]
    if plan.spec.checks.enrichment:
        names.append(ENRICHMENT_COVERAGE_MET)
    names.append(IS_FRESH)
    return names


def _window(plan: Plan) -> dict[str, dt.date]:
    window = plan.spec.window
    return {"start": window.start, "end": window.end + dt.timedelta(days=1)}


def date_ranges(days: list[dt.date]) -> list[str]:
    """Consecutive days folded into ranges: ['2024-01-01..2024-01-03', '2024-02-10']."""
    return [f"{a}..{b}" if a != b else f"{a}" for a, b in day_spans(days)]


def days_text(days: list[dt.date]) -> str:
    """Days as ranges, the first few named: '2024-01-01..2024-01-03, 2024-02-10 (+4 more)'."""
    ranges = date_ranges(days)
    more = f" (+{len(ranges) - LISTED} more ranges)" if len(ranges) > LISTED else ""
    return ", ".join(ranges[:LISTED]) + more


def completeness(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    minimum = plan.spec.checks.completeness.min_rows_per_day
    window = _window(plan)
    rows = evidence.missing_or_thin(conn, plan, version, window["start"], window["end"], minimum)
    missing = [day for day, count in rows if count is None]
    thin = [day for day, count in rows if count is not None]
    problems = []
    if missing:
        problems.append(f"{len(missing)} day(s) never built: {days_text(missing)}")
    if thin:
        problems.append(f"{len(thin)} day(s) with fewer than {minimum} row(s): {days_text(thin)}")
    return WindowCheck(
        WINDOW_IS_COMPLETE,
        version,
        passed=not rows,
        summary="; ".join(problems) or f"all {plan.window_days} days built with rows",
        figures={
            "days_in_window": plan.window_days,
            "days_missing": len(missing),
            "days_below_min_rows": len(thin),
            "missing_ranges": date_ranges(missing)[:LISTED],
            "thin_ranges": date_ranges(thin)[:LISTED],
        },
    )


def every_day_passed(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    window = _window(plan)
    failing = evidence.failing_days(conn, plan, version, window["start"], window["end"])
    by_check: dict[str, list[dt.date]] = {}
    for day, checks in failing:
        for name, result in checks.items():
            if not result["passed"]:
                by_check.setdefault(name, []).append(day)
    return WindowCheck(
        EVERY_DAY_PASSED_CHECKS,
        version,
        passed=not failing,
        summary="; ".join(f"{name} failed on {days_text(days)}" for name, days in by_check.items())
        or "every built day passed its partition checks",
        figures={"days_failing": len(failing), **{k: date_ranges(v) for k, v in by_check.items()}},
    )


def code_current(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    current = plan.version(version).code_version
    window = _window(plan)
    stale = evidence.stale_code_days(conn, plan, version, window["start"], window["end"])
    old = sorted({code for _, code in stale})
    return WindowCheck(
        BUILT_WITH_CURRENT_CODE,
        version,
        passed=not stale,
        summary=(
            f"{len(stale)} day(s) built with code_version {old}, current is {current!r}: "
            f"{days_text([d for d, _ in stale])}"
            if stale
            else f"every built day has code_version {current!r}"
        ),
        figures={"days_stale_code": len(stale), "current_code_version": current},
    )


def sources_current(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    window = _window(plan)
    changed = changed_days(conn, plan, window["start"], window["end"], [version])
    days = [c.day for c in changed]
    return WindowCheck(
        BUILT_FROM_CURRENT_SOURCES,
        version,
        passed=not changed,
        summary=(
            f"sources changed since {len(days)} day(s) were built: {days_text(days)}"
            if changed
            else "every built day matches its sources"
        ),
        figures={"days_changed": len(days), "changed_ranges": date_ranges(days)[:LISTED]},
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
        count, days, keys = conn.execute(
            f"""
            SELECT count(*), list(DISTINCT day ORDER BY day)[1:{LISTED}],
                   list(key ORDER BY day, key)[1:{LISTED}]
            FROM ({plan.read_sql(rule.sql)})
            """,
            _window(plan),
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
    recon = reconcile(conn, plan, candidate=version)
    failing = recon.failing
    groups = [
        ", ".join(f"{b}={'NULL' if pd.isna(row[b]) else row[b]}" for b in recon.by)
        + f" {row['measure']}: {row['residual']:+,.2f}"
        for _, row in failing.head(LISTED).iterrows()
    ]
    explained = recon.table[[f"rule_{r}" for r in recon.rules]].abs().sum() if recon.rules else {}
    return WindowCheck(
        RECONCILES_WITH_BASELINE,
        version,
        passed=recon.passed,
        summary=(
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
    spec = plan.spec.checks.trend
    half = spec.window_days // 2
    value = "count(*)" if spec.measure == ROWS else f"sum({quote(spec.measure)})"
    rows = conn.execute(
        f"""
        WITH series AS (
            SELECT {plan.partition_column} AS day, CAST({value} AS DOUBLE) AS x
            FROM {plan.model_table(version)}
            WHERE {plan.partition_column} >= $start AND {plan.partition_column} < $end
            GROUP BY ALL
        ),
        centred AS (
            SELECT day, x, median(x) OVER w AS med
            FROM series
            WINDOW w AS (ORDER BY day ROWS BETWEEN {half} PRECEDING AND {half} FOLLOWING)
        ),
        spread AS (
            SELECT day, x, med,
                   median(abs(x - med)) OVER w AS mad
            FROM centred
            WINDOW w AS (ORDER BY day ROWS BETWEEN {half} PRECEDING AND {half} FOLLOWING)
        )
        SELECT day, x, med, greatest(1.4826 * mad, 0.01 * abs(med), 1e-9) AS scale
        FROM spread
        WHERE abs(x - med) > $k * greatest(1.4826 * mad, 0.01 * abs(med), 1e-9)
        ORDER BY day
        """,
        {**_window(plan), "k": spec.max_deviations},
    ).fetchall()
    listed = [f"{d}: {x:,.2f} vs median {m:,.2f} ({(x - m) / s:+.1f} MAD)" for d, x, m, s in rows]
    return WindowCheck(
        TREND_HAS_NO_UNEXPLAINED_JUMPS,
        version,
        passed=not rows,
        summary=(
            f"{len(rows)} day(s) jump beyond {spec.max_deviations} MADs of the "
            f"{spec.window_days}-day median of {spec.measure}: " + "; ".join(listed[:5])
            if rows
            else f"daily {spec.measure} stays within {spec.max_deviations} MADs of its "
            f"{spec.window_days}-day median"
        ),
        figures={"days_jumping": len(rows), "days": listed[:LISTED]},
    )


def enrichment(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    spec = plan.spec.checks.enrichment
    assert spec is not None
    column = quote(spec.column)
    pc = plan.partition_column
    keys = ", ".join(quote(k) for k in plan.spec.unique_key)
    changed = conn.execute(
        f"""
        SELECT count(*)
        FROM {plan.model_table(version)} AS c
        JOIN {plan.model_table(plan.spec.baseline)} AS b USING ({keys})
        WHERE c.{pc} >= $start AND c.{pc} < $end AND c.{column} IS DISTINCT FROM b.{column}
        """,
        _window(plan),
    ).fetchone()[0]
    differing, total, covered = conn.execute(
        f"""
        WITH c AS (
            SELECT {pc} AS day, count(*) AS n, count({column}) AS covered
            FROM {plan.model_table(version)}
            WHERE {pc} >= $start AND {pc} < $end GROUP BY ALL
        ),
        b AS (
            SELECT {pc} AS day, count(*) AS n
            FROM {plan.model_table(plan.spec.baseline)}
            WHERE {pc} >= $start AND {pc} < $end GROUP BY ALL
        )
        SELECT
            list(coalesce(c.day, b.day) ORDER BY coalesce(c.day, b.day))
                FILTER (WHERE c.n IS DISTINCT FROM b.n),
            coalesce(sum(c.n), 0),
            coalesce(sum(c.covered), 0)
        FROM c FULL JOIN b USING (day)
        """,
        _window(plan),
    ).fetchone()
    differing = differing or []
    coverage = covered / total if total else 0.0
    ok = not differing and coverage >= spec.min_coverage
    return WindowCheck(
        ENRICHMENT_COVERAGE_MET,
        version,
        passed=ok,
        summary=(
            f"{spec.column} filled on {coverage:.2%} of rows (minimum {spec.min_coverage:.2%}), "
            f"changed on {changed:,} rows; "
            + (
                f"row counts differ from {plan.spec.baseline} on {days_text(differing)}"
                if differing
                else f"row counts per day equal {plan.spec.baseline}"
            )
        ),
        figures={
            "column": spec.column,
            "rows": int(total),
            "rows_changed": int(changed),
            "share_changed": round(changed / total, 6) if total else 0.0,
            "coverage": round(coverage, 6),
            "min_coverage": spec.min_coverage,
            "days_with_different_row_counts": len(differing),
            "differing_ranges": date_ranges(differing)[:LISTED],
        },
    )


def freshness(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> WindowCheck:
    newest_source = max(
        (newest_complete_day(conn, s) for s in plan.sources if not s.is_dimension),
        default=None,
        key=lambda d: d or dt.date.min,
    )
    newest_built = evidence.newest_applied_day(conn, plan, version)
    fresh = newest_source is None or (newest_built is not None and newest_built >= newest_source)
    behind = (newest_source - newest_built).days if newest_source and newest_built else None
    return WindowCheck(
        IS_FRESH,
        version,
        passed=fresh,
        blocking=False,
        summary=(
            f"newest day built {newest_built}, newest source day {newest_source}"
            + (
                ""
                if fresh
                else f": {behind if behind is not None else 'all'} day(s) behind; "
                "backfill the new days"
            )
        ),
        figures={
            "newest_built_day": str(newest_built),
            "newest_source_day": str(newest_source),
            "days_behind": behind if behind is not None and not fresh else 0,
        },
    )


def run_window_checks(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str | None = None
) -> list[WindowCheck]:
    """All window checks of the plan for ``version`` (default: the candidate)."""
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
        completeness(conn, plan, version),
        every_day_passed(conn, plan, version),
        code_current(conn, plan, version),
        sources_current(conn, plan, version),
        sources_valid(conn, plan, version),
        *referential_integrity(conn, plan, version),
    ]
    baseline_built = table_exists(conn, "models", plan.table_name(plan.spec.baseline))
    if version == plan.spec.baseline:
        results.append(WindowCheck(RECONCILES_WITH_BASELINE, version, True, "this is the baseline"))
    elif baseline_built:
        results.append(reconciliation(conn, plan, version))
    else:
        results.append(
            WindowCheck(
                RECONCILES_WITH_BASELINE,
                version,
                passed=False,
                summary=f"the baseline {plan.spec.baseline} has not been built yet",
            )
        )
    results.append(trend(conn, plan, version))
    if plan.spec.checks.enrichment:
        if version == plan.spec.baseline:
            results.append(WindowCheck(ENRICHMENT_COVERAGE_MET, version, True, "the baseline"))
        elif baseline_built:
            results.append(enrichment(conn, plan, version))
        else:
            results.append(
                WindowCheck(ENRICHMENT_COVERAGE_MET, version, False, "baseline not built yet")
            )
    results.append(freshness(conn, plan, version))
    return results
