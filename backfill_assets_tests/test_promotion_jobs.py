"""The promotion and rollback jobs of the code location, run in-process on a real instance.

The warehouse is a DuckDB file under tmp_path holding generated data for the shipped window
(2024-01-01..2025-12-31) with both versions of both plans built over all of it. The definitions
are loaded after ``BACKFILL_WAREHOUSE`` points at that file, as ``dagster dev`` would load them.
"""

import datetime as dt
import gc
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets import settings
from backfill_assets.build import build_window
from backfill_assets.example.generator import generate
from backfill_assets.publish import ensure_view, history
from backfill_assets_tests.helpers import load_definitions, plan_named, shipped_plans

FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2025, 12, 31)
# 60 orders a day rather than 10: at 10 a day a single NULL region is already more than the
# 10% fct_orders allows, so the gate rightly refuses several days of generated data.
ORDERS_PER_DAY = 60
APPROVER = "head-of-finance@example.com"  # an approver in plans/daily_revenue/plan.yaml
FCT_KEY = dg.AssetKey(["analytics", "fct_orders"])
REVENUE_KEY = dg.AssetKey(["analytics", "daily_revenue"])


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A plain connection, as the CLI opens one.

    ``gc.collect()`` first: a failed promote/rollback op leaks its DuckDB connection until the
    garbage collector runs (see test_a_refused_job_leaves_no_connection_open below), and that
    connection's different config would make this one fail.
    """
    gc.collect()
    return duckdb.connect(str(path))


def checksum(path: Path, table: str) -> tuple[int, str]:
    """Row count and md5 of every row rendered as text, in a fixed order (own connection)."""
    with connect(path) as conn:
        return conn.execute(
            "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
            f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
        ).fetchone()


def state(path: Path, name: str) -> tuple:
    """What a user of ``analytics.<name>`` could notice: definition, contents, the log."""
    with connect(path) as conn:
        view = conn.execute(
            "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
            [name],
        ).fetchone()
        log = conn.execute("SELECT * FROM backfill.promotions ORDER BY rowid").fetchall()
    return view, checksum(path, f"analytics.{name}"), log


def ops_config(op: str, **config: str) -> dict:
    return {
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {op: {"config": config}},
    }


def materializations(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list:
    return [
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == key
    ]


@pytest.fixture
def warehouse(warehouse_file: Path) -> Iterator[Path]:
    """Both versions of both shipped plans built over the whole shipped window; views created."""
    with duckdb.connect(str(warehouse_file)) as conn:
        generate(conn, FIRST, LAST, orders_per_day=ORDERS_PER_DAY)
        for plan in shipped_plans():
            assert (plan.spec.window.start, plan.spec.window.end) == (FIRST, LAST)
            for version in ("legacy", "v2"):
                build_window(conn, plan, version, FIRST, LAST + dt.timedelta(days=1), "build")
            ensure_view(conn, plan)
    yield warehouse_file  # no connection is left open: the jobs open their own


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real, SQLite-backed instance. (Overrides conftest's, which passes instance_for_test a
    temp_dir that does not exist yet and so fails with FileNotFoundError on dagster.yaml.)"""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def defs(warehouse_file: Path) -> dg.Definitions:
    """Loaded after BACKFILL_WAREHOUSE points at the test's file."""
    return load_definitions()


def config_fields(job: dg.JobDefinition, op: str) -> dict[str, bool]:
    """The op's config fields and whether each is required."""
    schema = job.graph.node_named(op).definition.config_schema.config_type
    return {name: field.is_required for name, field in schema.fields.items()}


def test_promote_and_rollback_jobs_exist_with_their_config(defs):
    for plan in shipped_plans():
        promote_job = defs.resolve_job_def(f"promote_{plan.name}_job")
        assert config_fields(promote_job, f"promote_{plan.name}") == {
            "version": True,
            "approved_by": False,
            "note": False,
        }
        rollback_job = defs.resolve_job_def(f"rollback_{plan.name}_job")
        assert config_fields(rollback_job, f"rollback_{plan.name}") == {
            "by": True,
            "reason": True,
            "force": False,
            "to_version": False,
            "to_log_row": False,
        }


def test_rollback_job_without_a_reason_is_rejected_before_it_runs(defs, instance):
    job = defs.resolve_job_def("rollback_fct_orders_job")
    with pytest.raises(dg.DagsterInvalidConfigError, match="reason"):
        job.execute_in_process(
            instance=instance,
            run_config=ops_config("rollback_fct_orders", by="oncall@example.com"),
            raise_on_error=False,
        )


