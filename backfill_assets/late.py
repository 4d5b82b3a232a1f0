"""Late-arriving data: finding the partitions to repair.

``find_repairs`` compares every built partition's stored fingerprint with the sources now (one
set-based statement per plan, see ``fingerprint.changed_partitions``) and returns one repair per
plan and partition, naming every built version of it: versions of a partition are repaired
together, so the reconciliation between them stays consistent. The run key carries the new
fingerprint, so a change is repaired once, and a further change of the same partition is
repaired again.

That exact scan reads every source row of the window (seconds at tens of millions of rows), so
a sensor first takes ``source_probes``: per declared source table its row count and newest
``loaded_at`` (a hash sum where the source declares no ``loaded_at``), milliseconds at any size.
Only a plan whose sources' probes moved is scanned, and when they moved by appended rows only
(late data, the common case) only the partitions those rows reach are compared
(``partitions_with_new_rows``). An edit in place that keeps both the count and the newest
``loaded_at`` is found by the periodic full scan.
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import (
    changed_partitions,
    partitions_loaded_since_query,
    query_params,
)
from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.sources import Source, probe
from backfill_assets.warehouse import quote

MAX_RANGES = 30  # ranges compared one by one before a whole-window comparison is cheaper


@dataclass(frozen=True)
class Repair:
    """One partition of one plan to rebuild, for the versions whose sources changed."""

    plan: str
    partition: Partition
    versions: tuple[str, ...]
    fingerprint: str

    @property
    def run_key(self) -> str:
        return f"{self.plan}:{'+'.join(self.versions)}:{self.partition}:{self.fingerprint}"


@dataclass(frozen=True)
class RepairScan:
    """What one look at the warehouse found."""

    repairs: list[Repair]  # every changed partition, oldest first
    outside_window: dict[str, int]  # plan -> built partitions outside its window, ignored
    word: str = "partition"  # what a partition is called: day, hour, week, month

    def describe(self, chosen: list[Repair], already_requested: int = 0) -> str:
        """What a tick saw: changed partitions, requested now, requested before, waiting."""
        named = ", ".join(f"{r.plan} {r.partition}" for r in chosen[:10])
        more = f" (+{len(chosen) - 10} more)" if len(chosen) > 10 else ""
        waiting = len(self.repairs) - len(chosen) - already_requested
        ignored = sum(self.outside_window.values())
        parts = [f"{len(self.repairs)} {self.word}(s) changed"]
        if chosen:
            parts.append(f"requesting {len(chosen)}: {named}{more}")
        if already_requested:
            parts.append(f"{already_requested} already requested")
        if waiting:
            parts.append(f"{waiting} wait for the next tick")
        if ignored:
            parts.append(f"{ignored} built {self.word}(s) outside the plan windows ignored")
        return "; ".join(parts)


def source_probes(conn: duckdb.DuckDBPyConnection, plans: list[Plan]) -> dict[str, str]:
    """A cheap digest of every source table the plans read (``sources.probe``)."""
    declared = {source.table: source for plan in plans for source in plan.sources}
    return {table: probe(conn, declared[table]) for table in sorted(declared)}


def _probe_parts(probe: str) -> tuple[int, str]:
    count, marker = probe.split(":", 1)
    return int(count), marker


def _newer_rows(conn: duckdb.DuckDBPyConnection, source: Source, since: dt.datetime) -> int:
    return conn.execute(
        f"SELECT count(*) FROM {source.relation} WHERE {quote(source.loaded_at or '')} > ?",
        [since],
    ).fetchone()[0]


def partitions_with_new_rows(
    conn: duckdb.DuckDBPyConnection, plan: Plan, before: dict[str, str], now: dict[str, str]
) -> list[Partition] | None:
    """The partitions of the plan's window that rows appended since the last look can change,
    or None when only a full comparison can tell.

    The common case of late data: the moved source tables only grew, by rows loaded after the
    newest row the last look saw (their count grew by exactly the number of rows newer than
    that). Then only the partitions whose source slice holds such a row can have changed, and
    one filtered read finds them. Anything else (a source without ``loaded_at``, a dimension
    every partition depends on, a deleted or back-dated row, an edit in place) needs the full
    comparison.
    """
    watermarks, moved = [], []
    for source in plan.sources:
        table = source.table
        if now[table] == before.get(table):
            continue
        if not source.loaded_at or source.is_dimension or table not in before:
            return None
        (old_count, old_newest), (new_count, _) = (
            _probe_parts(before[table]),
            _probe_parts(now[table]),
        )
        if old_newest == "None" or new_count <= old_count:
            return None
        newest = dt.datetime.fromisoformat(old_newest)
        if _newer_rows(conn, source, newest) != new_count - old_count:
            return None
        watermarks.append(newest)
        moved.append(source)
    if not watermarks:
        return []
    query = partitions_loaded_since_query(plan, moved)
    if query is None:
        return None
    # Rows newer than the oldest watermark: a superset of the new rows, so no changed
    # partition is missed.
    params = query_params(plan, query, plan.window_start, plan.window_end)
    rows = conn.execute(query, {**params, "since": min(watermarks)}).fetchall()
    return [plan.cadence.value(row[0]) for row in rows]


def narrowed(
    conn: duckdb.DuckDBPyConnection, plans: list[Plan], before: dict[str, str], now: dict[str, str]
) -> dict[str, list[Partition]]:
    """For every plan whose source changes appended rows explain, the partitions they reach
    (``partitions_with_new_rows``); the other plans need a comparison of all built
    partitions."""
    found = {}
    for plan in plans:
        partitions = partitions_with_new_rows(conn, plan, before, now)
        if partitions is not None:
            found[plan.name] = partitions
    return found


def find_repairs(
    conn: duckdb.DuckDBPyConnection,
    plans: list[Plan],
    only: dict[str, list[Partition]] | None = None,
) -> RepairScan:
    """Every built partition, of every plan, whose sources changed since it was built.

    ``only`` narrows a plan's comparison to those partitions (from
    ``partitions_with_new_rows``); a plan not in it is compared over all its built partitions.
    """
    only = only or {}
    repairs: list[Repair] = []
    outside: dict[str, int] = {}
    for plan in plans:
        cadence, start, end = plan.cadence, plan.window_start, plan.window_end
        # Only built partitions can have changed: compare from the first to the last of them
        # (a backfill that has just started has none, and costs nothing to scan).
        first_built, last_built = evidence.built_span(conn, plan, start, end)
        spans = cadence.spans(only.get(plan.name, []))
        if first_built is None:
            ranges = []
        elif plan.name in only and len(spans) <= MAX_RANGES:
            # Each range is one statement (~0.1 s); past a few dozen, one over the window wins.
            ranges = [(first, cadence.next(last)) for first, last in spans]
        else:
            ranges = [(first_built, cadence.next(last_built))]
        by_partition: dict[Partition, list] = {}
        for range_start, range_end in ranges:
            for change in changed_partitions(conn, plan, range_start, range_end):
                by_partition.setdefault(change.partition, []).append(change)
        for partition, changes in by_partition.items():
            repairs.append(
                Repair(
                    plan.name,
                    partition,
                    tuple(sorted(c.version for c in changes)),
                    changes[0].current_fingerprint,
                )
            )
        outside[plan.name] = evidence.outside(conn, plan, start, end)
    repairs.sort(key=lambda r: (str(r.partition), r.plan))
    words = {plan.cadence.word for plan in plans}
    return RepairScan(repairs, outside, words.pop() if len(words) == 1 else "partition")
