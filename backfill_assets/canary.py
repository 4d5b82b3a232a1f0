"""The canary: build and check a stratified sample of the window before the full backfill.

The sample holds the first and last day of the window, one mid-month day and the last day of
every month, and 29 February when the window has one: the days where calendar and range bugs
hide, spread over the whole window. Each day is built on its own for the baseline and the
candidate (a real build: rows, evidence, checks), after one full first chunk; the build times
they record feed the preflight ETA. A failing canary is the signal not to launch the full
backfill.
"""

import datetime as dt
import time
from dataclasses import dataclass

import duckdb

from backfill_assets.build import build_window
from backfill_assets.plan import Plan
from backfill_assets.publish import is_published


@dataclass(frozen=True)
class CanaryDay:
    version: str
    day: dt.date
    passed: bool
    failed_checks: tuple[str, ...]
    rows: int
    seconds: float


def sample_days(plan: Plan) -> list[dt.date]:
    """First and last day, the 15th and the last day of each month, 29 February; in the window."""
    start, end = plan.spec.window.start, plan.spec.window.end
    days = {start, end}
    month = dt.date(start.year, start.month, 1)
    while month <= end:
        following = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
        days.add(month.replace(day=15))
        days.add(following - dt.timedelta(days=1))
        if month.month == 2 and (following - dt.timedelta(days=1)).day == 29:
            days.add(month.replace(day=29))
        month = following
    return sorted(d for d in days if start <= d <= end)


def run_canary(conn: duckdb.DuckDBPyConnection, plan: Plan, run_id: str) -> list[CanaryDay]:
    """Build every sample day for the baseline and the candidate; one result per day and version.

    Each version also builds the window's first full chunk once, so the recorded build times
    separate the fixed cost of a build from its cost per day (see ``preflight.build_cost``).
    """
    results = []
    start = plan.spec.window.start
    chunk_end = min(start + dt.timedelta(days=plan.spec.chunk_days), plan.spec.window.end)
    for version in (plan.spec.baseline, plan.spec.candidate):
        published = is_published(conn, plan, version)
        started = time.perf_counter()
        chunk = build_window(conn, plan, version, start, chunk_end, run_id, published)
        per_day = (time.perf_counter() - started) / len(chunk.days)
        chunk_days = {d.day for d in chunk.days}
        results += [
            CanaryDay(version, d.day, d.passed, tuple(d.failed_checks()), d.row_count, per_day)
            for d in chunk.days
        ]
        for day in (d for d in sample_days(plan) if d not in chunk_days):
            started = time.perf_counter()
            end = day + dt.timedelta(days=1)
            built = build_window(conn, plan, version, day, end, run_id, published)
            (checks,) = built.days
            results.append(
                CanaryDay(
                    version,
                    day,
                    checks.passed,
                    tuple(checks.failed_checks()),
                    checks.row_count,
                    time.perf_counter() - started,
                )
            )
    return results


def canary_markdown(plan: Plan, results: list[CanaryDay]) -> str:
    failed = [r for r in results if not r.passed]
    lines = [
        f"**Canary of {plan.name}: "
        + (
            "PASSED** - the full backfill may go ahead."
            if not failed
            else f"FAILED** on {len(failed)} day(s) - do not launch the full backfill."
        )
        + f" {len(results)} builds of {len(sample_days(plan))} sample days.",
        "",
        "| version | day | result | rows | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "passed" if r.passed else "FAILED: " + ", ".join(r.failed_checks)
        lines.append(f"| {r.version} | {r.day} | {verdict} | {r.rows:,} | {r.seconds:.3f} |")
    return "\n".join(lines)
