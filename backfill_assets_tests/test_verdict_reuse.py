"""The promotion reuses the window-check job's verdict only while nothing it read has changed.

Real DuckDB files under tmp_path with generated data for 2024-01-01..2024-03-31 and both
versions of daily_revenue built over that window. How often the checks ran is read from
``backfill.window_verdicts`` itself (one row per evaluation, with where and when it ran); that
a reused verdict was not stale is shown by changes a stale verdict would have missed: each
makes the gate refuse, naming the check that now fails.
"""

import datetime as dt
import gc
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets import verdicts
from backfill_assets.build import build_window
from backfill_assets.catalog import SHIPPED_DEFS
from backfill_assets.component import plan_definitions
from backfill_assets.component.sensors import LateDataPolicy
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import (
    GATE,
    PublishError,
    ensure_view,
    evaluate_gate,
    evaluate_window,
    history,
    promote,
    published_version,
    rollback,
)
from backfill_assets.reconcile import reconcile
from backfill_assets.window_checks import IS_FRESH, run_window_checks

START = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
STOP = dt.date(2024, 4, 1)  # exclusive
APPROVER = "head-of-finance@example.com"  # an approver in plans/daily_revenue/plan.yaml
JOB = "window_checks_daily_revenue_job"
DAY = dt.date(2024, 2, 10)


