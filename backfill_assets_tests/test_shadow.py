"""The shadow period (dual run), for a model the example knows nothing of, through real Dagster.

A daily plan of events per day and category (v2 leaves test events out, and one rule explains
exactly that) is backfilled, promoted by its promotion job, and then lives through four new
days: each day a new partition of events arrives, ``new_partitions_<plan>_sensor`` (ticked on
a real instance) asks for the runs the daemon would launch, they run in process, and the
monitoring schedule's run re-evaluates the published version's window checks. On day 2 an
event arrives whose category is ``Test``: v2 drops it (it compares case-insensitively), the
baseline counts it, and the rule (``category = 'test'``) does not predict it, so the shadow
check fails naming it. After day 3 the baseline is retired: no longer built, its table kept,
and ``backfill.shadow_periods`` records it. Expected figures come from plain queries over the
source table, never from the code under test.

"Days" pass by moving ``partitions.end`` one day forward (the newest partition that exists),
so the test does not depend on the clock; one test leaves ``partitions.end`` unset and checks
that the sensor asks for the partitions up to yesterday.
"""

import datetime as dt
import gc
import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component import plan_definitions
from backfill_assets.component.models import model_key
from backfill_assets.component.sensors import LateDataPolicy
from backfill_assets.partitions import chunks
from backfill_assets.plan import Plan, PlanError, load_plan
from backfill_assets.publish import history
from backfill_assets.shadow import current_shadow, new_partition_builds, retirements
from backfill_assets.window_checks import SHADOW_RECONCILES_WITH_BASELINE
from backfill_assets_tests.helpers import write_events_plan

NAME = "shadow_events"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

START, LAST = dt.date(2024, 1, 1), dt.date(2024, 1, 10)
DAY = [None, *(LAST + dt.timedelta(days=n) for n in range(1, 5))]  # DAY[1] = 2024-01-11


def write_plan(folder: Path, start: dt.date, last: dt.date, end: dt.date | None) -> Plan:
    """The daily events plan ``shadow_events``, dual run with a shadow of three partitions.

    v2 drops test events whatever their case; the rule only predicts the lower-case ones.
    """
    return write_events_plan(
        folder,
        name=NAME,
        start=start,
        last=last,
        end=end,
        v2_where="lower(category) <> 'test'",
        strategy="dual_run",
        shadow_partitions=3,
    )


