"""Downstream consumers' queries (issue "Cutover the runbook's way", item 1), on real DuckDB
files and a real Dagster instance.

The shipped ``daily_revenue`` plan declares the finance dashboard's query (monthly totals over
``analytics.daily_revenue``). Before a promotion it runs against the candidate as if it were
published and against the published version; its totals are compared, and a consumer whose
query breaks on the candidate blocks the promotion, named. The published view never changes
while a query is rehearsed, even when the query fails.

Every warehouse holds generated data for 2024-01-01..2024-03-31 (the ``generated`` fixture)
with both versions built over that window. Expected totals come from plain SQL on the model
tables, written here, never from the code under test.
"""

import datetime as dt
import gc
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component import plan_definitions
from backfill_assets.component.sensors import LateDataPolicy
from backfill_assets.downstream import DOWNSTREAM_QUERIES_WORK, run_query, summary_lines
from backfill_assets.plan import Plan, PlanError, load_plan
from backfill_assets.publish import PublishError, ensure_view, history, promote, published_version
from backfill_assets.view import rehearsal
from backfill_assets.window_checks import downstream_queries, window_check_names
from backfill_assets_tests.helpers import copy_shipped_plan, edit_plan, replace_once, stop_checking

START, LAST, STOP = dt.date(2024, 1, 1), dt.date(2024, 3, 31), dt.date(2024, 4, 1)
APPROVER = "head-of-finance@example.com"  # an approver of the shipped daily_revenue plan
DASHBOARD = "Finance daily revenue"  # the consumer the shipped plan declares with its query
DASHBOARD_SQL = "sql/dashboard_finance_daily_revenue.sql"
KEY = dg.AssetKey(["analytics", "daily_revenue"])


# --------------------------------------------------------------------------------------------
# helpers


def drop_gross_revenue(path: Path) -> None:
    """v2 of the copied plan stops returning gross_revenue (legacy keeps it): the checks stop
    reading it, and the plan declares the removal so the schema contract lets it through."""
    replace_once(
        path.parent / "sql" / "v2.sql",
        "    CAST(sum(gross) AS DECIMAL(18, 2)) AS gross_revenue,\n",
        "",
    )

    def change(data: dict) -> None:
        stop_checking(data, "gross_revenue")
        data["breaking_changes"] = [
            {"column": "gross_revenue", "change": "removed", "reason": "net is what we report"}
        ]

    edit_plan(path, change)


def checksum(conn: duckdb.DuckDBPyConnection, relation: str) -> tuple[int, str]:
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {relation} AS t"
    ).fetchone()


def view_sql(conn: duckdb.DuckDBPyConnection) -> str | None:
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' "
        "AND view_name = 'daily_revenue'"
    ).fetchone()
    return row[0] if row else None


def state(conn: duckdb.DuckDBPyConnection) -> tuple:
    """What a reader of analytics.daily_revenue could notice: definition, rows, the log."""
    log = conn.execute("SELECT * FROM backfill.promotions ORDER BY rowid").fetchall()
    return view_sql(conn), checksum(conn, "analytics.daily_revenue"), log