def evaluations(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Every recorded evaluation, oldest first: (version, where, run id, evaluated_at)."""
    return conn.execute(
        "SELECT version, evaluated_in, run_id, evaluated_at FROM backfill.window_verdicts "
        "ORDER BY evaluated_at, rowid"
    ).fetchall()


def shown(checks) -> dict[str, tuple]:
    """What the gate reads of each check, except the one that reads the clock."""
    return {c.name: (c.passed, c.blocking, c.summary) for c in checks if c.name != IS_FRESH}


def window_job(conn: duckdb.DuckDBPyConnection, plan: Plan, run_id: str = "checks-run"):
    """What ``window_checks_<plan>_job`` does: evaluate, never reuse, record."""
    return evaluate_window(conn, plan, "v2", published_version(conn, plan), run_id, JOB, False)


def build(conn, plan: Plan, versions=("legacy", "v2"), start=START, stop=STOP) -> None:
    for version in versions:
        build_window(conn, plan, version, start, stop, "build")


def copy_plan(tmp_path: Path) -> Path:
    """A copy of the shipped daily_revenue plan folder, to edit; returns its plan.yaml."""
    folder = tmp_path / "plans" / "daily_revenue"
    shutil.copytree(SHIPPED_DEFS / "daily_revenue", folder)
    return folder / "plan.yaml"


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    """daily_revenue from a copy of its folder (so a test may edit its files), windowed."""
    return load_plan(copy_plan(tmp_path)).with_window(START, LAST)


@pytest.fixture
def built(generated: duckdb.DuckDBPyConnection, plan: Plan) -> duckdb.DuckDBPyConnection:
    build(generated, plan)
    ensure_view(generated, plan)
    return generated


# --------------------------------------------------------------------------------------------
# reuse


def test_promotion_reuses_the_window_check_verdict(built, plan):
    evaluated = window_job(built, plan)
    assert not evaluated.reused
    [(version, where, run_id, evaluated_at)] = evaluations(built)
    assert (version, where, run_id) == ("v2", JOB, "checks-run")

    gate, entry = promote(built, plan, "v2", APPROVER, "go", "promote-run")

    assert gate.passed and published_version(built, plan) == "v2"
    assert evaluations(built) == [(version, where, run_id, evaluated_at)]  # the checks did not run
    reused = history(built, plan)[-1].evidence["verdict_reused_from"]
    assert reused == {
        "evaluated_at": f"{evaluated_at:%Y-%m-%d %H:%M:%S.%f}",
        "run_id": "checks-run",
        "evaluated_in": JOB,
        "state_key": evaluated.verdict.state_key,
        "rechecked": [IS_FRESH],
    }
    # The reused verdict is what the checks say now (computed again, recording nothing), in
    # the same order; the log keeps it and the size of each known difference.
    independent = run_window_checks(built, plan, "v2", "legacy")
    assert [c.name for c in gate.checks] == [c.name for c in independent]
    assert shown(gate.checks) == shown(independent)
    logged = entry.evidence["checks"]
    assert {k: (v["passed"], v["blocking"], v["summary"]) for k, v in logged.items()} == {
        c.name: (c.passed, c.blocking, c.summary) for c in gate.checks
    }
    totals = reconcile(built, plan, candidate="v2").measure_totals()
    known = entry.evidence["known_differences"]["totals"]
    assert known.keys() == totals.keys()
    for measure, figures in totals.items():
        assert known[measure]["candidate"] == pytest.approx(figures["candidate"])
        assert known[measure]["baseline"] == pytest.approx(figures["baseline"])


def test_a_gate_reuses_its_own_verdict_and_a_window_job_always_evaluates(built, plan):
    first = evaluate_gate(built, plan, "v2", APPROVER, "gate-1")
    second = evaluate_gate(built, plan, "v2", APPROVER, "gate-2")
    assert not first.evaluation.reused and second.evaluation.reused
    assert second.evaluation.reused_from["run_id"] == "gate-1"
    assert second.passed and shown(second.checks) == shown(first.checks)
    window_job(built, plan, "checks-1")
    assert [(w, r) for _, w, r, _ in evaluations(built)] == [(GATE, "gate-1"), (JOB, "checks-1")]


def test_a_failed_verdict_is_reused_and_still_refuses(generated, plan):
    build(generated, plan, ("legacy",))
    build(generated, plan, ("v2",), START, DAY)
    build(generated, plan, ("v2",), DAY + dt.timedelta(days=1), STOP)
    ensure_view(generated, plan)
    window_job(generated, plan)

    with pytest.raises(PublishError) as refused:
        promote(generated, plan, "v2", APPROVER, "go", "promote-run")
    assert "window_is_complete" in str(refused.value) and str(DAY) in str(refused.value)
    assert refused.value.gate.evaluation.reused
    assert len(evaluations(generated)) == 1
    assert published_version(generated, plan) == "legacy" and history(generated, plan) == []

    # Building the missing day is a change: the gate evaluates again, and passes.
    build(generated, plan, ("v2",), DAY, DAY + dt.timedelta(days=1))
    gate, entry = promote(generated, plan, "v2", APPROVER, "go", "promote-run")
    assert not gate.evaluation.reused and entry.evidence["verdict_reused_from"] is None
    assert [w for _, w, _, _ in evaluations(generated)] == [JOB, GATE]


def test_a_verdict_older_than_a_day_is_not_reused(built, plan):
    window_job(built, plan)
    built.execute(
        "UPDATE backfill.window_verdicts SET evaluated_at = evaluated_at - INTERVAL 25 HOUR"
    )
    gate, entry = promote(built, plan, "v2", APPROVER, "go", "promote-run")
    assert entry.evidence["verdict_reused_from"] is None
    assert gate.evaluation.changed == []  # nothing changed: it was only too old
    assert [w for _, w, _, _ in evaluations(built)] == [JOB, GATE]


# --------------------------------------------------------------------------------------------
# what invalidates a verdict: each change between the window-check job and the promotion makes
# the gate evaluate again (a new row, by the gate); where the change breaks a check, the
# refusal names it, which a reused verdict could not have done


def rebuild_one_day(conn, plan) -> None:
    build(conn, plan, ("v2",), DAY, DAY + dt.timedelta(days=1))


def late_row(conn, plan) -> None:
    conn.execute(
        "INSERT INTO raw.orders VALUES (8000000001, 1, 'north', TIMESTAMP '2024-02-10 12:00:00', "
        "42.00, 'shipped', TIMESTAMP '2024-04-02 09:00:00')"
    )


def corrected_in_place(conn, plan) -> None:
    """A source row changed without a new loaded_at: the probe by arrival would not see it."""
    conn.execute(
        "UPDATE raw.orders SET amount = amount + 1 WHERE order_id = (SELECT min(order_id) "
        "FROM raw.orders WHERE CAST(order_ts AS DATE) = DATE '2024-02-10')"
    )


def rule_edited(conn, plan) -> None:
    """The excluded-statuses rule no longer predicts the orders it removes."""
    rule = plan.folder / "sql" / "rule_excluded_statuses.sql"
    text = rule.read_text()
    assert text.count("-1 AS orders") == 1
    rule.write_text(text.replace("-1 AS orders", "0 AS orders"))


def table_edited(conn, plan) -> None:
    """A row of v2's table deleted by hand, its evidence untouched."""
    conn.execute(
        "DELETE FROM models.daily_revenue__v2 WHERE order_date = DATE '2024-02-10' "
        "AND region = (SELECT min(region) FROM models.daily_revenue__v2 "
        "WHERE order_date = DATE '2024-02-10')"
    )


@pytest.mark.parametrize(
    ("change", "changed", "refused_by"),
    [
        (rebuild_one_day, {"evidence of v2", "last_write"}, None),
        (late_row, {"source raw.orders"}, "built_from_current_sources"),
        (corrected_in_place, {"source raw.orders"}, "built_from_current_sources"),
        (rule_edited, {"plan"}, "reconciles_with_baseline"),
        (table_edited, {"table of v2"}, "reconciles_with_baseline"),
    ],
)
def test_a_change_since_the_window_checks_makes_the_gate_evaluate_again(
    built, plan, change, changed, refused_by
):
    window_job(built, plan)
    change(built, plan)
    if refused_by:
        with pytest.raises(PublishError) as refused:
            promote(built, plan, "v2", APPROVER, "go", "promote-run")
        assert refused_by in str(refused.value)
        gate = refused.value.gate
    else:
        gate, entry = promote(built, plan, "v2", APPROVER, "go", "promote-run")
        assert entry.evidence["verdict_reused_from"] is None
    assert not gate.evaluation.reused
    assert set(gate.evaluation.changed) == changed
    assert [(w, r) for _, w, r, _ in evaluations(built)] == [
        (JOB, "checks-run"),
        (GATE, "promote-run"),
    ]


def test_a_promotion_and_rollback_in_between_make_the_gate_evaluate_again(built, plan):
    window_job(built, plan)
    promote(built, plan, "v2", APPROVER, "go", "promote-1")  # reuses the job's verdict
    rollback(built, plan, "oncall@example.com", "undo", "rollback-1")
    # Everything the checks read is as it was, legacy published again; only the log moved.
    gate, entry = promote(built, plan, "v2", APPROVER, "again", "promote-2")
    assert entry.evidence["verdict_reused_from"] is None
    assert gate.evaluation.changed == ["log"]
    log = history(built, plan)
    assert [e.action for e in log] == ["promote", "rollback", "promote"]
    assert log[0].evidence["verdict_reused_from"]["run_id"] == "checks-run"
    assert log[2].evidence["verdict_reused_from"] is None
    assert [(w, r) for _, w, r, _ in evaluations(built)] == [
        (JOB, "checks-run"),
        (GATE, "promote-2"),
    ]


# --------------------------------------------------------------------------------------------
# through the jobs, on a real Dagster instance


def run(defs: dg.Definitions, instance, job: str, ops: dict | None = None):
    gc.collect()  # a failed op's connection is closed by the collector (test_promotion_jobs)
    config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": ops or {}}
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=config, raise_on_error=False
    )


