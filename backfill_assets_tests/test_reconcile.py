"""reconcile(): candidate vs baseline per group and measure, every difference explained or not.

Runs on real DuckDB files: three generated months (the ``generated`` fixture) for the library
function, and the shipped plans' full two-year window at a small size for the
``backfill-assets reconcile`` command. Expected totals come from SQL over the model tables and
the raw rows written here, never from a run of the code under test.
"""

import datetime as dt
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from backfill_assets.build import build_window
from backfill_assets.cli import main
from backfill_assets.example.generator import generate
from backfill_assets.plan import Plan
from backfill_assets.reconcile import Reconciliation, reconcile
from backfill_assets_tests.helpers import plan_named

FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
END = LAST + dt.timedelta(days=1)
MONTHS = {dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)}
MEASURES = ["orders", "gross_revenue", "refunds", "net_revenue"]
RULES = ["duplicates_removed", "excluded_statuses", "refund_timing_moved"]
# Sums of DOUBLE values and a residual rounded to 6 decimals per group: allow float noise only.
EPS = 1e-4

LATEST = """
    SELECT *
    FROM raw.orders
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status
    ) = 1
"""


def built(conn: duckdb.DuckDBPyConnection, name: str) -> Plan:
    plan = plan_named(name).with_window(FIRST, LAST)
    for version in ("legacy", "v2"):
        build_window(conn, plan, version, FIRST, END, "run-1")
    return plan


def totals(recon: Reconciliation) -> pd.DataFrame:
    columns = ["baseline", "candidate", "delta", *(f"rule_{r}" for r in recon.rules), "residual"]
    return recon.table.groupby("measure")[columns].sum()


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> float:
    return float(conn.execute(sql, params or []).fetchone()[0] or 0)


def month_of(value) -> dt.date:
    return pd.Timestamp(value).date()


def group_key(row) -> tuple:
    region = None if pd.isna(row.region) else row.region
    return (month_of(row.month), region)


# --------------------------------------------------------------------------------------------
# daily_revenue: the identity, the rules, the grouping
# --------------------------------------------------------------------------------------------


@pytest.fixture
def revenue(generated) -> tuple[duckdb.DuckDBPyConnection, Plan, Reconciliation]:
    plan = built(generated, "daily_revenue")
    return generated, plan, reconcile(generated, plan)


def test_totals_are_the_model_tables_and_delta_is_rules_plus_residual(revenue):
    conn, plan, recon = revenue
    by_measure = totals(recon)

    assert recon.passed
    assert recon.rules == RULES
    assert sorted(by_measure.index) == sorted(MEASURES)
    for measure in MEASURES:
        legacy = scalar(conn, f"SELECT sum({measure}) FROM {plan.model_table('legacy')}")
        v2 = scalar(conn, f"SELECT sum({measure}) FROM {plan.model_table('v2')}")
        row = by_measure.loc[measure]
        assert row["baseline"] == pytest.approx(legacy, abs=EPS)
        assert row["candidate"] == pytest.approx(v2, abs=EPS)
        explained = sum(row[f"rule_{rule}"] for rule in RULES)
        assert v2 - legacy == pytest.approx(explained + row["residual"], abs=EPS)
        assert abs(row["residual"]) <= EPS
    # The versions differ a lot: the identity is not 0 == 0.
    assert abs(by_measure.loc["orders", "delta"]) > 100
    assert abs(by_measure.loc["gross_revenue", "delta"]) > 1000


def test_each_rule_explains_a_non_zero_part_of_the_gap(revenue):
    _, _, recon = revenue
    for rule in RULES:
        assert recon.table[f"rule_{rule}"].abs().sum() > 0, rule


