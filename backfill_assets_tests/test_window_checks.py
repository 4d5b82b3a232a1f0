"""Window checks (issue "Asset checks"): clean data passes, each planted defect fails its check.

Every scenario runs on a real DuckDB file holding three generated months (2024-01-01 ..
2024-03-31, 60 orders a day, the pilot rows included) and the plans narrowed to that window.
A defect is planted in the raw tables, both versions are built with ``build_window`` and
``run_window_checks`` judges the candidate. Each defect must make exactly the check meant for it
fail (plus the checks that necessarily see the same problem, named in the test), naming the day
or group, while ``analytics.<plan>`` keeps showing the published version: a refused promotion
changes nothing.

Expected days, keys and counts are derived from the raw rows with SQL written here, never
copied from a run of the code under test.
"""

import datetime as dt
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from backfill_assets.build import BuildResult, build_window
from backfill_assets.partition_checks import (
    GRAIN_IS_UNIQUE,
    KNOWN_RECORDS_MATCH,
    NULL_RATES_WITHIN_LIMITS,
)
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import (
    PublishError,
    ensure_view,
    evaluate_gate,
    promote,
    published_version,
)
from backfill_assets.window_checks import (
    BUILT_FROM_CURRENT_SOURCES,
    BUILT_WITH_CURRENT_CODE,
    ENRICHMENT_COVERAGE_MET,
    EVERY_PARTITION_PASSED_CHECKS,
    RECONCILES_WITH_BASELINE,
    TREND_HAS_NO_UNEXPLAINED_JUMPS,
    WINDOW_IS_COMPLETE,
    WindowCheck,
    run_window_checks,
    window_check_names,
)
from backfill_assets_tests.helpers import plan_named

FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
END = LAST + dt.timedelta(days=1)  # build_window takes an exclusive end
WINDOW_DAYS = (END - FIRST).days  # 91
DAY = dt.date(2024, 2, 14)  # a mid-window day away from the pilot rows (2024-02-28 .. 03-05)
PILOT_DAY = dt.date(2024, 2, 29)
REFUND_ORDERS_EXIST = "refund_orders_exist"
CUSTOMER_KNOWN = "customer_known"

# The latest version of every raw order (greatest ingested_at, ties as the versions' SQL breaks
# them): what both fct_orders versions and daily_revenue v2 are made of.
LATEST = """
    SELECT *
    FROM raw.orders
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status
    ) = 1
"""


def windowed(name: str) -> Plan:
    return plan_named(name).with_window(FIRST, LAST)


def copy_plan(tmp_path: Path, name: str, edit: Callable[[Path], None]) -> Plan:
    """A copy of a shipped plan's folder with one file edited, loaded and narrowed."""
    folder = tmp_path / "plans" / name
    shutil.copytree(plan_named(name).folder, folder)
    edit(folder)
    return load_plan(folder / "plan.yaml").with_window(FIRST, LAST)


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer contains the text this test edits"
    path.write_text(text.replace(old, new))


