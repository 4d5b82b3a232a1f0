"""The example's seeded generator, on real DuckDB files."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from backfill_assets.example.generator import TABLES as RAW_TABLES
from backfill_assets.example.generator import generate
from backfill_assets_tests.helpers import raw_checksums as table_checksums

PILOT_ORDER_IDS = 7  # 9000000001 .. 9000000007 in fixtures/pilot_orders.csv
PILOT_COUNTS = {"raw.orders": 10, "raw.refunds": 4, "raw.customers": 4}  # rows in the pilot CSVs


def raw_checksums(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every raw table's rows, in a fixed order."""
    return table_checksums(conn, RAW_TABLES)


def counts(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in RAW_TABLES}


def scalar(conn: duckdb.DuckDBPyConnection, sql: str):
    return conn.execute(sql).fetchone()[0]


# --------------------------------------------------------------------------------------------
# generate(): determinism and size
# --------------------------------------------------------------------------------------------


def _generate_into(path: Path, seed: int) -> dict[str, tuple[int, str]]:
    connection = duckdb.connect(str(path))
    try:
        generate(
            connection, dt.date(2024, 1, 1), dt.date(2024, 1, 14), orders_per_day=30, seed=seed
        )
        return raw_checksums(connection)
    finally:
        connection.close()


def test_generate_is_deterministic_for_a_seed(tmp_path):
    first = _generate_into(tmp_path / "a.duckdb", seed=11)
    second = _generate_into(tmp_path / "b.duckdb", seed=11)
    other = _generate_into(tmp_path / "c.duckdb", seed=12)
    assert all(count > 0 for count, _ in first.values())
    assert first == second
    assert other["raw.orders"] != first["raw.orders"]
    assert other["raw.customers"] != first["raw.customers"]


@pytest.mark.parametrize(
    ("start", "end", "per_day", "expected_order_ids"),
    [
        # 2024-02-27 .. 2024-03-06 = 9 days: 9 * 10 + 7 pilot orders = 97
        (dt.date(2024, 2, 27), dt.date(2024, 3, 6), 10, 9 * 10 + PILOT_ORDER_IDS),
        # exactly the pilot days 2024-02-28 .. 2024-03-05 = 7 days: 7 * 5 + 7 = 42
        (dt.date(2024, 2, 28), dt.date(2024, 3, 5), 5, 7 * 5 + PILOT_ORDER_IDS),
        # 2024-02-29 .. 2024-03-05 misses 2024-02-28: 6 days * 5 = 30, no pilot rows
        (dt.date(2024, 2, 29), dt.date(2024, 3, 5), 5, 6 * 5),
        # 2024-02-28 .. 2024-03-04 misses 2024-03-05: 6 days * 5 = 30, no pilot rows
        (dt.date(2024, 2, 28), dt.date(2024, 3, 4), 5, 6 * 5),
        # one day of 3 orders
        (dt.date(2024, 1, 1), dt.date(2024, 1, 1), 3, 3),
        # January 2025: 31 days * 20 = 620
        (dt.date(2025, 1, 1), dt.date(2025, 1, 31), 20, 31 * 20),
    ],
)
def test_generate_is_sized_by_days_and_orders_per_day(
    conn, start, end, per_day, expected_order_ids
):
    summary = generate(conn, start, end, orders_per_day=per_day, seed=3)
    assert scalar(conn, "SELECT count(DISTINCT order_id) FROM raw.orders") == expected_order_ids
    assert summary.orders == scalar(conn, "SELECT count(*) FROM raw.orders")
    assert summary.orders >= expected_order_ids  # re-sends add rows, never orders
    assert summary.refunds == scalar(conn, "SELECT count(*) FROM raw.refunds")
    assert summary.customers == scalar(conn, "SELECT count(*) FROM raw.customers")
    pilot_rows = scalar(
        conn, "SELECT count(*) FROM raw.orders WHERE order_id BETWEEN 9000000001 AND 9000000007"
    )
    covers_pilot = start <= dt.date(2024, 2, 28) and end >= dt.date(2024, 3, 5)
    assert pilot_rows == (PILOT_COUNTS["raw.orders"] if covers_pilot else 0)