def test_rules_predict_what_the_raw_rows_say(revenue):
    conn, _, recon = revenue
    by_measure = totals(recon)
    window = [FIRST, END]
    rows_in_window = scalar(
        conn, "SELECT count(*) FROM raw.orders WHERE order_ts >= ? AND order_ts < ?", window
    )
    amount_in_window = scalar(
        conn, "SELECT sum(amount) FROM raw.orders WHERE order_ts >= ? AND order_ts < ?", window
    )
    latest_in_window, latest_amount = conn.execute(
        f"SELECT count(*), sum(amount) FROM ({LATEST}) WHERE order_ts >= ? AND order_ts < ?",
        window,
    ).fetchone()
    excluded = scalar(
        conn,
        f"SELECT count(*) FROM ({LATEST}) WHERE order_ts >= ? AND order_ts < ? "
        "AND status IN ('cancelled', 'test')",
        window,
    )
    assert rows_in_window > latest_in_window > 0
    assert excluded > 0

    # Every re-sent version that is not the latest leaves legacy's count and gross.
    duplicates = by_measure["rule_duplicates_removed"]
    assert duplicates["orders"] == pytest.approx(-(rows_in_window - latest_in_window))
    assert duplicates["gross_revenue"] == pytest.approx(
        -(amount_in_window - float(latest_amount)), abs=EPS
    )
    assert duplicates["refunds"] == 0
    # Orders whose latest status is cancelled or test leave, one each.
    assert by_measure.loc["orders", "rule_excluded_statuses"] == pytest.approx(-excluded)
    # Refund timing moves refunds only: never an order or gross revenue, in any group.
    moved = recon.table[recon.table["measure"].isin(["orders", "gross_revenue"])]
    assert (moved["rule_refund_timing_moved"] == 0).all()
    assert by_measure.loc["refunds", "rule_refund_timing_moved"] != 0


def test_net_is_gross_minus_refunds_in_every_group_for_every_column(revenue):
    _, _, recon = revenue
    # pivot_table drops NULL keys; keep the NULL-region group by filling it first.
    table = recon.table.fillna({"region": "<NULL>"})
    wide = table.pivot_table(
        index=["month", "region"],
        columns="measure",
        values=["baseline", "candidate", "delta", *(f"rule_{r}" for r in RULES), "residual"],
    )
    assert "<NULL>" in wide.index.get_level_values("region")
    for column in ["baseline", "candidate", "delta", *(f"rule_{r}" for r in RULES)]:
        net = wide[(column, "net_revenue")]
        gross_minus_refunds = wide[(column, "gross_revenue")] - wide[(column, "refunds")]
        assert (net - gross_minus_refunds).abs().max() <= EPS, column


def test_groups_are_month_by_region_with_a_null_region_group(revenue):
    conn, plan, recon = revenue
    assert recon.by == ["month", "region"]
    expected_groups = {
        (month, region)
        for version in ("legacy", "v2")
        for month, region in conn.execute(
            f"SELECT DISTINCT CAST(date_trunc('month', order_date) AS DATE), region "
            f"FROM {plan.model_table(version)}"
        ).fetchall()
    }
    groups = [group_key(row) for row in recon.table.itertuples()]

    assert {month for month, _ in groups} == MONTHS
    assert set(groups) == expected_groups
    assert len(groups) == len(expected_groups) * len(MEASURES)
    assert {"north", "south", "east", "west", "pilot", None} <= {r for _, r in groups}
    # The NULL-region group is its own group, not dropped or merged into another region.
    null_january = recon.table[
        recon.table["region"].isna()
        & (recon.table["month"].map(month_of) == dt.date(2024, 1, 1))
        & (recon.table["measure"] == "gross_revenue")
    ]
    assert len(null_january) == 1
    legacy_null = scalar(
        conn,
        f"SELECT sum(gross_revenue) FROM {plan.model_table('legacy')} "
        "WHERE region IS NULL AND order_date < DATE '2024-02-01'",
    )
    assert legacy_null > 0
    assert null_january["baseline"].iloc[0] == pytest.approx(legacy_null, abs=EPS)


