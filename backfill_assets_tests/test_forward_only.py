"""Forward-only with a documented cutoff, for a model the example knows nothing of.

A daily plan of events and amounts per day and category: v2 leaves test events out from the
cutoff (2024-01-11) on; before it users keep the baseline. The candidate is built from the
cutoff only (a run starting earlier is refused), the gate covers exactly what the view serves
(the baseline's days before the cutoff, the candidate's from it), the reconciliation covers the
candidate's span only, and the view is one UNION ALL split on the day, compared here with a
query written independently over the source table. The discontinuity is named in the published
asset's materialization, the reconciliation report and the cutover summary.
"""

import datetime as dt
import gc
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component import plan_definitions
from backfill_assets.component.models import model_key
from backfill_assets.component.sensors import LateDataPolicy
from backfill_assets.partitions import chunks
from backfill_assets.plan import Plan, PlanError
from backfill_assets.publish import PublishError, evaluate_gate, history, promote
from backfill_assets.reconcile import reconcile
from backfill_assets.report import reconciliation_markdown, reconciliation_text
from backfill_assets.window_checks import EVERY_PARTITION_PASSED_CHECKS, RECONCILES_WITH_BASELINE
from backfill_assets_tests.helpers import events_sql, write_events_plan

NAME = "fwd_events"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
START, CUTOFF, LAST = dt.date(2024, 1, 1), dt.date(2024, 1, 11), dt.date(2024, 1, 20)

MEASURES = {"events": "count(*)", "amount": "sum(amount)"}


def write_plan(
    folder: Path,
    cutoff: dt.date | None = CUTOFF,
    strategy: str = "forward_only",
    cadence: str = "daily",
) -> Plan:
    """The events plan ``fwd_events``, counting events and summing their amounts per day."""
    return write_events_plan(
        folder,
        name=NAME,
        cadence=cadence,
        start=START,
        last=LAST,
        end=LAST,
        columns={
            "event_id": "UUID",
            "category": "VARCHAR",
            "event_ts": "TIMESTAMP",
            "amount": "DECIMAL(12, 2)",
            "loaded_at": "TIMESTAMP",
        },
        measures=MEASURES,
        strategy=strategy,
        cutoff=cutoff,
    )


