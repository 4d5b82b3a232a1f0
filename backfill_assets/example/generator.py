"""The example's source data: a seeded generator of realistic orders, refunds and customers.

The generator runs entirely in DuckDB SQL. Its randomness is ``hash(seed, row id, purpose)``, so a
seed gives the same rows on any number of threads. What it writes, per day and order:

- ~12% of orders are re-sent with a later ``ingested_at`` (status shipped or cancelled, sometimes
  a new amount or region; ~5% of re-sends move ``order_ts``, often to the next day);
- ~3% of orders are cancelled outright and ~2% are test orders;
- ~5% of orders get a refund 1–45 days later, ~10% of refunds arrive days late;
- ~0.05% of orders get a refund pointing at an order that does not exist;
- ~2% of orders have no region; ~3% of orders arrive 1–10 days after they were placed;
- ~30% of customers change segment once inside the window.

The hand-written pilot-market rows in ``fixtures/`` are added whenever the generated days cover
them; the plans' known records refer to them.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

from backfill_assets.warehouse import ensure_schema, quote, transaction

# The example's source tables. Timestamps are naive UTC; a day is CAST(ts AS DATE). The plans
# under backfill_assets/defs declare the same columns.
TABLES: dict[str, dict[str, str]] = {
    "raw.orders": {
        "order_id": "BIGINT",
        "customer_id": "BIGINT",
        "region": "VARCHAR",
        "order_ts": "TIMESTAMP",
        "amount": "DECIMAL(12,2)",
        "status": "VARCHAR",
        "ingested_at": "TIMESTAMP",
    },
    "raw.refunds": {
        "refund_id": "BIGINT",
        "order_id": "BIGINT",
        "refund_ts": "TIMESTAMP",
        "amount": "DECIMAL(12,2)",
        "ingested_at": "TIMESTAMP",
    },
    "raw.customers": {
        "customer_id": "BIGINT",
        "segment": "VARCHAR",
        "region": "VARCHAR",
        "valid_from": "TIMESTAMP",
        "valid_to": "TIMESTAMP",
    },
}


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the example's schemas and source tables that do not exist yet."""
    ensure_schema(conn)
    conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table, columns in TABLES.items():
        schema, name = table.split(".")
        typed = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
        conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(schema)}.{quote(name)} ({typed})")


FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
PILOT_FIRST_DAY = dt.date(2024, 2, 28)
PILOT_LAST_DAY = dt.date(2024, 3, 5)

