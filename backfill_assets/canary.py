"""The canary: build and check a stratified sample of the window before the full backfill.

The sample holds the partitions where calendar and range bugs hide, spread over the whole
window: the first and the last, the ones holding the 15th and the last day of every month and
29 February, and for hourly plans the hours around each daylight-saving change of the plan's
time zone. Each is built on its own for the baseline and the candidate (a real build: rows,
evidence, checks), after one full first chunk; the build times they record feed the preflight
ETA. A failing canary is the signal not to launch the full backfill.
"""

import datetime as dt
import time
from dataclasses import dataclass

import duckdb

from backfill_assets.build import build_window
from backfill_assets.partitions import Cadence, Partition
from backfill_assets.plan import Plan
from backfill_assets.publish import is_published


@dataclass(frozen=True)
class CanaryResult:
    version: str
    partition: Partition
    passed: bool
    failed_checks: tuple[str, ...]
    rows: int
    seconds: float


def _sample_days(first: dt.date, last: dt.date) -> set[dt.date]:
    """The 15th and the last day of every month, and 29 February, between two days."""
    days = set()
    month = first.replace(day=1)
    while month <= last:
        following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        days |= {month.replace(day=15), following - dt.timedelta(days=1)}
        month = following
    return days


def sample_partitions(plan: Plan) -> list[Partition]:
    """The canary's partitions of the window, oldest first (see the module docstring)."""
    cadence, partitions = plan.cadence, plan.window_partitions
    chosen = {partitions[0], partitions[-1]}
    days = _sample_days(plan.spec.window.start, plan.spec.window.end)
    if cadence.is_hourly:
        daily = Cadence("daily", cadence.timezone)
        chosen |= {daily.utc(day) for day in days}
        zone = cadence.zone
        offsets = [p.replace(tzinfo=dt.UTC).astimezone(zone).utcoffset() for p in partitions]
        for i in range(1, len(partitions)):
            if offsets[i] != offsets[i - 1]:  # a daylight-saving change: the hours around it
                chosen |= {partitions[i - 1], partitions[i]}
    else:
        chosen |= {cadence.floor(day) for day in days}
    window = set(partitions)
    return sorted(p for p in chosen if p in window)


def run_canary(conn: duckdb.DuckDBPyConnection, plan: Plan, run_id: str) -> list[CanaryResult]:
    """Build every sample partition for the baseline and the candidate; one result each.

    Each version also builds the window's first full chunk once, so the recorded build times
    separate the fixed cost of a build from its cost per partition (``preflight.build_cost``).
    """
    cadence, results = plan.cadence, []
    first_chunk = plan.window_partitions[: plan.chunk]
    start, chunk_end = first_chunk[0], cadence.next(first_chunk[-1])
    for version in (plan.spec.baseline, plan.spec.candidate):
        published = is_published(conn, plan, version)
        started = time.perf_counter()
        chunk = build_window(conn, plan, version, start, chunk_end, run_id, published)
        each = (time.perf_counter() - started) / len(chunk.partitions)
        built = {p.partition for p in chunk.partitions}
        results += [
            CanaryResult(
                version, p.partition, p.passed, tuple(p.failed_checks()), p.row_count, each
            )
            for p in chunk.partitions
        ]
        for partition in (p for p in sample_partitions(plan) if p not in built):
            started = time.perf_counter()
            one = build_window(
                conn, plan, version, partition, cadence.next(partition), run_id, published
            )
            (checks,) = one.partitions
            results.append(
                CanaryResult(
                    version,
                    partition,
                    checks.passed,
                    tuple(checks.failed_checks()),
                    checks.row_count,
                    time.perf_counter() - started,
                )
            )
    return results


def canary_markdown(plan: Plan, results: list[CanaryResult]) -> str:
    failed = [r for r in results if not r.passed]
    word = plan.cadence.word
    lines = [
        f"**Canary of {plan.name}: "
        + (
            "PASSED** - the full backfill may go ahead."
            if not failed
            else f"FAILED** on {len(failed)} {word}(s) - do not launch the full backfill."
        )
        + f" {len(results)} builds of {len(sample_partitions(plan))} sample {word}s.",
        "",
        f"| version | {word} | result | rows | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        verdict = "passed" if r.passed else "FAILED: " + ", ".join(r.failed_checks)
        label = plan.cadence.label(r.partition)
        lines.append(f"| {r.version} | {label} | {verdict} | {r.rows:,} | {r.seconds:.3f} |")
    return "\n".join(lines)