def test_the_promote_job_reuses_the_window_check_job_verdict(warehouse_file, built, plan, instance):
    built.close()  # the jobs open their own connections
    defs = plan_definitions(plan, LateDataPolicy())
    promote_config = {
        "promote_daily_revenue": {"config": {"version": "v2", "approved_by": APPROVER}}
    }

    checked = run(defs, instance, JOB)
    assert checked.success
    promoted = run(defs, instance, "promote_daily_revenue_job", promote_config)
    assert promoted.success

    with duckdb.connect(str(warehouse_file)) as conn:
        recorded = evaluations(conn)
        log = history(conn, plan)
    assert [(w, r) for _, w, r, _ in recorded] == [(JOB, checked.run_id)]
    assert log[-1].run_id == promoted.run_id
    assert log[-1].evidence["verdict_reused_from"]["run_id"] == checked.run_id
    [materialization] = [
        e.step_materialization_data.materialization
        for e in promoted.get_asset_materialization_events()
    ]
    assert materialization.metadata["verdict_reused_from"].value["run_id"] == checked.run_id
    assert checked.run_id in materialization.metadata["window_checks"].value
    for evaluation in promoted.get_asset_check_evaluations():
        reused = evaluation.metadata.get("verdict_reused_from")
        assert (reused is None) == (evaluation.check_name == IS_FRESH)

    # Roll back, then rebuild a day: the next promotion evaluates the checks itself.
    rolled = run(
        defs,
        instance,
        "rollback_daily_revenue_job",
        {"rollback_daily_revenue": {"config": {"by": "oncall@example.com", "reason": "undo"}}},
    )
    assert rolled.success
    with duckdb.connect(str(warehouse_file)) as conn:
        rebuild_one_day(conn, plan)
    again = run(defs, instance, "promote_daily_revenue_job", promote_config)
    assert again.success
    with duckdb.connect(str(warehouse_file)) as conn:
        assert [(w, r) for _, w, r, _ in evaluations(conn)] == [
            (JOB, checked.run_id),
            (GATE, again.run_id),
        ]
        assert history(conn, plan)[-1].evidence["verdict_reused_from"] is None
    [materialization] = [
        e.step_materialization_data.materialization
        for e in again.get_asset_materialization_events()
    ]
    assert "verdict_reused_from" not in materialization.metadata
    assert "evidence of v2" in materialization.metadata["window_checks"].value


def test_the_state_key_is_cheaper_than_the_checks_it_spares(built, plan):
    """Recorded with every verdict: how long the key and the checks took."""
    evaluated = window_job(built, plan)
    assert 0 < evaluated.verdict.key_seconds and 0 < evaluated.verdict.check_seconds
    [row] = verdicts.history(built, plan, "v2")
    assert row == evaluated.verdict