_GENERATE = """
SET VARIABLE backfill_seed = $seed;
CREATE OR REPLACE TEMP MACRO u(id, tag) AS (
    (hash(getvariable('backfill_seed'), id, tag) % 1000000007) / 1000000007.0
);
CREATE OR REPLACE TEMP MACRO pick(list, x) AS (list[1 + CAST(floor(x * len(list)) AS INTEGER)]);

CREATE OR REPLACE TEMP TABLE gen_customers AS
SELECT
    i AS customer_id,
    pick(['north', 'south', 'east', 'west'], u(i, 'region')) AS region,
    CAST(floor(u(i, 'segment') * 3) AS INTEGER) AS first_segment,
    u(i, 'changes') < 0.3 AS changes,
    CAST($start AS TIMESTAMP)
        + to_seconds(CAST(floor(u(i, 'change_at') * $days * 86400) AS BIGINT)) AS change_at
FROM range(1, $customers + 1) AS t(i);

CREATE OR REPLACE TEMP TABLE gen_orders AS
WITH base AS (
    SELECT
        (k + 1) * 1000000 + i AS order_id,
        CAST($start AS DATE) + CAST(k AS INTEGER) AS day
    FROM range(0, $days) AS d(k), range(1, $per_day + 1) AS n(i)
)
SELECT
    b.order_id,
    1 + CAST(floor(u(b.order_id, 'customer') * $customers) AS BIGINT) AS customer_id,
    CAST(b.day AS TIMESTAMP) + to_seconds(CAST(floor(u(b.order_id, 'ts') * 86400) AS BIGINT))
        AS order_ts,
    CAST(round(5 + 495 * pow(u(b.order_id, 'amount'), 2), 2) AS DECIMAL(12, 2)) AS amount,
    u(b.order_id, 'status') AS status_draw,
    u(b.order_id, 'region') AS region_draw,
    u(b.order_id, 'late') < 0.03 AS late,
    u(b.order_id, 'resend') < 0.12 AS resent
FROM base AS b;

CREATE OR REPLACE TEMP TABLE gen_versions AS
WITH first_version AS (
    SELECT
        o.order_id,
        o.customer_id,
        CASE
            WHEN o.region_draw < 0.02 THEN NULL
            WHEN o.region_draw < 0.10
                THEN pick(['north', 'south', 'east', 'west'], u(o.order_id, 'r2'))
            ELSE c.region
        END AS region,
        o.order_ts,
        o.amount,
        CASE
            WHEN o.status_draw < 0.02 THEN 'test'
            WHEN o.status_draw < 0.05 THEN 'cancelled'
            WHEN o.status_draw < 0.75 THEN 'placed'
            ELSE 'shipped'
        END AS status,
        o.order_ts
            + to_minutes(CAST(1 + floor(u(o.order_id, 'lag') * 30) AS BIGINT))
            + CASE WHEN o.late
                THEN to_days(CAST(1 + floor(u(o.order_id, 'late_days') * 10) AS INTEGER))
                ELSE INTERVAL 0 SECOND END AS ingested_at,
        o.resent
    FROM gen_orders AS o
    JOIN gen_customers AS c USING (customer_id)
),
moved AS (
    -- A re-send may move the order 6-35 hours later, but never past the generated days.
    SELECT
        *,
        order_ts + to_hours(CAST(6 + floor(u(order_id, 'v2_move_hours') * 30) AS BIGINT))
            AS moved_ts
    FROM first_version
),
resends AS (
    SELECT
        *,
        u(order_id, 'v2_move') < 0.05
            AND moved_ts < CAST($start AS TIMESTAMP) + to_days(CAST($days AS INTEGER)) AS moves
    FROM moved
)
SELECT order_id, customer_id, region, order_ts, amount, status, ingested_at
FROM first_version
UNION ALL
SELECT
    order_id,
    customer_id,
    CASE WHEN u(order_id, 'v2_region') < 0.05
        THEN pick(['north', 'south', 'east', 'west'], u(order_id, 'v2_region_pick'))
        ELSE region END,
    CASE WHEN moves THEN moved_ts ELSE order_ts END,
    CASE WHEN u(order_id, 'v2_amount') < 0.2
        THEN CAST(round(amount * (0.8 + 0.4 * u(order_id, 'v2_factor')), 2) AS DECIMAL(12, 2))
        ELSE amount END,
    CASE WHEN u(order_id, 'v2_status') < 0.35 THEN 'cancelled' ELSE 'shipped' END,
    -- A re-send arrives after the first version and after the (possibly moved) order time.
    greatest(
        ingested_at,
        CASE WHEN moves THEN moved_ts ELSE order_ts END
    ) + to_hours(CAST(1 + floor(u(order_id, 'v2_lag') * 120) AS BIGINT))
FROM resends
WHERE resent AND status IN ('placed', 'shipped');

CREATE OR REPLACE TEMP TABLE gen_refunds AS
WITH refunded AS (
    SELECT
        order_id,
        order_ts + to_days(CAST(1 + floor(u(order_id, 'refund_days') * 45) AS INTEGER))
            + to_seconds(CAST(floor(u(order_id, 'refund_secs') * 86400) AS BIGINT)) AS refund_ts,
        CAST(round(amount * (0.2 + 0.8 * u(order_id, 'refund_share')), 2) AS DECIMAL(12, 2))
            AS amount
    FROM gen_orders
    WHERE u(order_id, 'refund') < 0.05 AND status_draw >= 0.02
),
orphans AS (
    SELECT
        -order_id AS order_id,
        order_ts + INTERVAL 2 DAY AS refund_ts,
        CAST(round(amount / 2, 2) AS DECIMAL(12, 2)) AS amount
    FROM gen_orders
    WHERE u(order_id, 'orphan') < 0.0005
),
all_refunds AS (
    SELECT * FROM refunded UNION ALL SELECT * FROM orphans
)
SELECT
    CASE WHEN order_id < 0 THEN -order_id * 10 + 2 ELSE order_id * 10 + 1 END AS refund_id,
    order_id,
    refund_ts,
    amount,
    refund_ts
        + to_minutes(CAST(5 + floor(u(order_id, 'refund_lag') * 60) AS BIGINT))
        + CASE WHEN u(order_id, 'refund_late') < 0.1
            THEN to_days(CAST(1 + floor(u(order_id, 'refund_late_days') * 7) AS INTEGER))
            ELSE INTERVAL 0 SECOND END AS ingested_at
FROM all_refunds
WHERE refund_ts < CAST($start AS TIMESTAMP) + to_days(CAST($days AS INTEGER));

CREATE OR REPLACE TEMP TABLE gen_segments AS
SELECT
    customer_id,
    pick(['consumer', 'smb', 'enterprise'], (first_segment + 0.5) / 3) AS segment,
    region,
    CAST($start AS TIMESTAMP) - INTERVAL 400 DAY AS valid_from,
    CASE WHEN changes THEN change_at END AS valid_to
FROM gen_customers
UNION ALL
SELECT
    customer_id,
    pick(
        ['consumer', 'smb', 'enterprise'],
        ((first_segment + 1 + CAST(floor(u(customer_id, 'segment2') * 2) AS INTEGER)) % 3 + 0.5) / 3
    ),
    region,
    change_at,
    NULL
FROM gen_customers
WHERE changes;
"""


