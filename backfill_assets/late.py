"""Late-arriving data: finding the days to repair, and making late rows for demos and tests.

``find_repairs`` compares every built day's stored fingerprint with the sources now (one
set-based statement per plan, see ``fingerprint.changed_days``) and returns one repair per plan
and day, naming every built version of that day: versions of a day are repaired together, so
the reconciliation between them stays consistent. The run key carries the new fingerprint, so a
change is repaired once, and a further change of the same day is repaired again.

That exact scan reads every source row of the window (seconds at tens of millions of rows), so
a sensor first takes ``source_probes``: per source table its row count and newest
``ingested_at`` (a hash sum where there is no ``ingested_at``), milliseconds at any size. Only a
plan whose sources' probes moved is scanned, and when they moved by appended rows only (late
data, the common case) only the days those rows reach are compared (``days_with_new_rows``).
Sources are append-only by contract (a change is a new row with a later ``ingested_at``); an
edit in place that keeps both the count and the newest ``ingested_at`` is found by the periodic
full scan.
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets.fingerprint import changed_days
from backfill_assets.partitions import day_spans
from backfill_assets.plan import Plan
from backfill_assets.warehouse import RAW_TABLES, qualified, transaction

MAX_RANGES = 30  # day ranges compared one by one before a whole-window comparison is cheaper


@dataclass(frozen=True)
class Repair:
    """One day of one plan to rebuild, for the versions whose sources changed."""

    plan: str
    day: dt.date
    versions: tuple[str, ...]
    fingerprint: str

    @property
    def run_key(self) -> str:
        return f"{self.plan}:{'+'.join(self.versions)}:{self.day}:{self.fingerprint}"


@dataclass(frozen=True)
class RepairScan:
    """What one look at the warehouse found."""

    repairs: list[Repair]  # every changed day, oldest first
    outside_window: dict[str, int]  # plan -> built days outside its window, ignored

    def describe(self, chosen: list[Repair], already_requested: int = 0) -> str:
        """What a tick saw: changed days, requested now, requested before, left waiting."""
        days = ", ".join(f"{r.plan} {r.day}" for r in chosen[:10])
        more = f" (+{len(chosen) - 10} more)" if len(chosen) > 10 else ""
        waiting = len(self.repairs) - len(chosen) - already_requested
        ignored = sum(self.outside_window.values())
        parts = [f"{len(self.repairs)} day(s) changed"]
        if chosen:
            parts.append(f"requesting {len(chosen)}: {days}{more}")
        if already_requested:
            parts.append(f"{already_requested} already requested")
        if waiting:
            parts.append(f"{waiting} wait for the next tick")
        if ignored:
            parts.append(f"{ignored} built day(s) outside the plan windows ignored")
        return "; ".join(parts)


def source_probes(conn: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, str]:
    """A cheap digest of each source table, to tell whether it changed since the last look."""
    probes = {}
    for table in sorted(set(tables)):
        schema, name = table.split(".")
        relation = qualified(schema, name)
        if "ingested_at" in RAW_TABLES[table]:
            sql = f"SELECT count(*), max(ingested_at) FROM {relation}"
        else:
            sql = f"SELECT count(*), sum(CAST(hash(t) AS HUGEINT)) FROM {relation} AS t"
        count, marker = conn.execute(sql).fetchone()
        probes[table] = f"{count}:{marker}"
    return probes


def _probe_parts(probe: str) -> tuple[int, str]:
    count, marker = probe.split(":", 1)
    return int(count), marker


def days_with_new_rows(
    conn: duckdb.DuckDBPyConnection, plan: Plan, before: dict[str, str], now: dict[str, str]
) -> list[dt.date] | None:
    """The days of the plan's window that rows appended since the last look can change, or
    None when only a full comparison can tell.

    The common case of late data: the moved source tables only grew, by rows ingested after
    the newest row the last look saw (their count grew by exactly the number of rows newer
    than that). Then only the days whose source slice holds such a row can have changed, and
    one filtered read of the slice finds them. Anything else (a table without
    ``ingested_at``, a deleted or back-dated row, an edit in place) needs the full comparison.
    """
    watermarks = []
    for table in plan.spec.sources:
        if now[table] == before.get(table):
            continue
        if "ingested_at" not in RAW_TABLES[table] or table not in before:
            return None
        (old_count, old_newest), (new_count, _) = (
            _probe_parts(before[table]),
            _probe_parts(now[table]),
        )
        if old_newest == "None" or new_count <= old_count:
            return None
        newest = dt.datetime.fromisoformat(old_newest)
        schema, name = table.split(".")
        newer = conn.execute(
            f"SELECT count(*) FROM {qualified(schema, name)} WHERE ingested_at > ?", [newest]
        ).fetchone()[0]
        if newer != new_count - old_count:
            return None
        watermarks.append(newest)
    if not watermarks:
        return []
    # Rows of any source newer than the oldest watermark: a superset of the new rows, so no
    # changed day is missed whatever the slice calls its sources.
    window = plan.spec.window
    rows = conn.execute(
        f"SELECT DISTINCT day FROM ({plan.source_slice_sql}) WHERE ingested_at > $since "
        "ORDER BY day",
        {"start": window.start, "end": window.end + dt.timedelta(days=1), "since": min(watermarks)},
    ).fetchall()
    return [row[0] for row in rows]


def narrowed_days(
    conn: duckdb.DuckDBPyConnection, plans: list[Plan], before: dict[str, str], now: dict[str, str]
) -> dict[str, list[dt.date]]:
    """For every plan whose source changes appended rows explain, the days they reach
    (``days_with_new_rows``); the other plans need a comparison of all their built days."""
    narrowed = {}
    for plan in plans:
        days = days_with_new_rows(conn, plan, before, now)
        if days is not None:
            narrowed[plan.name] = days
    return narrowed


def find_repairs(
    conn: duckdb.DuckDBPyConnection,
    plans: list[Plan],
    only_days: dict[str, list[dt.date]] | None = None,
) -> RepairScan:
    """Every built day, of every plan, whose sources changed since it was built.

    ``only_days`` narrows a plan's comparison to those days (from ``days_with_new_rows``);
    a plan not in it is compared over all its built days.
    """
    only_days = only_days or {}
    repairs: list[Repair] = []
    outside: dict[str, int] = {}
    for plan in plans:
        window = plan.spec.window
        end = window.end + dt.timedelta(days=1)
        # Only built days can have changed: compare from the first to the last of them (a
        # backfill that has just started has none, and costs nothing to scan).
        first_built, last_built = conn.execute(
            "SELECT min(day), max(day) FROM backfill.partition_evidence "
            "WHERE model = ? AND day >= ? AND day < ?",
            [plan.name, window.start, end],
        ).fetchone()
        spans = day_spans(only_days.get(plan.name, []))
        if first_built is None:
            ranges = []
        elif plan.name in only_days and len(spans) <= MAX_RANGES:
            # Each range is one statement (~0.1 s); past a few dozen, one over the window wins.
            ranges = [(first, last + dt.timedelta(days=1)) for first, last in spans]
        else:
            ranges = [(first_built, last_built + dt.timedelta(days=1))]
        by_day: dict[dt.date, list] = {}
        for start, stop in ranges:
            for change in changed_days(conn, plan, start, stop):
                by_day.setdefault(change.day, []).append(change)
        for day, changes in by_day.items():
            repairs.append(
                Repair(
                    plan.name,
                    day,
                    tuple(sorted(c.version for c in changes)),
                    changes[0].current_fingerprint,
                )
            )
        outside[plan.name] = conn.execute(
            "SELECT count(DISTINCT day) FROM backfill.partition_evidence "
            "WHERE model = ? AND (day < ? OR day >= ?)",
            [plan.name, window.start, end],
        ).fetchone()[0]
    repairs.sort(key=lambda r: (r.day, r.plan))
    return RepairScan(repairs, outside)


@dataclass(frozen=True)
class Arrival:
    """What ``append_late_rows`` wrote."""

    days: list[dt.date]
    orders: int
    resent: int
    refunds: int


def pick_days(
    conn: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date, count: int, seed: int
) -> list[dt.date]:
    """``count`` distinct past days with orders in ``first``..``last``, chosen by ``seed``."""
    rows = conn.execute(
        """
        SELECT DISTINCT CAST(order_ts AS DATE) AS day
        FROM raw.orders
        WHERE order_ts >= $first AND order_ts < $last + INTERVAL 1 DAY
        ORDER BY hash($seed, day), day
        LIMIT $count
        """,
        {"first": first, "last": last, "count": count, "seed": seed},
    ).fetchall()
    return sorted(row[0] for row in rows)


def append_late_rows(
    conn: duckdb.DuckDBPyConnection,
    days: list[dt.date],
    rows_per_day: int,
    seed: int = 1,
    arrived_at: dt.datetime | None = None,
) -> Arrival:
    """Append late rows for past ``days``: new orders, one re-send and one refund a day.

    Every row is ingested at ``arrived_at`` (default: now, UTC) and belongs to its day only:
    the new orders are placed that day, the re-send keeps its order's time, and the refund is
    for an order of that day and happens later the same day. So exactly those days change.
    """
    arrived_at = arrived_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    params = {"days": days, "n": rows_per_day, "seed": seed, "at": arrived_at}
    before = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("raw.orders", "raw.refunds")
    }
    with transaction(conn):
        # New orders, numbered above every existing order.
        conn.execute(
            """
            INSERT INTO raw.orders
            WITH top AS (SELECT coalesce(max(order_id), 0) AS m FROM raw.orders),
            days AS (SELECT unnest(CAST($days AS DATE[])) AS day)
            SELECT
                top.m + row_number() OVER (ORDER BY d.day, i) AS order_id,
                1 + hash($seed, d.day, i, 'c') % 50 AS customer_id,
                ['north', 'south', 'east', 'west'][1 + CAST(hash($seed, d.day, i, 'r') % 4 AS INT)],
                CAST(d.day AS TIMESTAMP)
                    + to_seconds(CAST(hash($seed, d.day, i, 't') % 82800 AS BIGINT)),
                CAST(5 + (hash($seed, d.day, i, 'a') % 40000) / 100.0 AS DECIMAL(12, 2)),
                'placed',
                $at
            FROM days AS d, range($n) AS r(i), top
            """,
            params,
        )
        # One re-send per day: an order of that day shipped, same order time. Only an order
        # whose every version is on that day and which has no refund, so no other day changes.
        conn.execute(
            """
            INSERT INTO raw.orders
            WITH one_day_orders AS (
                SELECT order_id
                FROM raw.orders
                GROUP BY order_id
                HAVING count(DISTINCT CAST(order_ts AS DATE)) = 1
                   AND max(CAST(order_ts AS DATE)) IN (SELECT unnest(CAST($days AS DATE[])))
                   AND bool_and(status = 'placed')
            )
            SELECT o.order_id, o.customer_id, o.region, o.order_ts, o.amount, 'shipped', $at
            FROM raw.orders AS o
            JOIN one_day_orders USING (order_id)
            WHERE NOT EXISTS (SELECT 1 FROM raw.refunds AS r WHERE r.order_id = o.order_id)
            QUALIFY row_number() OVER (
                PARTITION BY CAST(o.order_ts AS DATE) ORDER BY o.order_id
            ) = 1
            """,
            {"days": days, "at": arrived_at},
        )
        # One refund per day, for an order of that day whose every version is on that day,
        # an hour after the order and still the same day.
        conn.execute(
            """
            INSERT INTO raw.refunds
            WITH one_day_orders AS (
                SELECT order_id, max(order_ts) AS order_ts
                FROM raw.orders
                GROUP BY order_id
                HAVING count(DISTINCT CAST(order_ts AS DATE)) = 1
                   AND max(CAST(order_ts AS DATE)) IN (SELECT unnest(CAST($days AS DATE[])))
                   AND max(order_ts) < CAST(max(CAST(order_ts AS DATE)) AS TIMESTAMP)
                       + INTERVAL 22 HOUR
                   AND bool_and(status NOT IN ('cancelled', 'test'))
            ),
            top AS (SELECT coalesce(max(refund_id), 0) AS m FROM raw.refunds)
            SELECT top.m + row_number() OVER (ORDER BY o.order_id), o.order_id,
                   o.order_ts + INTERVAL 1 HOUR, 1.00, $at
            FROM one_day_orders AS o, top
            -- an order with no refund yet: an earlier refund on another day would make that
            -- day change too
            WHERE o.order_id NOT IN (SELECT order_id FROM raw.refunds)
            QUALIFY row_number() OVER (
                PARTITION BY CAST(o.order_ts AS DATE) ORDER BY o.order_id DESC
            ) = 1
            """,
            {"days": days, "at": arrived_at},
        )
    after = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("raw.orders", "raw.refunds")
    }
    added_orders = after["raw.orders"] - before["raw.orders"]
    return Arrival(
        days=sorted(days),
        orders=rows_per_day * len(days),
        resent=added_orders - rows_per_day * len(days),
        refunds=after["raw.refunds"] - before["raw.refunds"],
    )
