"""Repair by slice: the partitions a predicate's rows reach, against independent queries."""

import datetime as dt

import duckdb
import pytest

from backfill_assets.affected import PredicateError, affected_partitions
from backfill_assets.plan import Plan
from backfill_assets_tests.test_cadence import fill_events, make_plan

FIRST, LAST = dt.date(2024, 1, 1), dt.date(2024, 3, 31)


def busiest_customer(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(
        "SELECT customer_id FROM raw.orders GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchone()[0]


def test_one_customers_orders_reach_exactly_their_orders_days(generated, fct_orders):
    """fct_orders' slice of a day holds every version of the orders with a version that day:
    a customer's rows reach every day any version of their orders is on."""
    plan = fct_orders.with_window(FIRST, LAST)
    customer = busiest_customer(generated)
    expected = sorted(
        d
        for (d,) in generated.execute(
            "SELECT DISTINCT CAST(o2.order_ts AS DATE) FROM raw.orders AS o1 "
            "JOIN raw.orders AS o2 USING (order_id) WHERE o1.customer_id = ? "
            "AND o2.order_ts >= ? AND o2.order_ts < ?",
            [customer, FIRST, LAST + dt.timedelta(days=1)],
        ).fetchall()
    )
    assert len(expected) >= 3
    source = plan.source("raw.orders")
    assert affected_partitions(generated, plan, source, f"customer_id = {customer}") == expected


def test_a_monthly_plan_names_the_months(generated, monthly_active_customers):
    plan = monthly_active_customers.with_window(FIRST, LAST)
    source = plan.source("raw.orders")
    found = affected_partitions(
        generated, plan, source, "order_ts >= '2024-02-10' AND order_ts < '2024-02-11'"
    )
    # Orders placed on 10 February; re-sends may have moved some of them into March.
    moved = generated.execute(
        "SELECT DISTINCT CAST(date_trunc('month', o2.order_ts) AS DATE) FROM raw.orders AS o1 "
        "JOIN raw.orders AS o2 USING (order_id) "
        "WHERE o1.order_ts >= '2024-02-10' AND o1.order_ts < '2024-02-11'"
    ).fetchall()
    assert found == sorted(m for (m,) in moved) and dt.date(2024, 2, 1) in found


def test_without_a_slice_rows_place_themselves_by_event_time_and_lookback(conn, tmp_path):
    plan: Plan = make_plan(tmp_path / "plan", "daily", dt.date(2024, 5, 1), dt.date(2024, 5, 31))
    fill_events(conn, dt.datetime(2024, 4, 25), dt.datetime(2024, 6, 5))
    source = plan.source("ops.events")
    may_7 = "event_ts >= '2024-05-07' AND event_ts < '2024-05-08'"
    assert affected_partitions(conn, plan, source, may_7) == [dt.date(2024, 5, 7)]
    assert affected_partitions(conn, plan, source, "category = 'nothing'") == []
    # Rows before the window reach no partition of it.
    assert affected_partitions(conn, plan, source, "event_ts < '2024-05-01'") == []


@pytest.mark.parametrize(
    ("predicate", "why"),
    [
        ("customer_id IN (SELECT customer_id FROM raw.customers)", "subquery"),
        ("read_text('/etc/hostname') IS NOT NULL", "does not bind"),
        ("1 = 1); DELETE FROM raw.orders; SELECT (1", "statement"),
        ("no_such_column = 1", "does not bind"),
        ("   ", "is empty"),
    ],
)
def test_a_predicate_that_is_not_one_expression_is_refused(generated, fct_orders, predicate, why):
    before = generated.execute("SELECT count(*) FROM raw.orders").fetchone()
    with pytest.raises(PredicateError, match=why) as error:
        affected_partitions(generated, fct_orders, fct_orders.source("raw.orders"), predicate)
    assert "Fix:" in str(error.value)
    assert generated.execute("SELECT count(*) FROM raw.orders").fetchone() == before
