"""Rollback to any earlier published version (issue "Cutover the runbook's way", item 5), on real
DuckDB files and a real Dagster instance.

A copy of the shipped ``daily_revenue`` plan gets a third version, v3 (v2's logic, a new code
version), and all three are built over generated data for 2024-01-01..2024-03-31. The view then
moves legacy -> v2 -> v3 by promotion, and back by rollback: to the version the last promotion
replaced (the default), to a version named by name, and to the version a row of the log
published. A target whose evidence now fails is refused with its failing partitions unless
forced with a reason, which the log keeps.

Expected contents are the model tables' own rows; expected failing days are found with a plain
query on the table.
"""

import datetime as dt
import gc
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from backfill_assets.build import build_window
from backfill_assets.catalog import SHIPPED_DEFS
from backfill_assets.component import plan_definitions
from backfill_assets.component.sensors import LateDataPolicy
from backfill_assets.downstream import DOWNSTREAM_QUERIES_WORK
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import (
    BY_LOG_ROW,
    BY_VERSION,
    LATEST_PROMOTION,
    PublishError,
    ensure_view,
    history,
    promote,
    published_version,
    rollback,
)
from backfill_assets.window_checks import EVERY_PARTITION_PASSED_CHECKS

START, LAST, STOP = dt.date(2024, 1, 1), dt.date(2024, 3, 31), dt.date(2024, 4, 1)
APPROVER = "head-of-finance@example.com"
ONCALL = "oncall@example.com"
BROKEN_DAY = dt.date(2024, 2, 10)
KEY = dg.AssetKey(["analytics", "daily_revenue"])


# --------------------------------------------------------------------------------------------
# helpers


def three_versions(tmp_path: Path) -> Path:
    """A copy of daily_revenue with a v3: v2's SQL under a new version and code version."""
    folder = tmp_path / "plans" / "daily_revenue"
    shutil.copytree(SHIPPED_DEFS / "daily_revenue", folder)
    v2 = (folder / "sql" / "v2.sql").read_text()
    (folder / "sql" / "v3.sql").write_text("-- v3: v2 with a faster plan (same rows).\n" + v2)
    path = folder / "plan.yaml"
    data = yaml.safe_load(path.read_text())
    data["versions"].append(
        {
            "name": "v3",
            "sql": "sql/v3.sql",
            "code_version": "v3-1",
            "change": "Same rows as v2, computed with a cheaper query plan.",
        }
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def checksum(conn: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {relation} AS t"
    ).fetchone()


def shows(conn: duckdb.DuckDBPyConnection, version: str) -> bool:
    """Whether the view shows exactly the version's table (built over the window only)."""
    return checksum(conn, "analytics.daily_revenue") == checksum(
        conn, f"models.daily_revenue__{version}"
    )


def state(conn: duckdb.DuckDBPyConnection) -> tuple:
    view = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' "
        "AND view_name = 'daily_revenue'"
    ).fetchone()
    log = conn.execute("SELECT * FROM backfill.promotions ORDER BY rowid").fetchall()
    return view, checksum(conn, "analytics.daily_revenue"), log


def break_legacy_day(conn: duckdb.DuckDBPyConnection, plan: Plan, day: dt.date) -> list:
    """Every order of ``day`` loses its region and legacy is rebuilt: the day's rows are all
    in the NULL region, beyond the 35% the plan allows. Returns the days of legacy whose NULL
    share now exceeds the limit, by a plain query."""
    conn.execute("UPDATE raw.orders SET region = NULL WHERE CAST(order_ts AS DATE) = ?", [day])
    build_window(conn, plan, "legacy", START, STOP, "legacy-rebuilt")
    limit = plan.spec.checks.null_rates["region"]
    return [
        d
        for (d,) in conn.execute(
            "SELECT order_date FROM models.daily_revenue__legacy GROUP BY order_date "
            "HAVING count(*) FILTER (WHERE region IS NULL) > ? * count(*) ORDER BY 1",
            [limit],
        ).fetchall()
    ]


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return load_plan(three_versions(tmp_path)).with_window(START, LAST)


@pytest.fixture
def built(generated: duckdb.DuckDBPyConnection, plan: Plan) -> duckdb.DuckDBPyConnection:
    for version in plan.version_names:
        build_window(generated, plan, version, START, STOP, "build")
    ensure_view(generated, plan)
    return generated