def test_generate_replaces_previous_raw_data(conn):
    generate(conn, dt.date(2024, 1, 1), dt.date(2024, 1, 10), orders_per_day=20, seed=1)
    generate(conn, dt.date(2024, 6, 1), dt.date(2024, 6, 2), orders_per_day=4, seed=1)
    # 2 days * 4 orders
    assert scalar(conn, "SELECT count(DISTINCT order_id) FROM raw.orders") == 8
    # every order version of the second run is placed on or after 2024-06-01
    assert scalar(conn, "SELECT min(order_ts) FROM raw.orders") >= dt.datetime(2024, 6, 1)


def test_generate_rejects_a_reversed_window(conn):
    generate(conn, dt.date(2024, 1, 1), dt.date(2024, 1, 3), orders_per_day=5, seed=1)
    before = raw_checksums(conn)
    with pytest.raises(ValueError, match="before") as error:
        generate(conn, dt.date(2024, 3, 1), dt.date(2024, 2, 29), orders_per_day=5)
    assert "2024-02-29" in str(error.value) and "2024-03-01" in str(error.value)
    with pytest.raises(ValueError, match="orders-per-day"):
        generate(conn, dt.date(2024, 3, 1), dt.date(2024, 3, 2), orders_per_day=0)
    assert raw_checksums(conn) == before


# --------------------------------------------------------------------------------------------
# generate(): the data has every feature the backfill must cope with
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realistic(tmp_path_factory) -> Iterator[duckdb.DuckDBPyConnection]:
    """Two generated months outside the pilot days (so every feature comes from the generator)."""
    path = tmp_path_factory.mktemp("seed") / "realistic.duckdb"
    connection = duckdb.connect(str(path))
    generate(connection, dt.date(2024, 4, 1), dt.date(2024, 5, 31), orders_per_day=150, seed=5)
    yield connection
    connection.close()


def test_generated_data_has_no_pilot_rows(realistic):
    assert scalar(realistic, "SELECT count(*) FROM raw.orders WHERE order_id >= 9000000000") == 0
    # 2024-04-01 .. 2024-05-31 = 30 + 31 = 61 days * 150 orders
    assert scalar(realistic, "SELECT count(DISTINCT order_id) FROM raw.orders") == 61 * 150


def test_generated_orders_are_resent_and_some_move_day(realistic):
    resent = scalar(
        realistic,
        "SELECT count(*) FROM (SELECT order_id FROM raw.orders GROUP BY order_id "
        "HAVING count(*) > 1)",
    )
    moved = scalar(
        realistic,
        "SELECT count(*) FROM (SELECT order_id FROM raw.orders GROUP BY order_id "
        "HAVING count(DISTINCT CAST(order_ts AS DATE)) > 1)",
    )
    assert resent > 0
    assert moved > 0
    # a re-send is a later version: no two versions of an order share an ingested_at
    assert (
        scalar(
            realistic,
            "SELECT count(*) FROM (SELECT order_id, ingested_at FROM raw.orders "
            "GROUP BY ALL HAVING count(*) > 1)",
        )
        == 0
    )


def test_generated_statuses_and_null_regions(realistic):
    statuses = {
        r[0] for r in realistic.execute("SELECT DISTINCT status FROM raw.orders").fetchall()
    }
    assert statuses == {"placed", "shipped", "cancelled", "test"}
    assert scalar(realistic, "SELECT count(*) FROM raw.orders WHERE region IS NULL") > 0
    assert scalar(realistic, "SELECT count(*) FROM raw.orders WHERE region IS NOT NULL") > 0


