"""Safety of publishing (issue 15), on real DuckDB files and real Dagster instances.

1. ``analytics.<plan>`` shows exactly the window the gate passed, not a failing day built
   after it (promote, rollback and ``ensure_view`` alike).
2. A promotion whose commit went through is a successful run: a cutover summary that cannot be
   written after the commit is a warning, and ``regenerate_summary`` writes it from the log;
   a reports folder that cannot be used is found before the commit, and nothing changes.
3. A rollback re-checks the evidence of the version it goes back to, and refuses (naming the
   days and checks) unless forced with a reason, which the log records.
4. An approval is recorded only from one of the plan's approvers; anyone else is recorded as the
   person who launched the promotion.

Expected days, rows and texts are worked out here by hand or with separate plain queries on
the tables; the log is read back with ``history``.
"""

import datetime as dt
import gc
import logging
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.cutover import cutover_summary, regenerate_summary, summary_name
from backfill_assets.example.generator import generate
from backfill_assets.plan import Plan
from backfill_assets.publish import (
    PublishError,
    ensure_view,
    history,
    promote,
    published_version,
    rollback,
)
from backfill_assets.window_checks import (
    BUILT_FROM_CURRENT_SOURCES,
    BUILT_WITH_CURRENT_CODE,
    EVERY_PARTITION_PASSED_CHECKS,
    WINDOW_IS_COMPLETE,
)
from backfill_assets_tests.helpers import load_definitions, plan_named

pytestmark = pytest.mark.reliability

JAN_1 = dt.date(2024, 1, 1)
FEB_10 = dt.date(2024, 2, 10)
FEB_29 = dt.date(2024, 2, 29)
MAR_1 = dt.date(2024, 3, 1)
MAR_31 = dt.date(2024, 3, 31)
ONE_DAY = dt.timedelta(days=1)
MALLORY = "mallory@evil.example"
CRM_APPROVER = "crm-analytics-lead@example.com"  # approvers: of plans/fct_orders/plan.yaml
FINANCE_APPROVER = "head-of-finance@example.com"  # approvers: of plans/daily_revenue/plan.yaml
ONCALL = "oncall@example.com"
FCT_KEY = dg.AssetKey(["analytics", "fct_orders"])
# The shipped window of both plans, which the code location's jobs gate.
SHIPPED_FIRST, SHIPPED_LAST = dt.date(2024, 1, 1), dt.date(2025, 12, 31)


# --------------------------------------------------------------------------------------------
# helpers