def build(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    for version in plan.version_names:
        build_window(conn, plan, version, START, STOP, "build")
    ensure_view(conn, plan)


def window_total(conn: duckdb.DuckDBPyConnection, version: str, column: str) -> float:
    """The column's total over the window in a version's table, by a plain query."""
    return float(
        conn.execute(
            f"SELECT sum({column}) FROM models.daily_revenue__{version} "
            "WHERE order_date BETWEEN ? AND ?",
            [START, LAST],
        ).fetchone()[0]
    )


@pytest.fixture
def plan(daily_revenue: Plan) -> Plan:
    return daily_revenue.with_window(START, LAST)


@pytest.fixture
def built(generated: duckdb.DuckDBPyConnection, plan: Plan) -> duckdb.DuckDBPyConnection:
    build(generated, plan)
    return generated


# --------------------------------------------------------------------------------------------
# the plan field


def test_the_shipped_plan_declares_the_dashboard_query_and_keeps_its_consumers(plan):
    labels = list(plan.spec.downstream)
    assert labels == [
        "dashboard: Finance daily revenue",
        "export: month-end revenue file to the ledger",
        "model: forecast_revenue reads analytics.daily_revenue",
    ]
    [dashboard] = plan.consumer_queries
    assert (dashboard.name, dashboard.kind, dashboard.sql) == (
        DASHBOARD,
        "dashboard",
        DASHBOARD_SQL,
    )
    assert dashboard.owner and dashboard.min_rows >= 1
    assert "net_revenue" in dashboard.columns
    assert DOWNSTREAM_QUERIES_WORK in window_check_names(plan)


def test_plain_string_downstream_entries_still_load(tmp_path):
    path = copy_shipped_plan(tmp_path)
    strings = ["dashboard: Finance daily revenue", "export: the ledger file"]
    edit_plan(path, lambda data: data.update(downstream=strings))
    loaded = load_plan(path)
    assert list(loaded.spec.downstream) == strings
    assert [c.name for c in loaded.spec.downstream] == strings  # a text is a name
    assert [(c.kind, c.owner, c.sql) for c in loaded.spec.downstream] == [(None, None, None)] * 2
    assert loaded.consumer_queries == []
    assert DOWNSTREAM_QUERIES_WORK not in window_check_names(loaded)

    # The mapping form must say what kind of consumer it is and who owns it.
    edit_plan(path, lambda data: data.update(downstream=[{"name": "Ledger", "owner": "ops@x.com"}]))
    with pytest.raises(PlanError, match=r"field 'downstream\.0\.kind': is missing"):
        load_plan(path)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT * FROM analytics.daily_revenue JOIN backfill.promotions ON true", "backfill."),
        ("SELECT * FROM models.daily_revenue__v2", "models.daily_revenue__v2"),
        ("SELECT * FROM query('SELECT * FROM analytics.daily_revenue')", "calls query()"),
        ("DELETE FROM analytics.daily_revenue", "not exactly one read-only query"),
        ("SELECT 1; DROP VIEW analytics.daily_revenue", "not exactly one read-only query"),
    ],
)
def test_a_consumer_query_that_is_not_a_read_of_the_view_is_refused_at_load(
    tmp_path, query, problem
):
    path = copy_shipped_plan(tmp_path)
    (path.parent / DASHBOARD_SQL).write_text(query + "\n")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert f"field 'downstream[{DASHBOARD}].sql'" in message and problem in message


def test_a_consumer_expecting_a_column_its_query_never_returns_is_refused_at_load(tmp_path):
    path = copy_shipped_plan(tmp_path)

    def change(data: dict) -> None:
        data["downstream"][0]["columns"] = ["month", "net_revenu"]

    edit_plan(path, change)
    with pytest.raises(
        PlanError, match=r"downstream\[Finance daily revenue\]\.columns.*net_revenu"
    ):
        load_plan(path)


# --------------------------------------------------------------------------------------------
# a working query: its differences, and the view never moves


def test_a_working_consumer_query_reports_how_its_totals_move(built, plan):
    before = state(built)
    check = downstream_queries(built, plan, "v2", "legacy")
    assert check.passed, check.summary
    assert state(built) == before  # the published view is what it was

    figures = check.figures["consumers"][DASHBOARD]
    assert figures["rows"] == {"version": 3, "published": 3}  # January, February, March
    for column in ("orders", "gross_revenue", "refunds", "net_revenue"):
        legacy, v2 = window_total(built, "legacy", column), window_total(built, "v2", column)
        total = figures["totals"][column]
        assert total["published"] == pytest.approx(legacy)
        assert total["version"] == pytest.approx(v2)
        assert total["change_pct"] == pytest.approx((v2 - legacy) / legacy * 100, abs=1e-3)
    assert window_total(built, "v2", "net_revenue") < window_total(built, "legacy", "net_revenue")

    # Promotion records it, and the cutover lines tell the dashboard's owner how it moves.
    _, entry = promote(built, plan, "v2", APPROVER, "Q1", "run-1")
    assert published_version(built, plan) == "v2"
    lines = summary_lines(history(built, plan)[-1].evidence)
    assert lines == summary_lines(entry.evidence)
    legacy, v2 = (
        window_total(built, "legacy", "net_revenue"),
        window_total(built, "v2", "net_revenue"),
    )
    expected = (
        f"net_revenue total {legacy:,.2f} -> {v2:,.2f} ({(v2 - legacy) / legacy * 100:+.1f}%)"
    )
    [line] = [line for line in lines if DASHBOARD in line]
    assert expected in line, line
    assert "finance-bi@example.com" in line


def test_a_rehearsal_is_seen_by_its_own_connection_only_and_always_rolled_back(built, plan):
    legacy = checksum(built, "models.daily_revenue__legacy")
    v2 = checksum(built, "models.daily_revenue__v2")
    before = state(built)
    other = built.cursor()  # another connection to the same database
    with rehearsal(built, plan, "v2"):
        assert checksum(built, "analytics.daily_revenue") == v2
        assert checksum(other, "analytics.daily_revenue") == legacy
    assert state(built) == before

    with pytest.raises(duckdb.Error), rehearsal(built, plan, "v2"):
        built.execute("SELECT no_such_column FROM analytics.daily_revenue")
    assert state(built) == before
    assert built.execute("SELECT 42").fetchone() == (42,)  # no transaction left open