def add_events(conn: duckdb.DuckDBPyConnection, day: dt.date, extra: list[str] = ()) -> None:
    """48 events on ``day``: categories a, b and test in turn; then one per ``extra`` category."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ops.events "
        "(event_id UUID, category VARCHAR, event_ts TIMESTAMP, loaded_at TIMESTAMP)"
    )
    conn.execute(
        "INSERT INTO ops.events SELECT uuid(), ['a', 'b', 'test'][i % 3 + 1], "
        "CAST(? AS TIMESTAMP) + to_minutes(CAST(i * 30 AS INTEGER)), "
        "CAST(? AS TIMESTAMP) + INTERVAL 1 DAY FROM range(48) AS r(i)",
        [day, day],
    )
    for category in extra:
        conn.execute(
            "INSERT INTO ops.events VALUES (uuid(), ?, CAST(? AS TIMESTAMP) + INTERVAL 13 HOUR, "
            "CAST(? AS TIMESTAMP) + INTERVAL 1 DAY)",
            [category, day, day],
        )


def backfill(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    for version in plan.version_names:
        for start, end in chunks(plan.cadence, plan.window_partitions, plan.chunk):
            build_window(conn, plan, version, start, end, "backfill")


def run_job(defs: dg.Definitions, instance, job: str, run_config: dict | None = None):
    gc.collect()
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config={**QUIET, **(run_config or {})}, raise_on_error=False
    )


def tick(defs: dg.Definitions, instance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
    )
    return defs.resolve_sensor_def(f"new_partitions_{NAME}_sensor")(context), context.cursor


def launch(defs: dg.Definitions, instance, request: dg.RunRequest) -> None:
    """What the daemon would launch for the request, run in process on the same instance."""
    gc.collect()
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        tags=request.tags,
        run_config=QUIET,
        raise_on_error=False,
    )
    assert result.success


def monitor(defs: dg.Definitions, instance) -> dg.AssetCheckEvaluation:
    """One morning of ``monitor_<plan>_schedule``: its run request, run; the shadow check."""
    schedule = defs.resolve_schedule_def(f"monitor_{NAME}_schedule")
    with dg.build_schedule_context(instance=instance) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    result = run_job(defs, instance, schedule.job_name, request.run_config)
    [shadow] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == SHADOW_RECONCILES_WITH_BASELINE
    ]
    return shadow


def new_day(folder: Path, warehouse: Path, day: dt.date, extra: list[str] = ()):
    """A day passes: its events arrive and its partition exists (``partitions.end``)."""
    with duckdb.connect(str(warehouse)) as conn:
        add_events(conn, day, extra)
    plan = write_plan(folder, START, LAST, day)
    return plan, plan_definitions(plan, LateDataPolicy())


def requested(requests) -> list[tuple[str, set[str]]]:
    assert isinstance(requests, list), requests
    return [(r.partition_key, {k.path[-1] for k in r.asset_selection}) for r in requests]


@pytest.fixture
def promoted(tmp_path: Path, warehouse_file: Path, instance):
    """The plan backfilled over its window and v2 promoted by the promotion job."""
    folder = tmp_path / "defs" / NAME
    plan = write_plan(folder, START, LAST, LAST)
    with duckdb.connect(str(warehouse_file)) as conn:
        for offset in range(10):
            add_events(conn, START + dt.timedelta(days=offset))
        backfill(conn, plan)
    defs = plan_definitions(plan, LateDataPolicy())
    config = {"ops": {f"promote_{NAME}": {"config": {"version": "v2", "note": "shadow"}}}}
    assert run_job(defs, instance, f"promote_{NAME}_job", config).success
    return folder, defs


def test_a_shadow_period_fails_on_an_unexplained_new_row_and_retires_the_baseline_after_it(
    promoted, warehouse_file, instance
):
    folder, defs = promoted
    legacy, v2 = f"{NAME}__legacy", f"{NAME}__v2"
    # Before any new partition exists, the sensor has nothing to ask for.
    skipped, cursor = tick(defs, instance, None)
    assert isinstance(skipped, dg.SkipReason), skipped
    with duckdb.connect(str(warehouse_file)) as conn:
        [entry] = history(conn, load_plan(folder / "plan.yaml"))
    assert entry.evidence["shadow"] == {
        "baseline": "legacy", "partitions": 3, "first": "2024-01-11", "last": "2024-01-13",
    }  # fmt: skip

    # Day 1: ordinary events; both versions are built and reconcile.
    plan, defs = new_day(folder, warehouse_file, DAY[1])
    requests, cursor = tick(defs, instance, cursor)
    assert requested(requests) == [("2024-01-11", {legacy, v2})]
    launch(defs, instance, requests[0])
    check = monitor(defs, instance)
    assert check.passed, check.metadata["summary"]
    assert check.metadata["partitions_compared"].value == 1

    # Day 2: one event of category 'Test' that v2 drops and no rule explains.
    plan, defs = new_day(folder, warehouse_file, DAY[2], extra=["Test"])
    requests, cursor = tick(defs, instance, cursor)
    assert requested(requests) == [("2024-01-12", {legacy, v2})]
    launch(defs, instance, requests[0])
    check = monitor(defs, instance)
    assert not check.passed
    summary = check.metadata["summary"].value
    with duckdb.connect(str(warehouse_file)) as conn:
        # Independently: per day and category, baseline minus v2 minus what the rule predicts.
        unexplained = conn.execute(
            """
            SELECT CAST(event_ts AS DATE), category,
                   -(count(*) FILTER (WHERE lower(category) = 'test')
                     - count(*) FILTER (WHERE category = 'test'))
            FROM ops.events WHERE event_ts >= '2024-01-11' AND event_ts < '2024-01-13'
            GROUP BY ALL HAVING count(*) FILTER (WHERE lower(category) = 'test')
                              <> count(*) FILTER (WHERE category = 'test')
            """
        ).fetchall()
    assert unexplained == [(dt.date(2024, 1, 12), "Test", -1)]
    assert "1 group(s) with an unexplained residual" in summary
    assert "partition=2024-01-12, category=Test events: -1.00" in summary
    assert check.metadata["groups_unexplained"].value == 1
    assert check.metadata["retired"].value == 0  # still in shadow

    # Day 3: the last shadow day. Compared, still failing (day 2 stays unexplained): retired.
    plan, defs = new_day(folder, warehouse_file, DAY[3])
    requests, cursor = tick(defs, instance, cursor)
    assert requested(requests) == [("2024-01-13", {legacy, v2})]
    launch(defs, instance, requests[0])
    check = monitor(defs, instance)
    assert not check.passed
    assert "Shadow complete: legacy retired" in check.metadata["summary"].value
    with duckdb.connect(str(warehouse_file)) as conn:
        rows = conn.execute(
            "SELECT model, action, version, baseline, first_partition, last_partition, "
            "partitions_compared, passed FROM backfill.shadow_periods"
        ).fetchall()
        assert rows == [
            (NAME, "retired", "v2", "legacy", dt.datetime(2024, 1, 11), dt.datetime(2024, 1, 13),
             3, False),
        ]  # fmt: skip
        [retired] = retirements(conn, plan)
        assert retired.promotion_run_id == entry.run_id
        assert "partition=2024-01-12, category=Test" in retired.summary

    # Day 4: after the shadow only the published version is built; the baseline's table stays.
    plan, defs = new_day(folder, warehouse_file, DAY[4])
    requests, cursor = tick(defs, instance, cursor)
    assert requested(requests) == [("2024-01-14", {v2})]
    launch(defs, instance, requests[0])
    again, _ = tick(defs, instance, None)  # evidence now holds every new day: nothing to ask
    assert isinstance(again, dg.SkipReason), again
    check = monitor(defs, instance)
    assert not check.passed and "legacy retired (table kept" in check.metadata["summary"].value
    with duckdb.connect(str(warehouse_file)) as conn:
        kept = conn.execute(
            f"SELECT day, sum(events) FROM models.{legacy} WHERE day > '2024-01-10' "
            "GROUP BY day ORDER BY day"
        ).fetchall()
        source = conn.execute(
            "SELECT CAST(event_ts AS DATE), count(*) FROM ops.events "
            "WHERE event_ts >= '2024-01-11' AND event_ts < '2024-01-14' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert kept == source == [(dt.date(2024, 1, 11), 48), (dt.date(2024, 1, 12), 49),
                                  (dt.date(2024, 1, 13), 48)]  # fmt: skip
        v2_new = conn.execute(
            f"SELECT max(day), sum(events) FILTER (WHERE day = '2024-01-14') FROM models.{v2}"
        ).fetchone()
        assert v2_new == (dt.date(2024, 1, 14), 32)  # 48 events, every third a test
        assert len(retirements(conn, plan)) == 1  # retired once, not every morning


def test_a_rollback_ends_the_shadow(promoted, warehouse_file, instance):
    folder, defs = promoted
    config = {"ops": {f"rollback_{NAME}": {"config": {"by": "oncall", "reason": "undo"}}}}
    assert run_job(defs, instance, f"rollback_{NAME}_job", config).success
    plan, defs = new_day(folder, warehouse_file, DAY[1])
    with duckdb.connect(str(warehouse_file)) as conn:
        shadow, reason = current_shadow(conn, plan)
    assert shadow is None and "rollback" in reason
    # The published version (legacy again) keeps growing; nothing is shadowed.
    requests, _ = tick(defs, instance, None)
    assert requested(requests) == [("2024-01-11", {f"{NAME}__legacy"})]


def test_without_partitions_end_the_sensor_asks_up_to_yesterday(tmp_path, conn, instance):
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=8), today - dt.timedelta(days=5)
    plan = write_plan(tmp_path / "defs" / NAME, first, last, None)
    for offset in range(8):
        add_events(conn, first + dt.timedelta(days=offset))
    backfill(conn, plan)
    from backfill_assets.publish import promote

    promote(conn, plan, "v2", "", "shadow", "run-1")
    wanted, _ = new_partition_builds(conn, plan, today - dt.timedelta(days=1))
    conn.close()
    expected = [
        (today - dt.timedelta(days=4), ["v2", "legacy"]),
        (today - dt.timedelta(days=3), ["v2", "legacy"]),
        (today - dt.timedelta(days=2), ["v2", "legacy"]),
        (today - dt.timedelta(days=1), ["v2"]),
    ]
    assert wanted == expected
    defs = plan_definitions(plan, LateDataPolicy())
    requests, cursor = tick(defs, instance, None)
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in requests] == [
        (day.isoformat(), [f"{NAME}__{v}" for v in versions]) for day, versions in expected
    ]
    assert requests[0].asset_selection == [model_key(plan, "v2"), model_key(plan, "legacy")]
    # The cursor remembers them: the next tick asks for nothing new.
    skipped, _ = tick(defs, instance, cursor)
    assert isinstance(skipped, dg.SkipReason)
    assert json.loads(cursor)["requested"][0] == f"{NAME}:new:v2+legacy:{expected[0][0]}"


def test_shadow_partitions_must_be_positive(tmp_path):
    plan = write_plan(tmp_path / "p", START, LAST, None)
    text = plan.path.read_text().replace("shadow_partitions: 3", "shadow_partitions: 0")
    plan.path.write_text(text)
    with pytest.raises(PlanError, match="shadow_partitions"):
        load_plan(plan.path)