def checksum(conn: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    """Row count and md5 of every row rendered as text, in a fixed order (any FROM clause)."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {relation} AS t"
    ).fetchone()


def between(table: str, first: dt.date, last: dt.date) -> str:
    """The rows of a model table whose order_date is first..last (both inclusive)."""
    return f"(SELECT * FROM {table} WHERE order_date BETWEEN DATE '{first}' AND DATE '{last}')"


def view_sql(conn: duckdb.DuckDBPyConnection, name: str) -> str | None:
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
        [name],
    ).fetchone()
    return row[0] if row else None


def log_rows(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute("SELECT * FROM backfill.promotions ORDER BY rowid").fetchall()


def state(conn: duckdb.DuckDBPyConnection, name: str) -> tuple:
    """What a user of ``analytics.<name>`` could notice: definition, contents, the log."""
    return view_sql(conn, name), checksum(conn, f"analytics.{name}"), log_rows(conn)


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def null_regions(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """Every order of ``day`` loses its region: fct_orders allows 10% NULL regions per day.
    The day's rows are kept aside for ``restore_day``."""
    conn.execute(
        "CREATE TABLE main.day_backup AS SELECT * FROM raw.orders WHERE CAST(order_ts AS DATE) = ?",
        [day],
    )
    conn.execute("UPDATE raw.orders SET region = NULL WHERE CAST(order_ts AS DATE) = ?", [day])


def restore_day(conn: duckdb.DuckDBPyConnection, day: dt.date) -> None:
    """The day's source rows exactly as before ``null_regions``."""
    conn.execute("DELETE FROM raw.orders WHERE CAST(order_ts AS DATE) = ?", [day])
    conn.execute("INSERT INTO raw.orders SELECT * FROM main.day_backup")
    conn.execute("DROP TABLE main.day_backup")


# --------------------------------------------------------------------------------------------
# 1. the view shows exactly the gated window


def assert_view_is_the_window(
    conn: duckdb.DuckDBPyConnection, version: str, first: dt.date, last: dt.date
) -> None:
    table = f"models.fct_orders__{version}"
    shown = [
        d
        for (d,) in conn.execute(
            "SELECT DISTINCT order_date FROM analytics.fct_orders ORDER BY 1"
        ).fetchall()
    ]
    assert shown == days(first, last)
    assert checksum(conn, "analytics.fct_orders") == checksum(conn, between(table, first, last))


def test_a_failing_day_built_after_the_window_is_not_served(generated, fct_orders):
    plan = fct_orders.with_window(JAN_1, FEB_29)
    assert len(days(JAN_1, FEB_29)) == 31 + 29
    # 2024-03-01, the day after the window, is built for both versions and fails its checks:
    # every row has a NULL region where the plan allows 10%.
    null_regions(generated, MAR_1)
    for version in ("legacy", "v2"):
        build_window(generated, plan, version, JAN_1, MAR_1 + ONE_DAY, "build")
        rows, nulls = generated.execute(
            f"SELECT count(*), count(*) - count(region) FROM models.fct_orders__{version} "
            "WHERE order_date = ?",
            [MAR_1],
        ).fetchone()
        assert rows > 0 and nulls == rows  # the failing day is in the table
        assert generated.execute(
            "SELECT checks_passed FROM backfill.partition_evidence "
            "WHERE model = 'fct_orders' AND version = ? AND partition_start = ?",
            [version, MAR_1],
        ).fetchall() == [(False,)]

    ensure_view(generated, plan)  # before any promotion: the baseline, over the window
    assert_view_is_the_window(generated, "legacy", JAN_1, FEB_29)

    promote(generated, plan, "v2", "", "window only", "run-promote")
    assert published_version(generated, plan) == "v2"
    assert_view_is_the_window(generated, "v2", JAN_1, FEB_29)
    assert generated.execute(
        "SELECT count(*) FROM analytics.fct_orders WHERE order_date >= ?", [MAR_1]
    ).fetchone() == (0,)

    rollback(generated, plan, ONCALL, "back to legacy", "run-rollback")
    assert_view_is_the_window(generated, "legacy", JAN_1, FEB_29)

    promote(generated, plan, "v2", "", "again", "run-again")
    generated.execute("DROP VIEW analytics.fct_orders")
    assert ensure_view(generated, plan) == "v2"
    assert_view_is_the_window(generated, "v2", JAN_1, FEB_29)

    # The plan file's window grows afterwards: a re-created view still shows what was gated.
    generated.execute("DROP VIEW analytics.fct_orders")
    assert ensure_view(generated, fct_orders.with_window(JAN_1, MAR_31)) == "v2"
    assert_view_is_the_window(generated, "v2", JAN_1, FEB_29)


# --------------------------------------------------------------------------------------------
# 3. rollback is gated (plain functions)


@pytest.fixture
def q1(fct_orders: Plan) -> Plan:
    return fct_orders.with_window(JAN_1, MAR_31)


@pytest.fixture
def promoted(generated, q1) -> duckdb.DuckDBPyConnection:
    """fct_orders legacy and v2 built over Q1 2024, v2 promoted (low risk: no approval)."""
    for version in ("legacy", "v2"):
        build_window(generated, q1, version, JAN_1, MAR_31 + ONE_DAY, "build")
    ensure_view(generated, q1)
    promote(generated, q1, "v2", "", "Q1", "run-promote")
    return generated


def break_legacy_day(conn: duckdb.DuckDBPyConnection, plan: Plan, day: dt.date) -> None:
    """A late source change rebuilt into legacy (not published): ``day`` now fails there."""
    null_regions(conn, day)
    build_window(conn, plan, "legacy", day, day + ONE_DAY, "legacy-repair")


def test_a_rollback_to_a_version_with_a_failing_day_is_refused_naming_it(promoted, q1):
    break_legacy_day(promoted, q1, FEB_10)
    before = state(promoted, "fct_orders")
    with pytest.raises(PublishError) as info:
        rollback(promoted, q1, ONCALL, "dashboard looks off", "run-rollback")
    message = str(info.value)
    for named in (
        "legacy",
        EVERY_PARTITION_PASSED_CHECKS,
        "null_rates_within_limits",
        "2024-02-10",
    ):
        assert named in message, message
    assert "2024-02-09" not in message and "2024-02-11" not in message
    assert "force" in message  # says how to go through anyway
    assert state(promoted, "fct_orders") == before
    assert published_version(promoted, q1) == "v2"

    # Positive control: the same rollback after the day is fixed goes through.
    restore_day(promoted, FEB_10)
    build_window(promoted, q1, "legacy", FEB_10, FEB_10 + ONE_DAY, "legacy-fixed")
    entry = rollback(promoted, q1, ONCALL, "dashboard looks off", "run-rollback")
    assert entry.version == "legacy" and entry.evidence["forced"] is False


def test_a_forced_rollback_goes_through_and_the_log_says_forced(promoted, q1):
    break_legacy_day(promoted, q1, FEB_10)
    before = state(promoted, "fct_orders")
    with pytest.raises(PublishError, match="reason"):
        rollback(promoted, q1, ONCALL, "  ", "run-forced", force=True)
    assert state(promoted, "fct_orders") == before

    entry = rollback(
        promoted, q1, ONCALL, "v2 totals are wrong, users must leave it", "run-f", force=True
    )
    assert published_version(promoted, q1) == "legacy"
    assert checksum(promoted, "analytics.fct_orders") == checksum(
        promoted, between("models.fct_orders__legacy", JAN_1, MAR_31)
    )
    [last] = history(promoted, q1)[-1:]
    assert (last.action, last.version, last.actor, last.run_id) == (
        "rollback",
        "legacy",
        ONCALL,
        "run-f",
    )
    assert last.reason == "v2 totals are wrong, users must leave it"
    assert last.evidence["forced"] is True
    failing = last.evidence["failing_checks"]
    assert list(failing) == [EVERY_PARTITION_PASSED_CHECKS]
    assert "2024-02-10" in failing[EVERY_PARTITION_PASSED_CHECKS]
    assert entry == last


def test_promote_rollback_promote_still_works_and_records_the_rollback_checks(promoted, q1):
    entry = rollback(promoted, q1, ONCALL, "questions", "run-rollback")
    assert published_version(promoted, q1) == "legacy"
    assert entry.evidence["forced"] is False and entry.evidence["failing_checks"] == {}
    assert set(entry.evidence["checks"]) == {
        WINDOW_IS_COMPLETE,
        EVERY_PARTITION_PASSED_CHECKS,
        BUILT_WITH_CURRENT_CODE,
        BUILT_FROM_CURRENT_SOURCES,
    }
    assert all(c["passed"] for c in entry.evidence["checks"].values())
    promote(promoted, q1, "v2", "", "answered", "run-again")
    assert published_version(promoted, q1) == "v2"
    assert [(e.action, e.version) for e in history(promoted, q1)] == [
        ("promote", "v2"),
        ("rollback", "legacy"),
        ("promote", "v2"),
    ]


# --------------------------------------------------------------------------------------------
# 4. approvals only from approvers (plain functions)


def test_a_low_risk_promotion_by_a_non_approver_records_who_launched_it(generated, q1):
    assert q1.spec.risk == "low" and MALLORY not in q1.spec.approvers
    for version in ("legacy", "v2"):
        build_window(generated, q1, version, JAN_1, MAR_31 + ONE_DAY, "build")
    ensure_view(generated, q1)

    gate, entry = promote(generated, q1, "v2", MALLORY, "hi", "run-mallory")
    [logged] = history(generated, q1)
    assert logged.actor == f"launched by {MALLORY} (not an approver)"
    assert logged.evidence["approved_by"] is None
    assert logged.evidence["launched_by"] == MALLORY
    summary = cutover_summary(q1, gate, entry)
    assert f"**Approved by:** not required (risk: low); launched by {MALLORY}" in summary
    assert f"Approved by:** {MALLORY}" not in summary

    # Positive control: one of the plan's approvers is recorded as the approver.
    assert CRM_APPROVER in q1.spec.approvers
    rollback(generated, q1, ONCALL, "redo with an approver", "run-r")
    gate, entry = promote(generated, q1, "v2", CRM_APPROVER, "approved", "run-approved")
    logged = history(generated, q1)[-1]
    assert logged.actor == CRM_APPROVER
    assert logged.evidence["approved_by"] == CRM_APPROVER
    assert logged.evidence["launched_by"] is None
    assert f"**Approved by:** {CRM_APPROVER}\n" in cutover_summary(q1, gate, entry)


def test_a_high_risk_promotion_by_a_non_approver_is_still_refused(generated, daily_revenue):
    plan = daily_revenue.with_window(JAN_1, MAR_31)
    assert plan.spec.risk == "high" and FINANCE_APPROVER in plan.spec.approvers
    for version in ("legacy", "v2"):
        build_window(generated, plan, version, JAN_1, MAR_31 + ONE_DAY, "build")
    ensure_view(generated, plan)
    before = state(generated, "daily_revenue")
    with pytest.raises(PublishError) as info:
        promote(generated, plan, "v2", MALLORY, "hi", "run-mallory")
    assert "approval" in str(info.value) and MALLORY in str(info.value)
    assert state(generated, "daily_revenue") == before

    gate, entry = promote(generated, plan, "v2", FINANCE_APPROVER, "signed", "run-ok")
    assert history(generated, plan)[-1].actor == FINANCE_APPROVER
    assert f"**Approved by:** {FINANCE_APPROVER}\n" in cutover_summary(plan, gate, entry)


# --------------------------------------------------------------------------------------------
# 2 and 3 through the code location's jobs, in-process on a real instance


@pytest.fixture(scope="module")
def shipped_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fct_orders legacy and v2 built over the shipped window (two years, 60 orders a day),
    the view on legacy; closed so each test can copy it."""
    path = tmp_path_factory.mktemp("safety_base") / "warehouse.duckdb"
    plan = plan_named("fct_orders")
    assert (plan.spec.window.start, plan.spec.window.end) == (SHIPPED_FIRST, SHIPPED_LAST)
    with duckdb.connect(str(path)) as conn:
        generate(conn, SHIPPED_FIRST, SHIPPED_LAST, orders_per_day=60)
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, SHIPPED_FIRST, SHIPPED_LAST + ONE_DAY, "build")
        ensure_view(conn, plan)
    return path


@pytest.fixture
def warehouse(shipped_base: Path, warehouse_file: Path) -> Path:
    """A private copy at the path BACKFILL_WAREHOUSE names; reports go next to it."""
    shutil.copyfile(shipped_base, warehouse_file)
    return warehouse_file


@pytest.fixture
def defs(warehouse: Path) -> dg.Definitions:
    """The code location, loaded after BACKFILL_WAREHOUSE points at the test's file."""
    loaded = load_definitions()
    assert loaded.resources["warehouse"].database == str(warehouse)
    return loaded


@pytest.fixture
def reports(warehouse: Path) -> Path:
    return warehouse.parent / "reports"


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    """A plain connection; collect first, as a failed op's connection is freed by the GC."""
    gc.collect()
    return duckdb.connect(str(path))


def run_job(defs: dg.Definitions, instance, job: str, op: str, **config):
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        run_config={
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
            "ops": {op: {"config": config}},
        },
        raise_on_error=False,
    )