def fill(conn: duckdb.DuckDBPyConnection) -> None:
    """24 events a day over the window: categories a, b, test in turn, amounts 1.25 * (i+1)."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
    conn.execute(
        "CREATE OR REPLACE TABLE ops.events (event_id UUID, category VARCHAR, "
        "event_ts TIMESTAMP, amount DECIMAL(12, 2), loaded_at TIMESTAMP)"
    )
    conn.execute(
        "INSERT INTO ops.events SELECT uuid(), ['a', 'b', 'test'][i % 3 + 1], "
        "d + to_hours(CAST(i AS INTEGER)), 1.25 * (i + 1), d + INTERVAL 1 DAY "
        "FROM range(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-21', INTERVAL 1 DAY) AS t(d), "
        "range(24) AS r(i)"
    )


def build(conn, plan: Plan, version: str, first: dt.date, last: dt.date) -> None:
    parts = plan.cadence.starts(first, last + dt.timedelta(days=1))
    for start, end in chunks(plan.cadence, parts, plan.chunk):
        build_window(conn, plan, version, start, end, "backfill")


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return write_plan(tmp_path / "defs" / NAME)


@pytest.fixture
def built(conn: duckdb.DuckDBPyConnection, plan: Plan) -> duckdb.DuckDBPyConnection:
    """The baseline over the whole window (it is served before the cutoff, and is what users see
    until the promotion), the candidate from the cutoff only."""
    fill(conn)
    build(conn, plan, "legacy", START, LAST)
    build(conn, plan, "v2", CUTOFF, LAST)
    return conn


def plant_null_amount(conn, plan: Plan, day: dt.date, versions: list[str]) -> None:
    """An event of a new category without an amount: that day's group has a NULL amount, which
    ``null_rates`` (amount: 0) refuses; the day is rebuilt in ``versions``."""
    conn.execute(
        "INSERT INTO ops.events VALUES (uuid(), 'z', CAST(? AS TIMESTAMP) + INTERVAL 5 HOUR, "
        "NULL, CAST(? AS TIMESTAMP) + INTERVAL 1 DAY)",
        [day, day],
    )
    for version in versions:
        build(conn, plan, version, day, day)


def test_a_forward_only_plan_names_its_cutoff_inside_the_window(tmp_path):
    with pytest.raises(PlanError, match=r"field 'cutoff': is missing"):
        write_plan(tmp_path / "a", cutoff=None)
    with pytest.raises(PlanError, match=r"cutoff': 2024-01-01 is not inside the window"):
        write_plan(tmp_path / "b", cutoff=dt.date(2024, 1, 1))
    with pytest.raises(PlanError, match=r"cutoff': 2024-02-01 is not inside the window"):
        write_plan(tmp_path / "c", cutoff=dt.date(2024, 2, 1))
    with pytest.raises(PlanError, match=r"cutoff': is only for strategy forward_only"):
        write_plan(tmp_path / "d", strategy="full_rebuild")
    with pytest.raises(PlanError, match=r"2024-01-03 is not the first day of a week.*2024-01-01"):
        write_plan(tmp_path / "e", cutoff=dt.date(2024, 1, 3), cadence="weekly")


def test_the_candidate_is_built_from_the_cutoff_only(conn, plan, instance):
    fill(conn)
    conn.close()
    defs = plan_definitions(plan, LateDataPolicy())
    job = defs.resolve_implicit_global_asset_job_def()
    gc.collect()
    before = job.execute_in_process(
        instance=instance,
        partition_key="2024-01-10",
        asset_selection=[model_key(plan, "v2")],
        run_config=QUIET,
        raise_on_error=False,
    )
    assert not before.success
    failure = before.failure_data_for_node(f"models__{NAME}__v2").user_failure_data.description
    assert "forward_only with cutoff 2024-01-11" in failure and "Nothing was written" in failure
    assert "Fix: backfill v2 from 2024-01-11" in failure
    gc.collect()
    after = job.execute_in_process(
        instance=instance,
        partition_key="2024-01-11",
        asset_selection=[model_key(plan, "v2"), model_key(plan, "legacy")],
        run_config=QUIET,
        raise_on_error=False,
    )
    assert after.success
    gc.collect()
    with duckdb.connect(plan.path.parent.parent.parent / "warehouse.duckdb") as check:
        built = check.execute(
            "SELECT version, list(CAST(partition_start AS DATE) ORDER BY partition_start) "
            "FROM backfill.partition_evidence GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert built == [("legacy", [CUTOFF]), ("v2", [CUTOFF])]


def test_forward_only_publishes_the_baseline_before_and_the_candidate_after_the_cutoff(
    built, plan, instance, warehouse_file
):
    # The gate holds with v2 built only from the cutoff; reconciliation covers that span only.
    gate = evaluate_gate(built, plan, "v2")
    assert gate.passed, gate.report()
    recon = next(c for c in gate.checks if c.name == RECONCILES_WITH_BASELINE).reconciliation
    assert (recon.start, recon.end) == (CUTOFF, LAST)
    assert "forward-only cutoff 2024-01-11" in recon.discontinuity
    assert "Discontinuity: forward-only cutoff 2024-01-11" in reconciliation_text(recon)
    assert "**Discontinuity:** forward-only cutoff" in reconciliation_markdown(recon)
    assert reconcile(built, plan).start == CUTOFF  # the command's default too
    built.close()

    defs = plan_definitions(plan, LateDataPolicy())
    gc.collect()
    result = defs.resolve_job_def(f"promote_{NAME}_job").execute_in_process(
        instance=instance,
        run_config={**QUIET, "ops": {f"promote_{NAME}": {"config": {"version": "v2"}}}},
        raise_on_error=False,
    )
    assert result.success
    [materialization] = [
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["analytics", NAME])
    ]
    metadata = materialization.metadata
    assert metadata["cutoff"].value == "2024-01-11"
    assert metadata["discontinuity"].value == (
        "forward-only cutoff 2024-01-11: analytics.fwd_events serves legacy before 2024-01-11 "
        "and v2 from 2024-01-11 on; figures before and after the cutoff follow different "
        "definitions and are not comparable across it"
    )
    summary = metadata["cutover_summary"].value
    assert "**Discontinuity:** forward-only cutoff 2024-01-11" in summary
    assert "- **Discontinuity:**" in summary

    gc.collect()
    with duckdb.connect(str(warehouse_file)) as conn:
        view = conn.execute(f"SELECT * FROM analytics.{NAME} ORDER BY ALL").fetchall()
        independent = conn.execute(
            """
            SELECT CAST(event_ts AS DATE), category, count(*), sum(amount) FROM ops.events
            WHERE event_ts >= '2024-01-01' AND event_ts < '2024-01-11' GROUP BY ALL
            UNION ALL
            SELECT CAST(event_ts AS DATE), category, count(*), sum(amount) FROM ops.events
            WHERE event_ts >= '2024-01-11' AND event_ts < '2024-01-21' AND category <> 'test'
            GROUP BY ALL
            ORDER BY ALL
            """
        ).fetchall()
        assert view == independent
        assert len(view) == 10 * 3 + 10 * 2
        assert {row[1] for row in view if row[0] >= CUTOFF} == {"a", "b"}
        [entry] = history(conn, plan)
        assert entry.evidence["cutoff"] == "2024-01-11"
        assert "serves legacy before 2024-01-11" in entry.evidence["discontinuity"]
        # The view's text is one UNION ALL of the two tables, split on the partition column.
        sql = conn.execute(
            "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
            [NAME],
        ).fetchone()[0]
        assert "UNION ALL BY NAME" in sql
        assert f"models.{NAME}__legacy" in sql and f"models.{NAME}__v2" in sql


def test_the_gate_refuses_a_failing_baseline_day_before_the_cutoff(built, plan):
    plant_null_amount(built, plan, dt.date(2024, 1, 5), ["legacy"])
    with pytest.raises(PublishError) as refused:
        promote(built, plan, "v2", "", "", "run-1")
    problems = refused.value.gate.problems
    [passed] = [p for p in problems if p.startswith(EVERY_PARTITION_PASSED_CHECKS)]
    assert "legacy 2024-01-01..2024-01-10: null_rates_within_limits failed on 2024-01-05" in passed
    assert "v2 2024-01-11..2024-01-20: every built day passed its checks" in passed
    assert not [p for p in problems if p.startswith(RECONCILES_WITH_BASELINE)]
    assert built.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'analytics'"
    ).fetchone() == (0,)  # nothing published


def test_the_gate_refuses_a_failing_candidate_day_after_the_cutoff_only(built, plan):
    # The day fails in both versions; the baseline's copy is not served, so only v2's counts.
    plant_null_amount(built, plan, dt.date(2024, 1, 15), ["legacy", "v2"])
    gate = evaluate_gate(built, plan, "v2")
    assert not gate.passed
    [passed] = [p for p in gate.problems if p.startswith(EVERY_PARTITION_PASSED_CHECKS)]
    assert "v2 2024-01-11..2024-01-20: null_rates_within_limits failed on 2024-01-15" in passed
    assert "legacy 2024-01-01..2024-01-10: every built day passed its checks" in passed
    # A baseline day the view never serves (after the cutoff) may fail: with v2's day repaired
    # (the new category dropped from v2 only), the gate passes although legacy's copy fails.
    (plan.folder / "v2.sql").write_text(
        events_sql(where="category NOT IN ('test', 'z')", measures=MEASURES)
    )
    (plan.folder / "rule.sql").write_text(
        events_sql(where="category IN ('test', 'z')", measures=MEASURES, negated=True)
    )
    build(built, plan, "v2", dt.date(2024, 1, 15), dt.date(2024, 1, 15))
    gate = evaluate_gate(built, plan, "v2")
    assert gate.passed, gate.report()
    failing_legacy = built.execute(
        "SELECT list(CAST(partition_start AS DATE)) FROM backfill.partition_evidence "
        "WHERE model = ? AND version = 'legacy' AND NOT checks_passed",
        [NAME],
    ).fetchone()[0]
    assert failing_legacy == [dt.date(2024, 1, 15)]


def test_a_rollback_gate_covers_both_spans_too(built, plan):
    promote(built, plan, "v2", "", "", "run-1")
    from backfill_assets.publish import rollback

    rollback(built, plan, "oncall", "back", "run-2")
    plant_null_amount(built, plan, dt.date(2024, 1, 4), ["legacy"])
    with pytest.raises(PublishError, match=r"legacy 2024-01-01..2024-01-10.*2024-01-04"):
        rollback(built, plan, "oncall", "again", "run-3", to_version="v2")
