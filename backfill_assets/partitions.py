"""Daily partitions and the run tags that make one run cover a range of them.

Every model partitions by UTC day from the plan's ``partitions.start`` up to the last complete
day. A run launched by a backfill policy carries the two range tags below instead of
``dagster/partition``; in-process runs pass the same tags to build a chunk of days in one run.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from backfill_assets.plan import Plan

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def daily_partitions(plan: Plan) -> dg.DailyPartitionsDefinition:
    """UTC days from the plan's first partition; a day exists once it is complete."""
    return dg.DailyPartitionsDefinition(
        start_date=plan.spec.partitions.start.isoformat(), timezone="UTC"
    )


def range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Tags for one run over the days ``first``..``last`` (both inclusive)."""
    if last < first:
        raise ValueError(
            f"range {first}..{last} is reversed; the last day must not precede the first"
        )
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def chunks(first: dt.date, last: dt.date, chunk_days: int) -> Iterator[tuple[dt.date, dt.date]]:
    """Consecutive inclusive ranges of at most ``chunk_days`` days covering ``first``..``last``."""
    if chunk_days < 1:
        raise ValueError(f"chunk_days must be at least 1, got {chunk_days}")
    day = first
    while day <= last:
        chunk_end = min(day + dt.timedelta(days=chunk_days - 1), last)
        yield day, chunk_end
        day = chunk_end + dt.timedelta(days=1)


def day_spans(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days folded into inclusive ``(first, last)`` spans, oldest first."""
    spans: list[list[dt.date]] = []
    for day in sorted(days):
        if spans and day == spans[-1][1] + dt.timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return [(first, last) for first, last in spans]