def materializations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == FCT_KEY
    ]


def warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if entry.level == logging.WARNING and not entry.is_dagster_event
    ]


def test_a_reports_folder_that_cannot_be_created_refuses_before_the_commit(
    warehouse, defs, instance, reports
):
    reports.write_text("a file where the reports folder should be")
    with connect(warehouse) as conn:
        before = state(conn, "fct_orders")
    refused = run_job(
        defs, instance, "promote_fct_orders_job", "promote_fct_orders", version="v2", note="go"
    )
    assert not refused.success
    description = refused.failure_data_for_node("promote_fct_orders").user_failure_data.description
    assert str(reports / "fct_orders") in description and "nothing changed" in description
    assert materializations(refused) == []
    with connect(warehouse) as conn:
        assert state(conn, "fct_orders") == before

    # Positive control: with the folder usable, the same run promotes and writes the summary.
    reports.unlink()
    promoted = run_job(
        defs, instance, "promote_fct_orders_job", "promote_fct_orders", version="v2", note="go"
    )
    assert promoted.success
    [materialization] = materializations(promoted)
    [written] = sorted((reports / "fct_orders").glob("cutover-*.md"))
    assert written.read_text() == materialization.metadata["cutover_summary"].value


def test_a_summary_that_cannot_be_written_after_the_commit_is_a_warning_then_regenerated(
    warehouse, defs, instance, reports
):
    plan = plan_named("fct_orders")
    # The folder is fine (the check before the commit passes), but every file name a summary
    # could get in the next ten minutes is taken by a directory: the write after the commit
    # fails, as it would on a full disk.
    folder = reports / "fct_orders"
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    squatted = [folder / summary_name("v2", now + dt.timedelta(seconds=s)) for s in range(-5, 600)]
    for path in squatted:
        path.mkdir(parents=True)
    with connect(warehouse) as conn:
        v2 = checksum(conn, "models.fct_orders__v2")

    result = run_job(
        defs,
        instance,
        "promote_fct_orders_job",
        "promote_fct_orders",
        version="v2",
        approved_by=MALLORY,
        note="restated",
    )
    assert result.success
    with connect(warehouse) as conn:
        assert checksum(conn, "analytics.fct_orders") == v2  # the view moved
        [logged] = history(conn, plan)
    assert (logged.action, logged.version, logged.run_id) == ("promote", "v2", result.run_id)
    [materialization] = materializations(result)
    assert materialization.metadata["published_version"].value == "v2"
    not_written = materialization.metadata["cutover_summary_not_written"].value
    assert "backfill-assets cutover fct_orders" in not_written
    [warning] = [w for w in warnings(instance, result.run_id) if "not written" in w]
    assert "backfill-assets cutover fct_orders" in warning
    assert [p for p in folder.iterdir() if not p.is_dir()] == []  # nothing half-written
    summary = materialization.metadata["cutover_summary"].value
    assert f"launched by {MALLORY}" in summary  # item 4 through the job as well

    for path in squatted:
        path.rmdir()
    with connect(warehouse) as conn:
        path = regenerate_summary(conn, plan, reports)
    assert path.parent == folder and path in squatted  # the name the run meant to write
    assert path.read_text() == summary