def test_promote_then_rollback_fct_orders_through_the_jobs(warehouse, defs, instance):
    plan = plan_named("fct_orders")
    legacy = checksum(warehouse, "models.fct_orders__legacy")
    v2 = checksum(warehouse, "models.fct_orders__v2")
    assert legacy != v2
    assert checksum(warehouse, "analytics.fct_orders") == legacy
    rollback_job = defs.resolve_job_def("rollback_fct_orders_job")
    rollback_config = ops_config(
        "rollback_fct_orders", by="oncall@example.com", reason="churn model drifted"
    )

    # Nothing promoted yet: the rollback job fails and changes nothing.
    before = state(warehouse, "fct_orders")
    early = rollback_job.execute_in_process(
        instance=instance, run_config=rollback_config, raise_on_error=False
    )
    assert not early.success
    failure = early.failure_data_for_node("rollback_fct_orders").user_failure_data
    assert "nothing to roll back to" in failure.description
    assert state(warehouse, "fct_orders") == before

    # Promote: low risk, so no approval is needed.
    promoted = defs.resolve_job_def("promote_fct_orders_job").execute_in_process(
        instance=instance,
        run_config=ops_config("promote_fct_orders", version="v2", approved_by="", note="t"),
        raise_on_error=False,
    )
    assert promoted.success
    [materialization] = materializations(promoted, FCT_KEY)
    summary = materialization.metadata["cutover_summary"].value
    assert plan.version("v2").change in summary
    for consumer in plan.spec.downstream:
        assert consumer in summary
    assert "rollback_fct_orders_job" in summary
    assert materialization.metadata["published_version"].value == "v2"
    assert checksum(warehouse, "analytics.fct_orders") == v2
    assert settings.reports_dir() == warehouse.parent / "reports"
    files = sorted((warehouse.parent / "reports").rglob("cutover-*.md"))
    assert len(files) == 1 and files[0].read_text() == summary
    # The UI shows every window check of the promotion, all passed (the warn ones may not).
    evaluations = promoted.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {
        "window_is_complete",
        "every_partition_passed_checks",
        "built_with_current_code",
        "built_from_current_sources",
        "reconciles_with_baseline",
        "trend_has_no_unexplained_jumps",
        "enrichment_coverage_met",
    }
    assert all(e.passed for e in evaluations)
    latest = instance.get_latest_materialization_event(FCT_KEY).asset_materialization
    assert latest.metadata["published_version"].value == "v2"

    # Roll back.
    rolled = rollback_job.execute_in_process(
        instance=instance, run_config=rollback_config, raise_on_error=False
    )
    assert rolled.success
    assert checksum(warehouse, "analytics.fct_orders") == legacy
    latest = instance.get_latest_materialization_event(FCT_KEY).asset_materialization
    assert latest.metadata["published_version"].value == "legacy"
    with connect(warehouse) as conn:
        log = history(conn, plan)
    assert [(e.action, e.version, e.run_id) for e in log] == [
        ("promote", "v2", promoted.run_id),
        ("rollback", "legacy", rolled.run_id),
    ]
    assert log[0].reason == "t"
    assert (log[1].actor, log[1].reason) == ("oncall@example.com", "churn model drifted")


def test_promote_daily_revenue_job_needs_an_approval(warehouse, defs, instance):
    job = defs.resolve_job_def("promote_daily_revenue_job")
    v2 = checksum(warehouse, "models.daily_revenue__v2")
    before = state(warehouse, "daily_revenue")
    assert before[1] == checksum(warehouse, "models.daily_revenue__legacy")

    refused = job.execute_in_process(
        instance=instance,
        run_config=ops_config("promote_daily_revenue", version="v2", approved_by="", note="t"),
        raise_on_error=False,
    )
    assert not refused.success
    failure = refused.failure_data_for_node("promote_daily_revenue").user_failure_data
    assert "approval" in failure.description
    assert materializations(refused, REVENUE_KEY) == []
    assert state(warehouse, "daily_revenue") == before
    assert not (warehouse.parent / "reports" / "daily_revenue").exists()
    assert instance.get_latest_materialization_event(REVENUE_KEY) is None

    # The same run with an approver's name promotes.
    approved = job.execute_in_process(
        instance=instance,
        run_config=ops_config(
            "promote_daily_revenue", version="v2", approved_by=APPROVER, note="signed off"
        ),
        raise_on_error=False,
    )
    assert approved.success
    assert checksum(warehouse, "analytics.daily_revenue") == v2
    [materialization] = materializations(approved, REVENUE_KEY)
    assert APPROVER in materialization.metadata["cutover_summary"].value


def test_a_refused_job_leaves_no_connection_open(warehouse_file, defs, instance):
    job = defs.resolve_job_def("rollback_fct_orders_job")
    gc.disable()  # what is asserted is that the op closes it, not that the collector does
    try:
        result = job.execute_in_process(
            instance=instance,
            run_config=ops_config("rollback_fct_orders", by="oncall@example.com", reason="x"),
            raise_on_error=False,
        )
        assert not result.success
        with duckdb.connect(str(warehouse_file)) as conn:  # e.g. `backfill-assets status`
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        gc.enable()