def test_generated_late_arriving_rows(realistic):
    assert (
        scalar(
            realistic,
            "SELECT count(*) FROM raw.orders WHERE ingested_at >= order_ts + INTERVAL 1 DAY",
        )
        > 0
    )
    assert (
        scalar(
            realistic,
            "SELECT count(*) FROM raw.refunds WHERE ingested_at >= refund_ts + INTERVAL 1 DAY",
        )
        > 0
    )
    # a refund never arrives before it happened
    assert scalar(realistic, "SELECT count(*) FROM raw.refunds WHERE ingested_at < refund_ts") == 0


def test_generated_order_versions_are_never_ingested_before_they_happen(realistic):
    assert scalar(realistic, "SELECT count(*) FROM raw.orders WHERE ingested_at < order_ts") == 0


def test_generated_refunds_are_later_sometimes_next_month_some_orphaned(realistic):
    placed = """
        WITH first_ts AS (SELECT order_id, min(order_ts) AS order_ts FROM raw.orders GROUP BY 1)
        SELECT r.refund_ts, f.order_ts FROM raw.refunds AS r JOIN first_ts AS f USING (order_id)
    """
    assert scalar(realistic, f"SELECT count(*) FROM ({placed})") > 0
    # every refund of a known order comes at least a day after the order was placed
    assert (
        scalar(
            realistic,
            f"SELECT count(*) FROM ({placed}) WHERE refund_ts < order_ts + INTERVAL 1 DAY",
        )
        == 0
    )
    in_later_month = scalar(
        realistic,
        f"SELECT count(*) FROM ({placed}) "
        "WHERE date_trunc('month', refund_ts) > date_trunc('month', order_ts)",
    )
    assert in_later_month > 0
    orphans = scalar(
        realistic,
        "SELECT count(*) FROM raw.refunds AS r "
        "WHERE NOT EXISTS (SELECT 1 FROM raw.orders AS o WHERE o.order_id = r.order_id)",
    )
    assert orphans > 0
    assert scalar(realistic, "SELECT count(*) - count(DISTINCT refund_id) FROM raw.refunds") == 0


def test_generated_customers_change_segment_without_overlap(realistic):
    changed = realistic.execute(
        """
        SELECT a.customer_id, a.segment, b.segment, a.valid_from, a.valid_to, b.valid_from,
               b.valid_to
        FROM raw.customers AS a
        JOIN raw.customers AS b ON a.customer_id = b.customer_id AND a.valid_from < b.valid_from
        """
    ).fetchall()
    assert changed, "no customer changes segment"
    for _, seg_a, seg_b, from_a, to_a, from_b, to_b in changed:
        assert seg_a != seg_b
        assert from_a < to_a == from_b  # the first interval ends where the second begins
        assert to_b is None  # the second is current
    assert (
        scalar(
            realistic,
            "SELECT max(n) FROM (SELECT count(*) AS n FROM raw.customers GROUP BY customer_id)",
        )
        == 2
    )
    overlapping = scalar(
        realistic,
        """
        SELECT count(*) FROM raw.customers AS a JOIN raw.customers AS b
          ON a.customer_id = b.customer_id AND a.valid_from < b.valid_from
         AND (a.valid_to IS NULL OR a.valid_to > b.valid_from)
        """,
    )
    assert overlapping == 0
    # exactly one current row per customer, and every order's customer has a history
    assert (
        scalar(
            realistic,
            "SELECT count(*) FROM (SELECT customer_id FROM raw.customers GROUP BY customer_id "
            "HAVING count(*) FILTER (WHERE valid_to IS NULL) <> 1)",
        )
        == 0
    )
    assert (
        scalar(
            realistic,
            "SELECT count(*) FROM raw.orders AS o WHERE NOT EXISTS "
            "(SELECT 1 FROM raw.customers AS c WHERE c.customer_id = o.customer_id)",
        )
        == 0
    )