def view_checksum(conn: duckdb.DuckDBPyConnection, plan: Plan) -> tuple[int, str]:
    """Row count and md5 of what readers of ``analytics.<plan>`` see, in a fixed order."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {plan.view} AS t"
    ).fetchone()


def by_name(checks: list[WindowCheck]) -> dict[str, WindowCheck]:
    return {check.name: check for check in checks}


def blocking_failures(checks: list[WindowCheck]) -> set[str]:
    return {check.name for check in checks if check.blocking and not check.passed}


def approver(plan: Plan) -> str:
    return plan.spec.approvers[0] if plan.spec.approvers else ""


@dataclass
class Outcome:
    """What a user sees after building both versions over planted data and checking v2."""

    build: BuildResult  # the v2 build
    checks: list[WindowCheck]

    @property
    def named(self) -> dict[str, WindowCheck]:
        return by_name(self.checks)


def build_check_and_try_to_publish(
    conn: duckdb.DuckDBPyConnection, plan: Plan, refused_because: set[str]
) -> Outcome:
    """Build legacy, publish it as the view, build and check v2, and try to promote v2.

    The promotion must be refused naming every check in ``refused_because``, and the view must
    still show legacy, row for row.
    """
    build_window(conn, plan, "legacy", FIRST, END, "run-legacy")
    assert ensure_view(conn, plan) == "legacy"
    published = view_checksum(conn, plan)
    assert published[0] > 0
    build = build_window(conn, plan, "v2", FIRST, END, "run-v2")
    checks = run_window_checks(conn, plan, "v2")
    with pytest.raises(PublishError) as refused:
        promote(conn, plan, "v2", approver(plan), "tests: planted defect", "run-promote")
    for name in refused_because:
        assert name in str(refused.value)
    assert view_checksum(conn, plan) == published
    assert published_version(conn, plan) == "legacy"
    return Outcome(build, checks)


def evidence_failures(conn: duckdb.DuckDBPyConnection, plan: Plan) -> dict[dt.date, dict]:
    """The v2 evidence rows whose checks did not all pass, with their per-check JSON."""
    rows = conn.execute(
        "SELECT partition_start::DATE AS day, checks FROM backfill.partition_evidence "
        "WHERE model = ? AND version = 'v2' AND NOT checks_passed ORDER BY day",
        [plan.name],
    ).fetchall()
    return {day: json.loads(checks) for day, checks in rows}


def latest_orders_of_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> list[tuple]:
    """(order_id, customer_id, region) of the orders whose latest version is on ``day``."""
    return conn.execute(
        f"SELECT order_id, customer_id, region FROM ({LATEST}) "
        "WHERE CAST(order_ts AS DATE) = ? ORDER BY order_id",
        [day],
    ).fetchall()


# --------------------------------------------------------------------------------------------
# 1. Clean generated data: every check passes for v2 of both plans
# --------------------------------------------------------------------------------------------


def test_daily_revenue_v2_passes_every_window_check_with_a_fully_explained_delta(generated):
    plan = windowed("daily_revenue")
    for version in ("legacy", "v2"):
        build_window(generated, plan, version, FIRST, END, "run-1")

    checks = run_window_checks(generated, plan, "v2")

    assert [c.name for c in checks] == window_check_names(plan)
    assert blocking_failures(checks) == set()
    named = by_name(checks)
    # The generator plants refunds of orders that never existed: the warn-only rule lists them
    # without blocking.
    orphans = generated.execute(
        "SELECT count(*) FROM raw.refunds AS r WHERE r.refund_ts >= ? AND r.refund_ts < ? "
        "AND r.order_id NOT IN (SELECT order_id FROM raw.orders)",
        [FIRST, END],
    ).fetchone()[0]
    assert orphans > 0
    warn = named[REFUND_ORDERS_EXIST]
    assert warn.blocking is False
    assert warn.passed is False
    assert warn.figures["offending_rows"] == orphans
    assert warn.figures["severity"] == "warn"
    # The versions really differ, and the rules explain every difference.
    recon = named[RECONCILES_WITH_BASELINE]
    assert recon.passed
    assert recon.figures["total_abs_delta"] > 0
    assert recon.reconciliation is not None
    residuals = recon.reconciliation.table["residual"].abs()
    assert (residuals <= plan.spec.checks.reconciliation.tolerance).all()
    assert recon.figures["groups_unexplained"] == 0
    # Positive control for every "refused" below: the same gate lets a clean v2 through.
    assert evaluate_gate(generated, plan, "v2", approver(plan)).passed


def test_fct_orders_v2_passes_every_window_check(generated):
    plan = windowed("fct_orders")
    for version in ("legacy", "v2"):
        build_window(generated, plan, version, FIRST, END, "run-1")

    checks = run_window_checks(generated, plan, "v2")

    assert [c.name for c in checks] == window_check_names(plan)
    assert ENRICHMENT_COVERAGE_MET in by_name(checks)
    failed = {c.name: c.summary for c in checks if not c.passed}
    assert failed == {}
    # Every window check gates promotion except freshness, which only warns.
    assert {c.name for c in checks if not c.blocking} == {"is_fresh"}
    enrichment = by_name(checks)[ENRICHMENT_COVERAGE_MET]
    assert enrichment.figures["partitions_with_different_row_counts"] == 0
    assert enrichment.figures["coverage"] >= plan.spec.checks.enrichment.min_coverage
    assert evaluate_gate(generated, plan, "v2").passed


def test_checks_of_a_version_that_was_never_built_fail_and_say_so(generated):
    plan = windowed("daily_revenue")
    build_window(generated, plan, "legacy", FIRST, END, "run-1")

    checks = run_window_checks(generated, plan, "v2")

    assert [c.name for c in checks] == window_check_names(plan)
    assert not any(c.passed for c in checks)
    assert all("daily_revenue__v2 has not been built yet" in c.summary for c in checks)


# --------------------------------------------------------------------------------------------
# 2a. A duplicated key on one day
# --------------------------------------------------------------------------------------------


def test_duplicated_key_fails_grain_on_that_day_only(generated):
    """A second segment row overlapping one customer's history on DAY only (valid for that
    single day) makes v2's point-in-time join return two rows for that customer's orders of
    DAY. Legacy joins the current segment only, so it is unaffected.
    """
    plan = windowed("fct_orders")
    orders = latest_orders_of_day(generated, DAY)
    customer = orders[0][1]
    duplicated = sorted(str(order_id) for order_id, cust, _ in orders if cust == customer)
    generated.execute(
        "INSERT INTO raw.customers VALUES (?, 'enterprise', 'north', ?, ?)",
        [customer, dt.datetime(2024, 2, 14), dt.datetime(2024, 2, 15)],
    )

    outcome = build_check_and_try_to_publish(
        generated, plan, {EVERY_PARTITION_PASSED_CHECKS, RECONCILES_WITH_BASELINE}
    )

    # Per partition: only DAY fails, only on grain, naming the repeated order ids.
    assert [d.partition for d in outcome.build.failing] == [DAY]
    (failing_day,) = outcome.build.failing
    assert failing_day.failed_checks() == [GRAIN_IS_UNIQUE]
    grain = failing_day.checks[GRAIN_IS_UNIQUE]
    assert grain["duplicate_rows"] == len(duplicated)
    assert grain["first_duplicate_keys"] == duplicated[:5]
    evidence = evidence_failures(generated, plan)
    assert list(evidence) == [DAY]
    assert evidence[DAY][GRAIN_IS_UNIQUE]["passed"] is False
    assert evidence[DAY][NULL_RATES_WITHIN_LIMITS]["passed"] is True

    # Window: the day is named; the extra rows are also seen, on DAY only, by the two checks that
    # compare rows per day with legacy.
    named = outcome.named
    assert blocking_failures(outcome.checks) == {
        EVERY_PARTITION_PASSED_CHECKS,
        RECONCILES_WITH_BASELINE,
        ENRICHMENT_COVERAGE_MET,
    }
    every_day = named[EVERY_PARTITION_PASSED_CHECKS]
    assert f"{GRAIN_IS_UNIQUE} failed on {DAY}" in every_day.summary
    assert every_day.figures["partitions_failing"] == 1
    assert every_day.figures[GRAIN_IS_UNIQUE] == [str(DAY)]
    failing_groups = named[RECONCILES_WITH_BASELINE].reconciliation.failing
    assert {pd.Timestamp(d).date() for d in failing_groups["day"]} == {DAY}
    rows = failing_groups[failing_groups["measure"] == "rows"]
    assert rows["residual"].tolist() == [len(duplicated)]
    assert named[ENRICHMENT_COVERAGE_MET].figures["differing_ranges"] == [str(DAY)]


def test_an_exact_duplicate_raw_row_is_not_a_duplicate_output_row(generated):
    """Re-delivering an identical raw row (same order_id and ingested_at) must not duplicate
    the order: both versions keep one latest version per order."""
    plan = windowed("fct_orders")
    generated.execute(
        "INSERT INTO raw.orders SELECT * FROM raw.orders "
        "WHERE CAST(order_ts AS DATE) = ? ORDER BY order_id LIMIT 1",
        [DAY],
    )
    for version in ("legacy", "v2"):
        result = build_window(generated, plan, version, FIRST, END, "run-1")
        assert result.failing == []
    assert blocking_failures(run_window_checks(generated, plan, "v2")) == set()


# --------------------------------------------------------------------------------------------
# 2b. NULL region above the limit on one day
# --------------------------------------------------------------------------------------------


def test_null_region_above_limit_fails_null_rates_on_that_day_only(generated):
    plan = windowed("fct_orders")
    orders_of_day = latest_orders_of_day(generated, DAY)
    generated.execute("UPDATE raw.orders SET region = NULL WHERE CAST(order_ts AS DATE) = ?", [DAY])

    outcome = build_check_and_try_to_publish(generated, plan, {EVERY_PARTITION_PASSED_CHECKS})

    assert [d.partition for d in outcome.build.failing] == [DAY]
    (failing_day,) = outcome.build.failing
    assert failing_day.failed_checks() == [NULL_RATES_WITHIN_LIMITS]
    nulls = failing_day.checks[NULL_RATES_WITHIN_LIMITS]
    assert nulls["rows"] == len(orders_of_day)
    assert nulls["over_limit"] == {
        "region": {"rate": 1.0, "limit": 0.1, "nulls": len(orders_of_day)}
    }
    assert list(evidence_failures(generated, plan)) == [DAY]

    assert blocking_failures(outcome.checks) == {EVERY_PARTITION_PASSED_CHECKS}
    every_day = outcome.named[EVERY_PARTITION_PASSED_CHECKS]
    assert every_day.figures == {"partitions_failing": 1, NULL_RATES_WITHIN_LIMITS: [str(DAY)]}
    assert str(DAY) in every_day.summary


# --------------------------------------------------------------------------------------------
# 2c. A known record changed
# --------------------------------------------------------------------------------------------


def test_changed_known_record_fails_known_records_on_its_day_naming_the_key(generated):
    # Pilot order 9000000005 is the only order of the pilot region on 2024-02-29 in v2
    # (finance verified: 1 order, 70.00).
    plan = windowed("daily_revenue")
    generated.execute("UPDATE raw.orders SET amount = 75.00 WHERE order_id = 9000000005")

    outcome = build_check_and_try_to_publish(generated, plan, {EVERY_PARTITION_PASSED_CHECKS})

    assert [d.partition for d in outcome.build.failing] == [PILOT_DAY]
    (failing_day,) = outcome.build.failing
    assert failing_day.failed_checks() == [KNOWN_RECORDS_MATCH]
    known = failing_day.checks[KNOWN_RECORDS_MATCH]
    assert known["records_checked"] == 1
    (mismatch,) = known["mismatches"]
    assert mismatch["key"] == {"order_date": "2024-02-29", "region": "pilot"}
    assert float(mismatch["actual"]["gross_revenue"]) == 75.0
    assert float(mismatch["expected"]["gross_revenue"]) == 70.0
    # The other pilot record (2024-03-05, the refund day) still matches.
    march_5 = next(d for d in outcome.build.partitions if d.partition == dt.date(2024, 3, 5))
    assert march_5.checks[KNOWN_RECORDS_MATCH] == {
        "passed": True,
        "records_checked": 1,
        "mismatches": [],
    }

    assert blocking_failures(outcome.checks) == {EVERY_PARTITION_PASSED_CHECKS}
    every_day = outcome.named[EVERY_PARTITION_PASSED_CHECKS]
    assert every_day.figures == {"partitions_failing": 1, KNOWN_RECORDS_MATCH: [str(PILOT_DAY)]}


# --------------------------------------------------------------------------------------------
# 2d. A day with no source rows, and a day never built
# --------------------------------------------------------------------------------------------


def test_day_without_source_rows_fails_completeness_naming_that_day(generated):
    plan = windowed("daily_revenue")
    generated.execute("DELETE FROM raw.orders WHERE CAST(order_ts AS DATE) = ?", [DAY])
    generated.execute("DELETE FROM raw.refunds WHERE CAST(refund_ts AS DATE) = ?", [DAY])

    outcome = build_check_and_try_to_publish(generated, plan, {WINDOW_IS_COMPLETE})

    assert blocking_failures(outcome.checks) == {WINDOW_IS_COMPLETE}
    complete = outcome.named[WINDOW_IS_COMPLETE]
    assert complete.figures["missing_ranges"] + complete.figures["thin_ranges"] == [str(DAY)]
    assert (
        complete.figures["partitions_below_min_rows"] + complete.figures["partitions_missing"] == 1
    )
    assert str(DAY) in complete.summary
    other_days = [d for d in outcome.build.partitions if d.partition != DAY]
    assert len(other_days) == WINDOW_DAYS - 1
    assert all(d.row_count > 0 for d in other_days)


def test_day_never_built_fails_completeness_naming_that_day(generated):
    plan = windowed("daily_revenue")
    build_window(generated, plan, "legacy", FIRST, END, "run-1")
    build_window(generated, plan, "v2", FIRST, DAY, "run-2")
    build_window(generated, plan, "v2", DAY + dt.timedelta(days=1), END, "run-3")

    checks = run_window_checks(generated, plan, "v2")

    complete = by_name(checks)[WINDOW_IS_COMPLETE]
    assert not complete.passed
    assert complete.figures["missing_ranges"] == [str(DAY)]
    assert complete.figures["thin_ranges"] == []
    assert f"never built: {DAY}" in complete.summary


# --------------------------------------------------------------------------------------------
# 2e. An order whose customer is unknown
# --------------------------------------------------------------------------------------------


def test_unknown_customer_fails_referential_integrity_naming_its_orders_days(generated):
    plan = windowed("fct_orders")
    customer = latest_orders_of_day(generated, DAY)[0][1]
    expected = generated.execute(
        f"SELECT CAST(order_ts AS DATE) AS day, CAST(order_id AS VARCHAR) AS key "
        f"FROM ({LATEST}) WHERE customer_id = ? AND order_ts >= ? AND order_ts < ? "
        "ORDER BY day, key",
        [customer, FIRST, END],
    ).fetchall()
    days = sorted({day for day, _ in expected})
    assert DAY in days
    generated.execute("DELETE FROM raw.customers WHERE customer_id = ?", [customer])

    outcome = build_check_and_try_to_publish(generated, plan, {CUSTOMER_KNOWN})

    known = outcome.named[CUSTOMER_KNOWN]
    assert not known.passed
    assert known.blocking
    assert known.figures["offending_rows"] == len(expected)
    assert known.figures["first_days"] == [str(d) for d in days]
    assert known.figures["first_keys"] == [key for _, key in expected]
    assert str(days[0]) in known.summary
    # The orders of an unknown customer also have no segment: with ~60 orders a day one NULL
    # segment is above the 1% limit, on exactly those days.
    assert blocking_failures(outcome.checks) == {CUSTOMER_KNOWN, EVERY_PARTITION_PASSED_CHECKS}
    assert [d.partition for d in outcome.build.failing] == days
    for day in outcome.build.failing:
        assert list(day.checks[NULL_RATES_WITHIN_LIMITS]["over_limit"]) == ["customer_segment"]


def test_customer_known_only_after_an_orders_day_fails_referential_integrity_for_it(generated):
    """A customer whose history starts the day after one of its orders: that order (and any
    earlier one) offends, its later orders do not."""
    plan = windowed("fct_orders")
    customer = latest_orders_of_day(generated, DAY)[0][1]
    starts = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(12))
    expected = generated.execute(
        f"SELECT CAST(order_ts AS DATE) AS day, CAST(order_id AS VARCHAR) AS key "
        f"FROM ({LATEST}) WHERE customer_id = ? AND order_ts >= ? AND order_ts < ? "
        "AND CAST(order_ts AS DATE) <= ? ORDER BY day, key",
        [customer, FIRST, END, DAY],
    ).fetchall()
    later = generated.execute(
        f"SELECT count(*) FROM ({LATEST}) WHERE customer_id = ? AND order_ts >= ? AND order_ts < ?",
        [customer, starts, END],
    ).fetchone()[0]
    assert expected and DAY in {day for day, _ in expected}
    assert later > 0  # so the exact count below also shows later orders do not offend
    generated.execute(
        "UPDATE raw.customers SET valid_from = greatest(valid_from, ?) WHERE customer_id = ?",
        [starts, customer],
    )

    build_window(generated, plan, "v2", FIRST, END, "run-v2")
    known = by_name(run_window_checks(generated, plan, "v2"))[CUSTOMER_KNOWN]

    assert not known.passed
    assert known.figures["offending_rows"] == len(expected)
    assert known.figures["first_keys"] == [key for _, key in expected][:20]


# --------------------------------------------------------------------------------------------
# 2f. A v2 change no rule explains
# --------------------------------------------------------------------------------------------

V2_ORDER_ROWS = (
    "SELECT CAST(order_ts AS DATE) AS order_date, region, 1 AS orders, amount AS gross, 0 AS refund"
)
V2_ORDER_ROWS_NORTH_FEBRUARY_UPLIFT = (
    "SELECT CAST(order_ts AS DATE) AS order_date, region, 1 AS orders, "
    "CASE WHEN region = 'north' AND order_ts >= TIMESTAMP '2024-02-01' "
    "AND order_ts < TIMESTAMP '2024-03-01' THEN amount * 1.1 ELSE amount END AS gross, "
    "0 AS refund"
)


def test_unexplained_v2_change_fails_reconciliation_in_the_affected_group_only(generated, tmp_path):
    """v2 quietly books north's February orders at 110%: no rule predicts it."""
    plan = copy_plan(
        tmp_path,
        "daily_revenue",
        lambda folder: replace_once(
            folder / "sql" / "v2.sql", V2_ORDER_ROWS, V2_ORDER_ROWS_NORTH_FEBRUARY_UPLIFT
        ),
    )
    uplift = generated.execute(
        f"SELECT sum(amount) * 0.1 FROM ({LATEST}) WHERE region = 'north' "
        "AND status NOT IN ('cancelled', 'test') "
        "AND order_ts >= TIMESTAMP '2024-02-01' AND order_ts < TIMESTAMP '2024-03-01'"
    ).fetchone()[0]

    outcome = build_check_and_try_to_publish(generated, plan, {RECONCILES_WITH_BASELINE})

    assert outcome.build.failing == []
    assert blocking_failures(outcome.checks) == {RECONCILES_WITH_BASELINE}
    recon = outcome.named[RECONCILES_WITH_BASELINE].reconciliation
    failing = {
        (pd.Timestamp(row.month).date(), row.region, row.measure): row.residual
        for row in recon.failing.itertuples()
    }
    assert set(failing) == {
        (dt.date(2024, 2, 1), "north", "gross_revenue"),
        (dt.date(2024, 2, 1), "north", "net_revenue"),
    }
    # v2 rounds each day to cents: over February's 29 days that is at most 29 half-cents.
    assert float(uplift) > 100
    for residual in failing.values():
        assert residual == pytest.approx(float(uplift), abs=29 * 0.005)
    # Every other month and region, and north's order counts, still reconcile.
    others = recon.table.drop(recon.failing.index)
    assert len(others) > 0
    assert (others["residual"].abs() <= recon.tolerance).all()
    assert "region=north" in outcome.named[RECONCILES_WITH_BASELINE].summary


