"""Late rows for the example's demos and tests: past days receive new, re-sent and refunded
orders, each row belonging to its own day only, so exactly those days change."""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets.warehouse import transaction


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
