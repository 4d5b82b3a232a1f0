"""Partitions of a plan's cadence: hourly, daily, weekly or monthly, in a time zone.

A partition is named by its start, in the terms of the model's partition column:

- daily, weekly and monthly partitions by the first *local* day of the period (a ``dt.date``;
  a DATE column), in the plan's time zone;
- hourly partitions by the start of the hour in UTC (a naive ``dt.datetime``; a TIMESTAMP
  column), so an hour is an hour whatever daylight saving does to the local clock.

Windows are half-open ``[start, end)`` of partition starts everywhere inside the project; plan
files and the command line speak in inclusive partitions and are converted at the edge. The
SQL a plan runs gets ``$start``/``$end`` in the partition column's terms, and
``$start_utc``/``$end_utc``: the same bounds as UTC instants, to filter UTC event times when the
plan's time zone is not UTC. This module knows no Dagster.
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

CADENCES = ("hourly", "daily", "weekly", "monthly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WORDS = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month"}
UTC = dt.UTC

Partition = dt.date | dt.datetime


@dataclass(frozen=True)
class Cadence:
    """How a plan's history is cut: the period, the time zone, the first day of a week."""

    name: str = "daily"
    timezone: str = "UTC"
    week_start: str = "monday"

    @property
    def word(self) -> str:
        """``day``, ``hour``, ``week`` or ``month``: for messages ("3 month(s) failing")."""
        return WORDS[self.name]

    @property
    def is_hourly(self) -> bool:
        return self.name == "hourly"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def column_type(self) -> str:
        """The type of the model's partition column."""
        return "TIMESTAMP" if self.is_hourly else "DATE"

    # --- naming and stepping -----------------------------------------------------------------

    def value(self, moment: dt.date | dt.datetime) -> Partition:
        """A stored or given partition start as this cadence names it (date or UTC hour)."""
        if self.is_hourly:
            if not isinstance(moment, dt.datetime):
                moment = dt.datetime.combine(moment, dt.time())
            return moment.replace(tzinfo=None)
        return moment.date() if isinstance(moment, dt.datetime) else moment

    def floor(self, moment: dt.date | dt.datetime) -> Partition:
        """The start of the partition holding ``moment`` (a date, or a naive local time for
        date cadences and a naive UTC time for hourly)."""
        if self.is_hourly:
            value = self.value(moment)
            return value.replace(minute=0, second=0, microsecond=0)
        day = self.value(moment)
        if self.name == "weekly":
            return day - dt.timedelta(days=(day.weekday() - WEEKDAYS.index(self.week_start)) % 7)
        if self.name == "monthly":
            return day.replace(day=1)
        return day

    def next(self, start: Partition) -> Partition:
        """The start of the partition after the one starting at ``start``."""
        if self.is_hourly:
            return start + dt.timedelta(hours=1)
        if self.name == "weekly":
            return start + dt.timedelta(days=7)
        if self.name == "monthly":
            return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return start + dt.timedelta(days=1)

    def starts(self, start: Partition, end: Partition) -> list[Partition]:
        """Every partition start in ``[start, end)``, oldest first."""
        found, current = [], self.floor(start)
        if current < start:
            current = self.next(current)
        while current < end:
            found.append(current)
            current = self.next(current)
        return found

    def spans(self, starts: list[Partition]) -> list[tuple[Partition, Partition]]:
        """Consecutive partitions folded into inclusive ``(first, last)`` spans, oldest first."""
        spans: list[list[Partition]] = []
        for start in sorted(starts):
            if spans and start == self.next(spans[-1][1]):
                spans[-1][1] = start
            else:
                spans.append([start, start])
        return [(first, last) for first, last in spans]

    def label(self, start: Partition) -> str:
        """How a person reads a partition: ``2024-03-01``, or ``2024-03-10 06:00 UTC``."""
        if self.is_hourly:
            return f"{start:%Y-%m-%d %H:%M} UTC"
        return start.isoformat()

    # --- instants ----------------------------------------------------------------------------

    def utc(self, start: Partition) -> dt.datetime:
        """The UTC instant (naive) a partition starts at."""
        if self.is_hourly:
            return self.value(start)
        local = dt.datetime.combine(start, dt.time(), tzinfo=self.zone)
        return local.astimezone(UTC).replace(tzinfo=None)

    def from_aware(self, moment: dt.datetime) -> Partition:
        """The partition start named by a time-zone-aware instant (Dagster's time windows)."""
        if self.is_hourly:
            return moment.astimezone(UTC).replace(tzinfo=None)
        return moment.astimezone(self.zone).date()

    def params(self, start: Partition, end: Partition) -> dict[str, Partition | dt.datetime]:
        """The window's SQL parameters: ``$start``/``$end`` in the partition column's terms and
        ``$start_utc``/``$end_utc`` as UTC instants."""
        return {"start": start, "end": end, "start_utc": self.utc(start), "end_utc": self.utc(end)}

    def sql_floor(self, utc_expression: str) -> str:
        """SQL mapping a naive UTC timestamp to the start of its partition (the partition
        column's type). Used to place source rows by their ``event_time``."""
        if self.is_hourly:
            return f"date_trunc('hour', {utc_expression})"
        local = utc_expression
        if self.timezone != "UTC":
            local = f"timezone('{self.timezone}', timezone('UTC', {utc_expression}))"
        return self.sql_start_of(f"CAST({local} AS DATE)")

    def sql_start_of(self, value: str) -> str:
        """SQL giving the start of the partition a partition-column value lies in (a local
        DATE, or a UTC hour for hourly): equal to the value when it is a partition start."""
        if self.is_hourly:
            return f"date_trunc('hour', {value})"
        if self.name == "weekly":
            offset = WEEKDAYS.index(self.week_start)
            # isodow is 1 (Monday) .. 7 (Sunday); step back to the week's first day.
            back = f"CAST((isodow({value}) - 1 - {offset} + 7) % 7 AS INTEGER)"
            return f"CAST({value} - {back} AS DATE)"
        if self.name == "monthly":
            return f"CAST(date_trunc('month', {value}) AS DATE)"
        return value

    def sql_step(self, expression: str, count: str) -> str:
        """SQL adding ``count`` partitions to a partition start."""
        unit = {"hourly": "hours", "daily": "days", "weekly": "weeks", "monthly": "months"}
        step = f"to_{unit[self.name]}(CAST({count} AS INTEGER))"
        return f"CAST({expression} + {step} AS {self.column_type})"


def chunks(
    cadence: Cadence, starts: list[Partition], size: int
) -> Iterator[tuple[Partition, Partition]]:
    """Consecutive half-open windows of at most ``size`` partitions covering ``starts``."""
    if size < 1:
        raise ValueError(f"chunk must be at least 1 partition, got {size}")
    for i in range(0, len(starts), size):
        group = starts[i : i + size]
        yield group[0], cadence.next(group[-1])


def stamp(start: Partition) -> dt.datetime:
    """A partition start as the TIMESTAMP the evidence stores it as."""
    return start if isinstance(start, dt.datetime) else dt.datetime.combine(start, dt.time())