# --------------------------------------------------------------------------------------------
# 2g. A one-day spike
# --------------------------------------------------------------------------------------------


def test_one_day_spike_fails_the_trend_check_on_that_day_only(generated):
    plan = windowed("daily_revenue")
    generated.execute(
        "UPDATE raw.orders SET amount = amount * 20 WHERE CAST(order_ts AS DATE) = ?", [DAY]
    )

    outcome = build_check_and_try_to_publish(generated, plan, {TREND_HAS_NO_UNEXPLAINED_JUMPS})

    assert blocking_failures(outcome.checks) == {TREND_HAS_NO_UNEXPLAINED_JUMPS}
    trend = outcome.named[TREND_HAS_NO_UNEXPLAINED_JUMPS]
    assert trend.figures["partitions_jumping"] == 1
    (listed,) = trend.figures["partitions"]
    assert listed.startswith(f"{DAY}: ")
    assert str(DAY) in trend.summary
    # The spike is in both versions, so it reconciles: it is not an unexplained difference.
    assert outcome.named[RECONCILES_WITH_BASELINE].passed


# --------------------------------------------------------------------------------------------
# 2h. Sources or code changed after the build
# --------------------------------------------------------------------------------------------


def _build_clean_and_publish(conn, plan: Plan) -> tuple[int, str]:
    for version in ("legacy", "v2"):
        build_window(conn, plan, version, FIRST, END, "run-1")
    ensure_view(conn, plan)
    assert blocking_failures(run_window_checks(conn, plan, "v2")) == set()
    return view_checksum(conn, plan)