def test_reconcile_over_a_sub_window_covers_only_its_days(revenue):
    conn, plan, _ = revenue
    recon = reconcile(conn, plan, start=dt.date(2024, 2, 1), end=dt.date(2024, 3, 1))

    assert {month_of(m) for m in recon.table["month"]} == {dt.date(2024, 2, 1)}
    assert (recon.start, recon.end) == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    february_orders = scalar(
        conn,
        f"SELECT sum(orders) FROM {plan.model_table('v2')} "
        "WHERE order_date BETWEEN DATE '2024-02-01' AND DATE '2024-02-29'",
    )
    assert totals(recon).loc["orders", "candidate"] == pytest.approx(february_orders)
    assert recon.passed


# --------------------------------------------------------------------------------------------
# fct_orders: a column enrichment, reconciled by day
# --------------------------------------------------------------------------------------------


def test_fct_orders_rows_and_amount_do_not_change_on_any_day(generated):
    plan = built(generated, "fct_orders")
    recon = reconcile(generated, plan)

    assert recon.by == ["day"]
    assert recon.rules == []
    days = {pd.Timestamp(d).date() for d in recon.table["day"]}
    assert days == {FIRST + dt.timedelta(days=i) for i in range((END - FIRST).days)}
    assert len(recon.table) == len(days) * 2
    assert set(recon.table["measure"]) == {"rows", "amount"}
    # Measures are summed as DOUBLE: identical days differ by float noise at most.
    assert recon.table["delta"].abs().max() < 1e-6
    assert (recon.table["residual"] == 0).all()
    orders = scalar(generated, f"SELECT count(*) FROM {plan.model_table('v2')}")
    rows_total = recon.table.loc[recon.table["measure"] == "rows", "candidate"].sum()
    assert rows_total == orders > 0
    assert recon.passed


def test_fct_orders_extra_row_in_v2_fails_on_its_day_only(generated):
    plan = plan_named("fct_orders").with_window(FIRST, LAST)
    build_window(generated, plan, "legacy", FIRST, END, "run-1")
    generated.execute(
        "INSERT INTO raw.orders VALUES (77000000001, 1, 'north', ?, 123.45, 'placed', ?)",
        [dt.datetime(2024, 2, 14, 12), dt.datetime(2024, 2, 14, 13)],
    )
    build_window(generated, plan, "v2", FIRST, END, "run-2")

    recon = reconcile(generated, plan)

    assert not recon.passed
    failing = {
        (pd.Timestamp(row.day).date(), row.measure): row.residual
        for row in recon.failing.itertuples()
    }
    assert failing == {
        (dt.date(2024, 2, 14), "rows"): pytest.approx(1),
        (dt.date(2024, 2, 14), "amount"): pytest.approx(123.45),
    }


def test_fct_orders_identical_large_amounts_reconcile_exactly(generated):
    # Large but valid DECIMAL(12,2) amounts: up to ~9.5e8 an order, ~2e10 a day.
    generated.execute("UPDATE raw.orders SET amount = CAST(amount * 1900001 AS DECIMAL(12, 2))")
    plan = built(generated, "fct_orders")
    legacy, v2 = (
        generated.execute(f"SELECT sum(amount) FROM {plan.model_table(v)}").fetchone()[0]
        for v in ("legacy", "v2")
    )
    assert legacy == v2 > 10**11  # exact DECIMAL sums: the versions agree to the cent

    recon = reconcile(generated, plan)

    assert recon.failing.empty, recon.failing.head().to_string()


# --------------------------------------------------------------------------------------------
# backfill-assets reconcile daily_revenue --html ...
# --------------------------------------------------------------------------------------------

EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def full_window(conn) -> duckdb.DuckDBPyConnection:
    """The shipped daily_revenue window (2024-01-01 .. 2025-12-31), 15 orders a day."""
    plan = plan_named("daily_revenue")
    generate(conn, plan.spec.window.start, plan.spec.window.end, orders_per_day=15, seed=3)
    return conn