@pytest.fixture
def v3_published(built, plan) -> duckdb.DuckDBPyConnection:
    """legacy -> v2 -> v3, each by a promotion."""
    promote(built, plan, "v2", APPROVER, "v2 reconciles", "run-1")
    promote(built, plan, "v3", APPROVER, "v3 is cheaper", "run-2")
    assert shows(built, "v3")
    return built


# --------------------------------------------------------------------------------------------
# plain functions


def test_promote_rollback_rollback_to_older_and_by_log_row_then_promote(v3_published, plan):
    conn = v3_published
    rollback(conn, plan, ONCALL, "v3 looks slow", "run-3")  # undo the latest promotion
    assert shows(conn, "v2") and published_version(conn, plan) == "v2"

    rollback(conn, plan, ONCALL, "back to before the change", "run-4", to_version="legacy")
    assert shows(conn, "legacy") and published_version(conn, plan) == "legacy"

    rollback(conn, plan, ONCALL, "v3 was fine after all", "run-5", to_log_row=2)
    assert shows(conn, "v3")

    rollback(conn, plan, ONCALL, "as in the first promotion", "run-6", to_log_row=1)
    assert shows(conn, "v2")

    promote(conn, plan, "v3", APPROVER, "again", "run-7")
    assert shows(conn, "v3")

    log = history(conn, plan)
    assert [(e.action, e.version, e.previous_version) for e in log] == [
        ("promote", "v2", "legacy"),
        ("promote", "v3", "v2"),
        ("rollback", "v2", "v3"),
        ("rollback", "legacy", "v2"),
        ("rollback", "v3", "legacy"),
        ("rollback", "v2", "v3"),
        ("promote", "v3", "v2"),
    ]
    assert [e.run_id for e in log] == [f"run-{n}" for n in range(1, 8)]
    assert [e.actor for e in log] == [APPROVER, APPROVER, *[ONCALL] * 4, APPROVER]
    returns = [e.evidence["returns_to"] for e in log[2:6]]
    assert returns == [
        {"version": "v2", "chosen_by": LATEST_PROMOTION, "log_row": None},
        {"version": "legacy", "chosen_by": BY_VERSION, "log_row": None},  # never logged before
        {"version": "v3", "chosen_by": BY_LOG_ROW, "log_row": 2},
        {"version": "v2", "chosen_by": BY_LOG_ROW, "log_row": 1},
    ]
    assert log[2].evidence["undoes_promotion_run"] == "run-2"
    # Every rollback re-checked its target, the dashboard's query included, and was not forced.
    for entry in log[2:6]:
        assert not entry.evidence["forced"]
        assert DOWNSTREAM_QUERIES_WORK in entry.evidence["checks"]
        assert all(c["passed"] for c in entry.evidence["checks"].values())

    # By version, the log row recorded is the latest that published it.
    rollback(conn, plan, ONCALL, "v2 once more", "run-8", to_version="v2")
    assert history(conn, plan)[-1].evidence["returns_to"]["log_row"] == 6
    assert shows(conn, "v2")


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ({"to_version": "v3"}, "v3 was never published"),
        ({"to_version": "v9"}, "no version 'v9'"),
        ({"to_version": "v2"}, "v2 is the published version already"),
        ({"to_log_row": 5}, "has no row 5"),
        ({"to_log_row": 0}, "has no row 0"),
        ({"to_log_row": 1}, "v2 is the published version already"),
        ({"to_version": "legacy", "to_log_row": 1}, "not both"),
    ],
)
def test_a_rollback_to_no_earlier_published_version_is_refused(built, plan, target, named):
    promote(built, plan, "v2", APPROVER, "v2", "run-1")
    before = state(built)
    with pytest.raises(PublishError, match=named):
        rollback(built, plan, ONCALL, "try", "run-r", **target)
    assert state(built) == before


def test_a_refused_log_row_lists_the_rows_to_choose_from(v3_published, plan):
    with pytest.raises(PublishError) as info:
        rollback(v3_published, plan, ONCALL, "which one?", "run-r", to_log_row=7)
    message = str(info.value)
    assert "1. " in message and "promote to v2 (was legacy)" in message
    assert "2. " in message and "promote to v3 (was v2)" in message