def _assert_promotion_refused(conn, plan: Plan, published: tuple[int, str], reason: str) -> None:
    with pytest.raises(PublishError, match=reason):
        promote(conn, plan, "v2", approver(plan), "tests", "run-promote")
    assert view_checksum(conn, plan) == published
    assert published_version(conn, plan) == "legacy"


def test_late_order_after_the_build_fails_sources_current_naming_its_day(generated):
    plan = windowed("daily_revenue")
    published = _build_clean_and_publish(generated, plan)

    generated.execute(
        "INSERT INTO raw.orders VALUES (77000000001, 1, 'north', ?, 123.45, 'placed', ?)",
        [dt.datetime(2024, 2, 14, 12), dt.datetime(2024, 2, 19, 8)],
    )
    checks = run_window_checks(generated, plan, "v2")

    assert blocking_failures(checks) == {BUILT_FROM_CURRENT_SOURCES}
    stale = by_name(checks)[BUILT_FROM_CURRENT_SOURCES]
    assert stale.figures == {"partitions_changed": 1, "changed_ranges": [str(DAY)]}
    assert str(DAY) in stale.summary
    _assert_promotion_refused(generated, plan, published, BUILT_FROM_CURRENT_SOURCES)


def test_late_refund_marks_both_its_day_and_its_orders_day_stale(generated):
    """A refund arriving after the build changes its own day and the day of its order."""
    plan = windowed("daily_revenue")
    order_id, order_day = generated.execute(
        f"SELECT order_id, CAST(order_ts AS DATE) FROM ({LATEST}) "
        "WHERE CAST(order_ts AS DATE) = ? AND order_id IN ("
        "  SELECT order_id FROM raw.orders GROUP BY order_id HAVING count(*) = 1"
        ") AND order_id NOT IN (SELECT order_id FROM raw.refunds) ORDER BY order_id LIMIT 1",
        [dt.date(2024, 1, 20)],
    ).fetchone()
    _build_clean_and_publish(generated, plan)

    generated.execute(
        "INSERT INTO raw.refunds VALUES (77000000011, ?, ?, 1.00, ?)",
        [order_id, dt.datetime(2024, 3, 10, 9), dt.datetime(2024, 3, 10, 10)],
    )
    stale = by_name(run_window_checks(generated, plan, "v2"))[BUILT_FROM_CURRENT_SOURCES]

    assert not stale.passed
    assert stale.figures["changed_ranges"] == [str(order_day), "2024-03-10"]


def test_bumped_code_version_fails_code_current_for_every_day(generated, tmp_path):
    shipped = windowed("daily_revenue")
    published = _build_clean_and_publish(generated, shipped)
    bumped = copy_plan(
        tmp_path,
        "daily_revenue",
        lambda folder: replace_once(
            folder / "plan.yaml", "code_version: v2-2", "code_version: v2-3"
        ),
    )

    checks = run_window_checks(generated, bumped, "v2")

    assert blocking_failures(checks) == {BUILT_WITH_CURRENT_CODE}
    stale = by_name(checks)[BUILT_WITH_CURRENT_CODE]
    assert stale.figures == {"partitions_stale_code": WINDOW_DAYS, "current_code_version": "v2-3"}
    assert "v2-2" in stale.summary and "v2-3" in stale.summary
    _assert_promotion_refused(generated, bumped, published, BUILT_WITH_CURRENT_CODE)