def test_rollback_job_refuses_a_failing_target_unless_forced_with_a_reason(
    warehouse, defs, instance
):
    plan = plan_named("fct_orders")
    promoted = run_job(
        defs, instance, "promote_fct_orders_job", "promote_fct_orders", version="v2", note="go"
    )
    assert promoted.success
    with connect(warehouse) as conn:
        break_legacy_day(conn, plan, FEB_10)
        before = state(conn, "fct_orders")

    refused = run_job(
        defs,
        instance,
        "rollback_fct_orders_job",
        "rollback_fct_orders",
        by=ONCALL,
        reason="looks off",
    )
    assert not refused.success
    description = refused.failure_data_for_node("rollback_fct_orders").user_failure_data.description
    assert "2024-02-10" in description and EVERY_PARTITION_PASSED_CHECKS in description
    assert materializations(refused) == []
    with connect(warehouse) as conn:
        assert state(conn, "fct_orders") == before

    forced = run_job(
        defs,
        instance,
        "rollback_fct_orders_job",
        "rollback_fct_orders",
        by=ONCALL,
        reason="users must leave v2 now",
        force=True,
    )
    assert forced.success
    [materialization] = materializations(forced)
    assert materialization.metadata["published_version"].value == "legacy"
    assert materialization.metadata["forced"].value is True
    with connect(warehouse) as conn:
        last = history(conn, plan)[-1]
        assert checksum(conn, "analytics.fct_orders") == checksum(conn, "models.fct_orders__legacy")
    assert (last.action, last.version, last.evidence["forced"]) == ("rollback", "legacy", True)
    assert "2024-02-10" in last.evidence["failing_checks"][EVERY_PARTITION_PASSED_CHECKS]
    assert any("forced" in w for w in warnings(instance, forced.run_id))