@dataclass(frozen=True)
class SeedSummary:
    """What a seed wrote."""

    start: dt.date
    end: dt.date
    orders: int
    refunds: int
    customers: int


def _fixture_select(table: str) -> str:
    columns = ", ".join(
        f"CAST({quote(col)} AS {typ}) AS {quote(col)}" for col, typ in TABLES[table].items()
    )
    return f"SELECT {columns} FROM read_csv($path, header = true, all_varchar = true)"


def _insert_pilot(conn: duckdb.DuckDBPyConnection) -> None:
    for table in TABLES:
        path = FIXTURES_DIR / f"pilot_{table.split('.')[1]}.csv"
        conn.execute(f"INSERT INTO {table} {_fixture_select(table)}", {"path": str(path)})


def load_pilot_fixture(conn: duckdb.DuckDBPyConnection) -> None:
    """Replace the raw tables with only the hand-written pilot-market rows."""
    ensure_tables(conn)
    with transaction(conn):
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
        _insert_pilot(conn)


def generate(
    conn: duckdb.DuckDBPyConnection,
    start: dt.date,
    end: dt.date,
    orders_per_day: int,
    seed: int = 42,
    customers: int | None = None,
) -> SeedSummary:
    """Replace the raw tables with a generated data set for the days ``start``..``end``."""
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}; give an end on or after it")
    if not 1 <= orders_per_day < 1_000_000:
        raise ValueError(f"--orders-per-day {orders_per_day} must be between 1 and 999999")
    days = (end - start).days + 1
    customers = customers or max(50, orders_per_day * 10)
    ensure_tables(conn)
    params = {
        "seed": seed,
        "start": start,
        "days": days,
        "per_day": orders_per_day,
        "customers": customers,
    }
    for statement in _GENERATE.split(";\n"):
        if statement.strip():
            used = {k: v for k, v in params.items() if f"${k}" in statement}
            conn.execute(statement, used)
    with transaction(conn):
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
        # Appended in arrival order, as a loader would: late rows land at the end.
        for table, stage, order in (
            ("raw.orders", "gen_versions", "ingested_at, order_id"),
            ("raw.refunds", "gen_refunds", "ingested_at, refund_id"),
            ("raw.customers", "gen_segments", "customer_id, valid_from"),
        ):
            conn.execute(f"INSERT INTO {table} SELECT * FROM {stage} ORDER BY {order}")
        if start <= PILOT_FIRST_DAY and end >= PILOT_LAST_DAY:
            _insert_pilot(conn)
    for temp in ("gen_customers", "gen_orders", "gen_versions", "gen_refunds", "gen_segments"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    return SeedSummary(
        start, end, counts["raw.orders"], counts["raw.refunds"], counts["raw.customers"]
    )
