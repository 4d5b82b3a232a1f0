"""The model assets and window checks as Dagster runs them, on a real instance and DuckDB file.

A ranged run (one run for 31 daily partitions, as ``BackfillPolicy.multi_run`` launches it)
builds ``models/fct_orders__v2`` for January 2024 and reports its per-day check
(``partition_checks_passed``, whose metadata names the failed sub-checks) once per day. The
window checks of ``analytics/fct_orders`` run as their own job over the plan's whole window.

The code location reads ``BACKFILL_WAREHOUSE`` when its definitions are built, so every test
builds them after the ``warehouse_file`` fixture has set it, and closes its own DuckDB connection
before a run opens the file.
"""

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component.models import PARTITION_CHECKS_PASSED, range_tags
from backfill_assets.example.generator import generate
from backfill_assets.partition_checks import KNOWN_RECORDS_MATCH, NULL_RATES_WITHIN_LIMITS
from backfill_assets.window_checks import window_check_names
from backfill_assets_tests.helpers import load_definitions, plan_named

V2_FCT_ORDERS = dg.AssetKey(["models", "fct_orders__v2"])
PUBLISHED_FCT_ORDERS = dg.AssetKey(["analytics", "fct_orders"])
BAD_DAY = "2024-01-17"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(autouse=True)
def _dagster_home_folder(tmp_path: Path) -> None:
    """conftest's ``instance`` fixture writes into tmp_path/dagster_home without creating it."""
    (tmp_path / "dagster_home").mkdir(exist_ok=True)


def days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def seed_three_months(warehouse_file: Path, plant_null_region_on: str | None = None) -> None:
    with duckdb.connect(str(warehouse_file)) as conn:
        generate(conn, dt.date(2024, 1, 1), dt.date(2024, 3, 31), orders_per_day=60, seed=7)
        if plant_null_region_on:
            conn.execute(
                "UPDATE raw.orders SET region = NULL WHERE CAST(order_ts AS DATE) = ?",
                [dt.date.fromisoformat(plant_null_region_on)],
            )


def run_v2_fct_orders(instance: dg.DagsterInstance, first: dt.date, last: dt.date):
    defs = load_definitions()
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[V2_FCT_ORDERS],
        tags=range_tags(first, last),
        run_config=QUIET,
        raise_on_error=False,
    )