def _build_full(conn, versions=("legacy", "v2")) -> None:
    plan = plan_named("daily_revenue")
    end = plan.spec.window.end + dt.timedelta(days=1)
    for version in versions:
        build_window(conn, plan, version, plan.spec.window.start, end, "run-cli")


def test_external_url_pattern_catches_what_it_should():
    assert EXTERNAL_URL.search('<script src="https://cdn.example.com/x.js">')
    assert EXTERNAL_URL.search("<link href='//fonts.example.com/a.css'>")
    assert not EXTERNAL_URL.search('<svg xmlns="http://www.w3.org/2000/svg">')


def test_cli_prints_passed_and_writes_a_self_contained_html_report(
    full_window, tmp_path: Path, capsys
):
    _build_full(full_window)
    report = tmp_path / "out" / "r.html"

    code = main(["reconcile", "daily_revenue", "--html", str(report)])

    out = capsys.readouterr().out
    assert code == 0
    assert "PASSED" in out
    assert "daily_revenue" in out
    assert "2024-01-01..2025-12-31" in out
    assert str(report) in out
    page = report.read_text()
    assert "<svg" in page
    assert "daily_revenue" in page
    assert "PASSED" in page
    assert "FAILED" not in page
    assert not EXTERNAL_URL.findall(page)
    assert "<script" not in page


def test_cli_without_html_writes_the_report_beside_the_warehouse(
    full_window, warehouse_file: Path, capsys
):
    _build_full(full_window)

    assert main(["reconcile", "daily_revenue"]) == 0

    report = warehouse_file.parent / "reports" / "daily_revenue" / "reconciliation.html"
    assert str(report) in capsys.readouterr().out
    assert "<svg" in report.read_text()


def test_cli_fails_with_exit_code_1_on_an_unexplained_change(full_window, tmp_path, capsys):
    # Legacy was built before a late order arrived; v2 after. No rule predicts the new order.
    _build_full(full_window, versions=("legacy",))
    full_window.execute(
        "INSERT INTO raw.orders VALUES (77000000001, 1, 'east', ?, 250.00, 'placed', ?)",
        [dt.datetime(2025, 6, 15, 12), dt.datetime(2025, 6, 15, 13)],
    )
    _build_full(full_window, versions=("v2",))
    report = tmp_path / "r.html"

    code = main(["reconcile", "daily_revenue", "--html", str(report)])

    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out
    assert "PASSED" not in out
    worst = out.split("worst", 1)[1]
    first_group = worst.splitlines()[2]
    assert "2025-06-01" in first_group and "east" in first_group
    assert "FAILED" in report.read_text()


def test_cli_names_an_unknown_plan(full_window, capsys):
    assert main(["reconcile", "no_such_plan"]) == 1
    err = capsys.readouterr().err
    assert "no_such_plan" in err and "daily_revenue" in err


def test_the_reconciliation_carries_what_the_report_needs_from_the_plan(revenue):
    conn, plan, recon = revenue
    rules = plan.spec.checks.reconciliation.explained_differences
    assert recon.descriptions == {r.name: r.description for r in rules}
    assert recon.candidate_change == plan.version("v2").change
    assert recon.baseline_change == plan.version("legacy").change
    assert recon.units == {"orders": "count"}  # BIGINT; the DECIMAL amounts have no known unit
    measured = recon.measure_totals()
    assert list(measured) == MEASURES  # the plan's order
    by_measure = totals(recon)
    for measure in MEASURES:
        legacy = scalar(conn, f"SELECT sum({measure}) FROM {plan.model_table('legacy')}")
        v2 = scalar(conn, f"SELECT sum({measure}) FROM {plan.model_table('v2')}")
        assert measured[measure]["baseline"] == pytest.approx(legacy, abs=EPS)
        assert measured[measure]["candidate"] == pytest.approx(v2, abs=EPS)
        for rule in RULES:
            expected = by_measure.loc[measure, f"rule_{rule}"]
            assert measured[measure]["rules"][rule] == pytest.approx(expected, abs=EPS)