def test_a_target_whose_evidence_now_fails_is_refused_then_forced_with_a_reason(v3_published, plan):
    conn = v3_published
    failing_days = break_legacy_day(conn, plan, BROKEN_DAY)
    assert failing_days == [BROKEN_DAY]
    before = state(conn)

    with pytest.raises(PublishError) as info:
        rollback(conn, plan, ONCALL, "back to legacy", "run-r", to_version="legacy")
    message = str(info.value)
    for named in ("rollback to legacy refused", EVERY_PARTITION_PASSED_CHECKS, "2024-02-10"):
        assert named in message, message
    assert "2024-02-09" not in message and "2024-02-11" not in message
    assert "force" in message
    assert state(conn) == before

    with pytest.raises(PublishError, match="reason"):
        rollback(conn, plan, ONCALL, " ", "run-f", force=True, to_version="legacy")
    assert state(conn) == before

    reason = "v2 and v3 both double count a region; finance needs legacy back now"
    entry = rollback(conn, plan, ONCALL, reason, "run-f", force=True, to_version="legacy")
    assert shows(conn, "legacy")
    [last] = history(conn, plan)[-1:]
    assert last == entry
    assert (last.action, last.version, last.actor, last.reason) == (
        "rollback",
        "legacy",
        ONCALL,
        reason,
    )
    assert last.evidence["forced"] is True
    assert list(last.evidence["failing_checks"]) == [EVERY_PARTITION_PASSED_CHECKS]
    assert "2024-02-10" in last.evidence["failing_checks"][EVERY_PARTITION_PASSED_CHECKS]


# --------------------------------------------------------------------------------------------
# through the rollback job


def run(defs: dg.Definitions, instance, job: str, op: str, **config) -> dg.ExecuteInProcessResult:
    gc.collect()  # a failed op's connection is freed by the collector
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        run_config={"ops": {op: {"config": config}}},
        raise_on_error=False,
    )


def test_the_rollback_job_goes_back_by_version_and_by_log_row(
    built, plan, instance, warehouse_file
):
    tables = {v: checksum(built, f"models.daily_revenue__{v}") for v in plan.version_names}
    built.close()  # the jobs open the file with their own settings
    defs = plan_definitions(plan, LateDataPolicy())
    for version in ("v2", "v3"):
        promoted = run(
            defs,
            instance,
            "promote_daily_revenue_job",
            "promote_daily_revenue",
            version=version,
            approved_by=APPROVER,
        )
        assert promoted.success

    job, op = "rollback_daily_revenue_job", "rollback_daily_revenue"
    fields = defs.resolve_job_def(job).graph.node_named(op).definition.config_schema.config_type
    required = {name: field.is_required for name, field in fields.fields.items()}
    assert required == {
        "by": True,
        "reason": True,
        "force": False,
        "to_version": False,
        "to_log_row": False,
    }

    older = run(defs, instance, job, op, by=ONCALL, reason="to legacy", to_version="legacy")
    assert older.success
    [materialization] = [
        e.step_materialization_data.materialization
        for e in older.get_asset_materialization_events()
        if e.asset_key == KEY
    ]
    assert materialization.metadata["published_version"].value == "legacy"
    assert materialization.metadata["returns_to"].value["chosen_by"] == BY_VERSION

    by_row = run(defs, instance, job, op, by=ONCALL, reason="first promotion", to_log_row=1)
    assert by_row.success
    refused = run(defs, instance, job, op, by=ONCALL, reason="the default", force=False)
    assert not refused.success  # the last move is a rollback: nothing to undo by default
    description = refused.failure_data_for_node(op).user_failure_data.description
    assert "to_version" in description and "to_log_row" in description

    gc.collect()
    with duckdb.connect(str(warehouse_file)) as conn:
        assert checksum(conn, "analytics.daily_revenue") == tables["v2"]
        log = history(conn, plan)
    assert [(e.action, e.version) for e in log] == [
        ("promote", "v2"),
        ("promote", "v3"),
        ("rollback", "legacy"),
        ("rollback", "v2"),
    ]
    assert [e.run_id for e in log[2:]] == [older.run_id, by_row.run_id]

    # The default still undoes the latest promotion.
    again = run(
        defs,
        instance,
        "promote_daily_revenue_job",
        "promote_daily_revenue",
        version="v3",
        approved_by=APPROVER,
    )
    assert again.success
    undone = run(defs, instance, job, op, by=ONCALL, reason="undo v3")
    assert undone.success
    gc.collect()
    with duckdb.connect(str(warehouse_file)) as conn:
        assert checksum(conn, "analytics.daily_revenue") == tables["v2"]
        assert history(conn, plan)[-1].evidence["undoes_promotion_run"] == again.run_id