def check_evaluations(result) -> list:
    return [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def evidence(warehouse_file: Path, first: str, last: str) -> dict[str, tuple[bool, dict]]:
    with duckdb.connect(str(warehouse_file)) as conn:
        rows = conn.execute(
            "SELECT CAST(partition_start::DATE AS VARCHAR), checks_passed, checks "
            "FROM backfill.partition_evidence "
            "WHERE model = 'fct_orders' AND version = 'v2' AND partition_start BETWEEN ? AND ? "
            "ORDER BY partition_start",
            [first, last],
        ).fetchall()
    return {day: (passed, json.loads(checks)) for day, passed, checks in rows}


def test_ranged_run_with_one_bad_day_fails_the_chunk_and_records_every_partition(
    instance, warehouse_file
):
    seed_three_months(warehouse_file, plant_null_region_on=BAD_DAY)
    january = days(dt.date(2024, 1, 1), dt.date(2024, 1, 31))

    result = run_v2_fct_orders(instance, dt.date(2024, 1, 1), dt.date(2024, 1, 31))

    # The blocking check fails the run ...
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    assert PARTITION_CHECKS_PASSED in failures[0].step_failure_data.error.message
    # ... naming the bad day and its failed sub-check. All 31 days were written (evidence),
    # but Dagster records none as materialized: the UI's data (planned, never materialized, in
    # a failed run) shows the chunk's days failed, and "re-execute from failure" rebuilds it.
    assert f"{BAD_DAY}: {NULL_RATES_WITHIN_LIMITS}" in failures[0].step_failure_data.error.message
    assert instance.get_materialized_partitions(V2_FCT_ORDERS) == set()
    attempts = instance.event_log_storage.get_latest_asset_partition_materialization_attempts_without_materializations(  # noqa: E501
        V2_FCT_ORDERS
    )
    assert set(attempts) == set(january)
    assert {instance.get_run_by_id(run_id).status for run_id, _ in attempts.values()} == {
        dg.DagsterRunStatus.FAILURE
    }
    stored = evidence(warehouse_file, january[0], january[-1])
    assert list(stored) == january
    assert [day for day, (passed, _) in stored.items() if not passed] == [BAD_DAY]
    assert stored[BAD_DAY][1][NULL_RATES_WITHIN_LIMITS]["over_limit"].keys() == {"region"}

    # The check reports every day once, each result on its own partition.
    evaluations = check_evaluations(result)
    assert {e.check_name for e in evaluations} == {PARTITION_CHECKS_PASSED}
    assert sorted(e.partition for e in evaluations) == january
    assert all(e.asset_key == V2_FCT_ORDERS and e.blocking for e in evaluations)
    failed = [e for e in evaluations if not e.passed]
    assert [e.partition for e in failed] == [BAD_DAY]
    (bad,) = failed
    # Its metadata says which sub-check failed and which column is over which limit.
    assert bad.metadata["failed_checks"].value == NULL_RATES_WITHIN_LIMITS
    over_limit = bad.metadata[NULL_RATES_WITHIN_LIMITS].value["over_limit"]
    assert set(over_limit) == {"region"}
    assert over_limit["region"]["limit"] == 0.1
    assert over_limit["region"]["rate"] == 1.0
    assert bad.metadata["rows"].value == over_limit["region"]["nulls"] > 0
    # A passing day says so, with its row count and no failure details.
    good = next(e for e in evaluations if e.partition == "2024-01-16")
    assert good.passed
    assert good.metadata["failed_checks"].value == "none"
    assert good.metadata["rows"].value > 0
    assert NULL_RATES_WITHIN_LIMITS not in good.metadata


def test_ranged_run_of_a_clean_month_passes_every_check_on_every_day(instance, warehouse_file):
    seed_three_months(warehouse_file, plant_null_region_on=BAD_DAY)  # a January day, not March
    march = days(dt.date(2024, 3, 1), dt.date(2024, 3, 31))

    result = run_v2_fct_orders(instance, dt.date(2024, 3, 1), dt.date(2024, 3, 31))

    assert result.success
    evaluations = check_evaluations(result)
    assert Counter((e.check_name, e.passed) for e in evaluations) == {
        (PARTITION_CHECKS_PASSED, True): 31
    }
    assert sorted(e.partition for e in evaluations) == march
    assert instance.get_materialized_partitions(V2_FCT_ORDERS) == set(march)
    stored = evidence(warehouse_file, march[0], march[-1])
    assert list(stored) == march
    assert all(passed for passed, _ in stored.values())
    # The pilot order 9000000006, hand-verified on 2024-03-01, was really checked that day.
    assert stored["2024-03-01"][1][KNOWN_RECORDS_MATCH]["records_checked"] == 1
    assert stored["2024-03-02"][1][KNOWN_RECORDS_MATCH]["records_checked"] == 0


def test_window_checks_job_reports_each_window_check_once_on_the_published_asset(
    instance, warehouse_file
):
    plan = plan_named("fct_orders")
    window = plan.spec.window
    with duckdb.connect(str(warehouse_file)) as conn:
        generate(conn, window.start, window.end, orders_per_day=200, seed=5)
        for version in plan.version_names:
            build_window(
                conn, plan, version, window.start, window.end + dt.timedelta(days=1), "run-1"
            )
    defs = load_definitions()
    job = defs.resolve_job_def("window_checks_fct_orders_job")

    result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)

    assert result.success
    evaluations = check_evaluations(result)
    assert [e.check_name for e in evaluations] == window_check_names(plan)
    assert all(e.asset_key == PUBLISHED_FCT_ORDERS for e in evaluations)
    assert all(e.partition is None for e in evaluations)
    assert {e.check_name: e.passed for e in evaluations} == dict.fromkeys(
        window_check_names(plan), True
    )
    complete = next(e for e in evaluations if e.check_name == "window_is_complete")
    assert complete.metadata["partitions_in_window"].value == plan.window_size == 731
    assert "731 days" in complete.metadata["summary"].value

    # Positive control: a customer whose history disappears after the build is reported.
    with duckdb.connect(str(warehouse_file)) as conn:
        (customer,) = conn.execute(
            "SELECT customer_id FROM models.fct_orders__v2 "
            "WHERE order_date = DATE '2025-06-15' ORDER BY order_id LIMIT 1"
        ).fetchone()
        orders, first_day, first_key = conn.execute(
            "SELECT count(*), min(order_date), "
            "arg_min(CAST(order_id AS VARCHAR), (order_date, CAST(order_id AS VARCHAR))) "
            "FROM models.fct_orders__v2 WHERE customer_id = ?",
            [customer],
        ).fetchone()
        conn.execute("DELETE FROM raw.customers WHERE customer_id = ?", [customer])

    rerun = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)

    verdicts = {e.check_name: e for e in check_evaluations(rerun)}
    unknown = verdicts["customer_known"]
    assert not unknown.passed
    assert unknown.metadata["offending_rows"].value == orders
    assert unknown.metadata["first_keys"].value[0] == first_key
    assert unknown.metadata["first_days"].value[0] == str(first_day)
    assert not verdicts["built_from_current_sources"].passed
    assert verdicts["window_is_complete"].passed


def test_warn_only_window_check_fails_with_warn_severity_without_failing_the_job(
    instance, warehouse_file
):
    plan = plan_named("daily_revenue")
    window = plan.spec.window
    with duckdb.connect(str(warehouse_file)) as conn:
        generate(conn, window.start, window.end, orders_per_day=15, seed=3)
        orphans = conn.execute(
            "SELECT count(*) FROM raw.refunds "
            "WHERE order_id NOT IN (SELECT order_id FROM raw.orders)"
        ).fetchone()[0]
        for version in plan.version_names:
            build_window(
                conn, plan, version, window.start, window.end + dt.timedelta(days=1), "run-1"
            )
    assert orphans > 0
    job = load_definitions().resolve_job_def("window_checks_daily_revenue_job")

    result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)

    assert result.success
    verdicts = {e.check_name: e for e in check_evaluations(result)}
    assert list(verdicts) == window_check_names(plan)
    warn = verdicts["refund_orders_exist"]
    assert not warn.passed
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["offending_rows"].value == orphans
    # Freshness only warns too; it passes here (the built days reach the newest source day).
    fresh = verdicts["is_fresh"]
    assert fresh.passed and fresh.severity == dg.AssetCheckSeverity.WARN
    others = {n: v for n, v in verdicts.items() if n not in ("refund_orders_exist", "is_fresh")}
    assert all(v.passed and v.severity == dg.AssetCheckSeverity.ERROR for v in others.values())
    # The reconciliation travels with its check as a table and a readable summary.
    reconciliation = verdicts["reconciles_with_baseline"].metadata
    assert len(reconciliation["reconciliation"].value.records) > 0
    assert "PASSED" in reconciliation["reconciliation_summary"].value
