"""Day arithmetic shared by builds, checks and reports: chunks of days and folded day spans.

Windows are half-open ``[start, end)`` everywhere inside the project; plan files and the
command line speak in inclusive days and are converted at the edge.
"""

import datetime as dt
from collections.abc import Iterator


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