# --------------------------------------------------------------------------------------------
# a query that breaks on the candidate blocks promotion


def test_a_consumer_query_that_breaks_on_the_candidate_blocks_promotion_naming_it(
    generated, tmp_path
):
    path = copy_shipped_plan(tmp_path)
    drop_gross_revenue(path)
    plan = load_plan(path).with_window(START, LAST)
    build(generated, plan)
    before = state(generated)

    with pytest.raises(PublishError) as info:
        promote(generated, plan, "v2", APPROVER, "attempt", "run-refused")
    message = str(info.value)
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1, message  # the consumer, and nothing else
    for named in (DOWNSTREAM_QUERIES_WORK, DASHBOARD, "fails on v2", "gross_revenue"):
        assert named in problems[0], problems[0]
    assert state(generated) == before
    assert published_version(generated, plan) == "legacy"

    # The query, run on its own, fails on v2, works on legacy, and the view stays put.
    [dashboard] = plan.consumer_queries
    broken = run_query(generated, plan, dashboard, "v2")
    assert broken.error and "gross_revenue" in broken.error
    working = run_query(generated, plan, dashboard, "legacy")
    assert working.error is None and working.rows == 3
    assert state(generated) == before

    # Positive control: once the dashboard stops reading the column, v2 promotes.
    replace_once(path.parent / DASHBOARD_SQL, "    sum(gross_revenue) AS gross_revenue,\n", "")
    plan = load_plan(path).with_window(START, LAST)
    promote(generated, plan, "v2", APPROVER, "dashboard updated", "run-ok")
    assert published_version(generated, plan) == "v2"


def test_a_consumer_that_gets_too_few_rows_blocks(built, plan, tmp_path):
    path = copy_shipped_plan(tmp_path)

    def change(data: dict) -> None:
        data["downstream"][0]["min_rows"] = 4  # the window has three months

    edit_plan(path, change)
    strict = load_plan(path).with_window(START, LAST)
    check = downstream_queries(built, strict, "v2", "legacy")
    assert not check.passed
    assert check.figures["consumers_failing"] == [DASHBOARD]
    assert "returns 3 row(s) on v2, fewer than min_rows 4" in check.summary


def test_a_consumer_whose_result_loses_a_column_blocks(generated, tmp_path):
    # The dashboard reads every column; v2 no longer returns gross_revenue: the query still
    # runs, but a column it shows today is gone.
    path = copy_shipped_plan(tmp_path)
    drop_gross_revenue(path)
    (path.parent / DASHBOARD_SQL).write_text("SELECT * FROM analytics.daily_revenue\n")

    def change(data: dict) -> None:
        data["downstream"][0]["columns"] = ["net_revenue"]

    edit_plan(path, change)
    plan = load_plan(path).with_window(START, LAST)
    build(generated, plan)
    check = downstream_queries(generated, plan, "v2", "legacy")
    assert not check.passed
    figures = check.figures["consumers"][DASHBOARD]
    assert figures["problems"] == ["returns ['gross_revenue'] on legacy but not on v2"]
    rows = {
        version: generated.execute(
            f"SELECT count(*) FROM models.daily_revenue__{version} "
            "WHERE order_date BETWEEN ? AND ?",
            [START, LAST],
        ).fetchone()[0]
        for version in ("v2", "legacy")
    }
    assert figures["rows"] == {"version": rows["v2"], "published": rows["legacy"]}


# --------------------------------------------------------------------------------------------
# through Dagster: the promotion job refuses and the UI shows the failing check


def test_the_promotion_job_refuses_and_reports_the_consumer(generated, tmp_path, instance):
    path = copy_shipped_plan(tmp_path)
    drop_gross_revenue(path)
    plan = load_plan(path).with_window(START, LAST)
    build(generated, plan)
    before = state(generated)
    generated.close()  # the job opens the file with its own settings
    gc.collect()

    defs = plan_definitions(plan, LateDataPolicy())
    result = defs.resolve_job_def("promote_daily_revenue_job").execute_in_process(
        instance=instance,
        run_config={
            "ops": {"promote_daily_revenue": {"config": {"version": "v2", "approved_by": APPROVER}}}
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("promote_daily_revenue").user_failure_data
    assert DASHBOARD in failure.description and DOWNSTREAM_QUERIES_WORK in failure.description
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    downstream = evaluations[DOWNSTREAM_QUERIES_WORK]
    assert downstream.asset_key == KEY and not downstream.passed
    assert DASHBOARD in downstream.metadata["summary"].value
    assert evaluations["schema_contract_kept"].passed  # the removal is declared
    gc.collect()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        assert state(conn) == before
