"""Late-arriving data: the repair sensor, bounded ticks, write-audit-publish on repairs, the
window-check sensors, lock handling and the ``arrive`` command (ARCHITECTURE.md §4.5).

Every test works on a copy of one real DuckDB file: three generated months (2024-01-01 ..
2024-03-31, 40 orders a day, seed 7) with both versions of both shipped plans built. The
sensors are ticked with ``build_sensor_context`` on a real Dagster instance, and the runs they
request are executed in process on that instance. Expected days and figures come from the rows
each test appends, never from a previous run of the code.
"""

import datetime as dt
import json
import re
import select
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets import cli
from backfill_assets.build import build_window
from backfill_assets.component.sensors import LateDataPolicy, late_data_sensor
from backfill_assets.example.generator import ensure_tables, generate
from backfill_assets.example.late_rows import append_late_rows
from backfill_assets.late import (
    find_repairs,
    partitions_with_new_rows,
    source_probes,
)
from backfill_assets.publish import ensure_view
from backfill_assets.warehouse import ensure_schema
from backfill_assets_tests.helpers import load_definitions, plan_named, shipped_plans

FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
END = LAST + dt.timedelta(days=1)  # build windows are end-exclusive
ORDERS_PER_DAY = 40
SEED = 7
# Past days that receive late rows: none is a pilot-market day (2024-02-28 .. 2024-03-05, the
# plans' known records), and none is a day whose re-sent order reaches another day (see
# ``days_whose_resend_reaches_other_days``), so exactly these days change.
D1, D2, D3 = dt.date(2024, 1, 10), dt.date(2024, 2, 5), dt.date(2024, 3, 20)
ARRIVED = dt.datetime(2024, 5, 1, 9, 0)  # after every generated row's ingested_at
ARRIVED_AGAIN = dt.datetime(2024, 5, 2, 9, 0)
REPAIR_TAG = "backfill_assets/repair"
PLAN_TAG = "backfill_assets/plan"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def daily_plans() -> list:
    """The example's daily plans, which these tests repair day by day; the monthly plan's
    repairs are tested on their own at the end of this file."""
    return [plan for plan in shipped_plans() if plan.cadence.name == "daily"]


PLAN_NAMES = [plan.name for plan in daily_plans()]
MODEL_TABLES = [plan.model_table(v) for plan in daily_plans() for v in plan.version_names]


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def _dagster_home_folder(tmp_path: Path) -> None:
    """conftest's ``instance`` fixture writes into tmp_path/dagster_home without creating it."""
    (tmp_path / "dagster_home").mkdir(exist_ok=True)


@pytest.fixture(scope="module")
def base_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated months, both daily plans and versions built over them, file closed."""
    path = tmp_path_factory.mktemp("late_base") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        generate(conn, FIRST, LAST, orders_per_day=ORDERS_PER_DAY, seed=SEED)
        for plan in daily_plans():
            for version in plan.version_names:
                build_window(conn, plan, version, FIRST, END, "initial-build")
    return path


@pytest.fixture
def warehouse(base_warehouse: Path, warehouse_file: Path) -> Path:
    """A private copy of the built warehouse at the path BACKFILL_WAREHOUSE names."""
    shutil.copyfile(base_warehouse, warehouse_file)
    return warehouse_file


def connect(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path))


def load_defs(path: Path) -> dg.Definitions:
    defs = load_definitions()
    # The code location must read the warehouse this test set up, not the project's own file.
    assert defs.resources["warehouse"].database == str(path)
    return defs


LATE = "late_data"  # every plan's late-data sensor, ticked one after the other


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    sensor_name: str = LATE,
    cursor: str | None = None,
    policy: LateDataPolicy | None = None,
):
    """One evaluation of a sensor; returns what it returned and the cursor it left.

    ``LATE`` ticks every plan's ``late_data_<plan>_sensor`` (built with ``policy`` when given,
    as ``late_data:`` in a defs.yaml would): the requests of all of them, or one skip reason
    (the common one, else all joined); the cursor is a JSON object of each plan's cursor.
    """
    if sensor_name != LATE:
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources, cursor=cursor
        )
        return defs.resolve_sensor_def(sensor_name)(context), context.cursor
    cursors = json.loads(cursor) if cursor else {}
    requests, skips, after = [], [], {}
    for plan in daily_plans():
        sensor = (
            late_data_sensor(plan, policy)
            if policy
            else defs.resolve_sensor_def(f"late_data_{plan.name}_sensor")
        )
        context = dg.build_sensor_context(
            instance=instance,
            definitions=defs,
            resources=defs.resources,
            cursor=json.dumps(cursors[plan.name]) if plan.name in cursors else None,
        )
        result = sensor(context)
        if isinstance(result, list):
            requests += result
        else:
            skips.append(result.skip_message)
        if context.cursor is not None:
            after[plan.name] = json.loads(context.cursor)
    if requests:
        result = requests
    else:
        result = dg.SkipReason(skips[0] if len(set(skips)) == 1 else " | ".join(skips))
    return result, json.dumps(after) if after else None


def requested_keys(cursor: str) -> set[str]:
    """Run keys every plan's late-data sensor remembers having requested."""
    return {key for state in json.loads(cursor).values() for key in state["requested"]}


def plan_day(request: dg.RunRequest) -> tuple[str, dt.date]:
    return request.tags[PLAN_TAG], dt.date.fromisoformat(request.partition_key)


def run_key_parts(run_key: str) -> tuple[str, str, str, str]:
    """``plan:versions:day:fingerprint`` (the fingerprint itself is ``rows:hash_sum``)."""
    plan, versions, day, fingerprint = run_key.split(":", 3)
    return plan, versions, day, fingerprint


def run_request(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """What the daemon would launch for the request, run in process on the same instance."""
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        asset_selection=request.asset_selection,
        tags=request.tags,
        run_config=QUIET,
        raise_on_error=False,
    )


def built_fingerprints(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, dt.date], tuple]:
    """(model, version, day) -> (source_fingerprint, source_rows) as stored in the evidence."""
    rows = conn.execute(
        "SELECT model, version, partition_start::DATE AS day, source_fingerprint, source_rows "
        "FROM backfill.partition_evidence"
    ).fetchall()
    return {(m, v, d): (fp, n) for m, v, d, fp, n in rows}


def evidence_row(conn: duckdb.DuckDBPyConnection, model: str, version: str, day: dt.date) -> dict:
    row = conn.execute(
        "SELECT source_fingerprint, checks_passed, applied, checks, run_id "
        "FROM backfill.partition_evidence WHERE model = ? AND version = ? AND "
        "partition_start = ?",
        [model, version, day],
    ).fetchone()
    fingerprint, passed, applied, checks, run_id = row
    return {
        "fingerprint": fingerprint,
        "checks_passed": passed,
        "applied": applied,
        "checks": json.loads(checks),
        "run_id": run_id,
    }


def checksum(conn: duckdb.DuckDBPyConnection, query: str, params=None) -> tuple[int, str]:
    """Row count and md5 of every row of ``query`` rendered as text, in a fixed order."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM ({query}) AS t",
        params or [],
    ).fetchone()


def warehouse_checksums(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str]]:
    """Every model table, and the evidence without the columns that name a run or a time."""
    sums = {table: checksum(conn, f"SELECT * FROM {table}") for table in MODEL_TABLES}
    sums["evidence"] = checksum(
        conn,
        "SELECT * EXCLUDE (run_id, written_at, build_seconds) FROM backfill.partition_evidence",
    )
    return sums


def appended_per_day(conn: duckdb.DuckDBPyConnection, arrived_at: dt.datetime) -> dict:
    """Per day: order rows, their amounts and refund amounts ingested at ``arrived_at``."""
    orders = conn.execute(
        "SELECT CAST(order_ts AS DATE), count(*), sum(amount) FROM raw.orders "
        "WHERE ingested_at = ? GROUP BY 1",
        [arrived_at],
    ).fetchall()
    refunds = dict(
        conn.execute(
            "SELECT CAST(refund_ts AS DATE), sum(amount) FROM raw.refunds "
            "WHERE ingested_at = ? GROUP BY 1",
            [arrived_at],
        ).fetchall()
    )
    return {
        day: {"orders": n, "gross": gross, "refunds": refunds.get(day, Decimal("0"))}
        for day, n, gross in orders
    }


def appended_slice_rows(conn: duckdb.DuckDBPyConnection, arrived_at: dt.datetime) -> dict:
    """Per day: raw rows ingested at ``arrived_at`` (orders by order day, refunds by refund day)."""
    return dict(
        conn.execute(
            "SELECT day, count(*) FROM ("
            "SELECT CAST(order_ts AS DATE) AS day FROM raw.orders WHERE ingested_at = $at "
            "UNION ALL "
            "SELECT CAST(refund_ts AS DATE) FROM raw.refunds WHERE ingested_at = $at) "
            "GROUP BY day",
            {"at": arrived_at},
        ).fetchall()
    )


def days_whose_resend_reaches_other_days(conn: duckdb.DuckDBPyConnection) -> list[dt.date]:
    """Days whose first 'placed' order (the one ``append_late_rows`` re-sends) also has a version
    or a refund on another day: a re-send of it changes the sources of that other day too."""
    rows = conn.execute(
        """
        WITH picked AS (
            SELECT CAST(order_ts AS DATE) AS day, order_id
            FROM raw.orders
            WHERE status = 'placed'
            QUALIFY row_number() OVER (PARTITION BY CAST(order_ts AS DATE) ORDER BY order_id) = 1
        )
        SELECT DISTINCT p.day
        FROM picked AS p
        WHERE EXISTS (
                SELECT 1 FROM raw.orders AS o
                WHERE o.order_id = p.order_id AND CAST(o.order_ts AS DATE) <> p.day
            )
           OR EXISTS (
                SELECT 1 FROM raw.refunds AS r
                WHERE r.order_id = p.order_id AND CAST(r.refund_ts AS DATE) <> p.day
            )
        ORDER BY p.day
        """
    ).fetchall()
    return [row[0] for row in rows if FIRST <= row[0] <= LAST]


def published_day(conn: duckdb.DuckDBPyConnection, view: str, day: dt.date) -> tuple:
    return checksum(conn, f"SELECT * FROM {view} WHERE order_date = ?", [day])


# --------------------------------------------------------------------------------------------
# 1. The sensor asks for exactly the changed days, once per change


def test_sensor_requests_each_late_day_once_per_change_for_every_built_version(warehouse, instance):
    with connect(warehouse) as conn:
        assert not {D1, D2, D3} & set(days_whose_resend_reaches_other_days(conn))
        built = built_fingerprints(conn)
        arrival = append_late_rows(conn, [D1, D2, D3], rows_per_day=3, arrived_at=ARRIVED)
        appended = appended_slice_rows(conn, ARRIVED)
    assert arrival.days == [D1, D2, D3]
    assert set(appended) == {D1, D2, D3}

    # The sensor opens the file read-only after this process closed its writer.
    defs = load_defs(warehouse)
    first, cursor = tick(defs, instance)
    assert isinstance(first, list), first
    assert sorted(plan_day(r) for r in first) == sorted(
        (plan, day) for plan in PLAN_NAMES for day in (D1, D2, D3)
    )
    for request in first:
        plan, day = plan_day(request)
        versions = plan_named(plan).version_names
        expected = {dg.AssetKey(["models", f"{plan}__{v}"]) for v in versions}
        assert set(request.asset_selection) == expected
        assert request.tags[REPAIR_TAG] == "late_data"
        key_plan, key_versions, key_day, fingerprint = run_key_parts(request.run_key)
        assert (key_plan, key_versions, key_day) == (plan, "+".join(versions), day.isoformat())
        for version in versions:
            assert fingerprint != built[(plan, version, day)][0]
        if plan == "daily_revenue":
            # Its slice of a day holds every order row and refund of the day's orders: the new
            # fingerprint counts exactly the rows appended to that day on top of the built ones.
            rows = int(fingerprint.split(":")[0])
            assert rows == built[(plan, "legacy", day)][1] + appended[day]
    first_keys = {r.run_key for r in first}
    assert len(first_keys) == len(first)
    assert requested_keys(cursor) == first_keys

    # Nothing new: the sources did not move, so nothing is scanned or requested again.
    again, cursor_after_skip = tick(defs, instance, cursor=cursor)
    assert isinstance(again, dg.SkipReason)
    assert again.skip_message == "no source table changed since the last scan"
    # A full scan of the same state finds the same changes and still does not repeat them.
    full_policy = LateDataPolicy(full_scan_minutes=1)
    stale_cursor = json.dumps(
        {plan: {**state, "full_scan_at": 0} for plan, state in json.loads(cursor).items()}
    )
    rescan, _ = tick(defs, instance, cursor=stale_cursor, policy=full_policy)
    assert isinstance(rescan, dg.SkipReason)
    assert "3 already requested" in rescan.skip_message  # D1, D2 and D3, in each plan

    # A further late row on one of the days: that day again, under a new key, and only that day.
    with connect(warehouse) as conn:
        append_late_rows(conn, [D2], rows_per_day=1, seed=2, arrived_at=ARRIVED_AGAIN)
    third, cursor = tick(defs, instance, cursor=cursor_after_skip)
    assert isinstance(third, list), third
    assert sorted(plan_day(r) for r in third) == [(plan, D2) for plan in sorted(PLAN_NAMES)]
    earlier = {plan_day(r): run_key_parts(r.run_key)[3] for r in first}
    for request in third:
        assert request.run_key not in first_keys
        assert run_key_parts(request.run_key)[3] != earlier[plan_day(request)]
    assert requested_keys(cursor) == first_keys | {r.run_key for r in third}
    # The sources only grew, by rows newer than the last look: the tick compared only the days
    # those rows reach, not the whole window.
    state = json.loads(cursor)
    assert "daily_revenue (1 days with new rows)" in state["daily_revenue"]["seen"]
    # ...which is no full scan: the clock of the periodic full scan (edits in place) runs on.
    earlier_state = json.loads(cursor_after_skip)
    for plan in PLAN_NAMES:
        assert state[plan]["full_scan_at"] == earlier_state[plan]["full_scan_at"]


def test_narrowed_scan_finds_what_the_full_scan_finds_when_appended_rows_reach_other_days(
    warehouse,
):
    """A re-send that moves an order from day A to day B, and a late refund (day E) of an order
    placed on day C: the days they reach are compared, and nothing else is needed."""
    plans = daily_plans()
    with connect(warehouse) as conn:
        before = source_probes(conn, plans)
        moved, a = conn.execute(
            "SELECT order_id, CAST(order_ts AS DATE) FROM raw.orders "
            "WHERE CAST(order_ts AS DATE) = ? ORDER BY order_id LIMIT 1",
            [D1],
        ).fetchone()
        b = D2
        refunded, c = conn.execute(
            "SELECT order_id, CAST(order_ts AS DATE) FROM raw.orders "
            "WHERE CAST(order_ts AS DATE) = ? AND order_id <> ? ORDER BY order_id LIMIT 1",
            [D3, moved],
        ).fetchone()
        e = D3 + dt.timedelta(days=5)
        conn.execute(
            "INSERT INTO raw.orders SELECT order_id, customer_id, region, "
            "order_ts + INTERVAL (?) DAY, amount, 'shipped', ? FROM raw.orders "
            "WHERE order_id = ? QUALIFY row_number() OVER (ORDER BY ingested_at DESC) = 1",
            [(b - a).days, ARRIVED, moved],
        )
        conn.execute(
            "INSERT INTO raw.refunds SELECT max(refund_id) + 1, ?, ?, 1.00, ? FROM raw.refunds",
            [refunded, dt.datetime.combine(e, dt.time(10)), ARRIVED],
        )
        now = source_probes(conn, plans)
        for plan in plans:
            days = partitions_with_new_rows(conn, plan, before, now)
            assert days is not None, plan.name
            narrowed = find_repairs(conn, [plan], {plan.name: days})
            full = find_repairs(conn, [plan])
            assert narrowed.repairs == full.repairs, plan.name
            changed = {r.partition for r in full.repairs}
            assert {a, b} <= changed
            if plan.name == "daily_revenue":
                assert {c, e} <= changed  # the refund changes its own day and its order's
            assert set(days) >= changed
            assert len(days) < plan.window_size  # and not the whole window

        # A back-dated row (ingested before the newest the last look saw): only a full
        # comparison can tell what it changed.
        conn.execute(
            "INSERT INTO raw.refunds SELECT max(refund_id) + 1, ?, ?, 1.00, ? FROM raw.refunds",
            [refunded, dt.datetime.combine(e, dt.time(11)), dt.datetime(2024, 1, 1)],
        )
        assert (
            partitions_with_new_rows(
                conn, plan_named("daily_revenue"), now, source_probes(conn, plans)
            )
            is None
        )


def test_sensor_skips_while_this_process_holds_the_warehouse_for_writing(warehouse, instance):
    """DuckDB refuses a read-only open beside a read-write one in the same process."""
    defs = load_defs(warehouse)
    with connect(warehouse) as conn:
        append_late_rows(conn, [D1], rows_per_day=2, arrived_at=ARRIVED)
        result, cursor = tick(defs, instance)
        assert isinstance(result, dg.SkipReason)
        assert "warehouse not readable" in result.skip_message
        assert cursor is None
    result, _ = tick(defs, instance)
    assert isinstance(result, list)
    assert {plan_day(r) for r in result} == {(plan, D1) for plan in PLAN_NAMES}


# --------------------------------------------------------------------------------------------
# 2. Days outside a plan's window are ignored and reported


def test_find_repairs_ignores_days_outside_the_window_and_says_how_many(warehouse):
    january = plan_named("daily_revenue").with_window(FIRST, dt.date(2024, 1, 31))
    february_day = dt.date(2024, 2, 5)
    with connect(warehouse) as conn:
        append_late_rows(conn, [D1, february_day], rows_per_day=2, arrived_at=ARRIVED)
        scan = find_repairs(conn, [january])
        full = find_repairs(conn, [plan_named("daily_revenue")])

    assert [(r.plan, r.partition) for r in scan.repairs] == [("daily_revenue", D1)]
    built_outside = (LAST - dt.date(2024, 2, 1)).days + 1  # every built day of Feb and March
    assert scan.outside_window == {"daily_revenue": built_outside}
    text = scan.describe(scan.repairs)
    assert f"{built_outside} built day(s) outside the plan windows ignored" in text
    assert "2024-02-05" not in text
    # Positive control: over the shipped two-year window the February day is a repair.
    assert [(r.plan, r.partition) for r in full.repairs] == [
        ("daily_revenue", D1),
        ("daily_revenue", february_day),
    ]
    assert full.outside_window == {"daily_revenue": 0}


def test_days_never_built_are_not_repaired_however_their_sources_change(
    warehouse_file: Path,
):
    """A backfill half done: late rows on a built and on a not-yet-built day; only the built
    day is a repair (the other one will be built from the current sources anyway)."""
    revenue = plan_named("daily_revenue")
    january_day, march_day = D1, D3
    with connect(warehouse_file) as conn:
        generate(conn, FIRST, LAST, orders_per_day=ORDERS_PER_DAY, seed=SEED)
        build_window(conn, revenue, "v2", FIRST, dt.date(2024, 2, 1), "january")
        append_late_rows(conn, [january_day, march_day], rows_per_day=2, arrived_at=ARRIVED)
        scan = find_repairs(conn, [revenue])
        assert [(r.partition, r.versions) for r in scan.repairs] == [(january_day, ("v2",))]
        # Nothing built at all: nothing to compare.
        assert find_repairs(conn, [plan_named("fct_orders")]).repairs == []


def test_a_repair_names_only_the_versions_built_for_that_day(warehouse):
    """A day only the baseline has been built for is repaired for the baseline alone."""
    plan = plan_named("daily_revenue")
    with connect(warehouse) as conn:
        # v2 of March not backfilled yet: no rows, no evidence.
        conn.execute(
            "DELETE FROM backfill.partition_evidence "
            "WHERE model = 'daily_revenue' AND version = 'v2' AND partition_start >= '2024-03-01'"
        )
        conn.execute(f"DELETE FROM {plan.model_table('v2')} WHERE order_date >= '2024-03-01'")
        append_late_rows(conn, [D1, D3], rows_per_day=2, arrived_at=ARRIVED)
        scan = find_repairs(conn, [plan])
    assert [(r.partition, r.versions) for r in scan.repairs] == [
        (D1, ("legacy", "v2")),
        (D3, ("legacy",)),
    ]
    assert scan.repairs[1].run_key.startswith(f"daily_revenue:legacy:{D3}:")


# --------------------------------------------------------------------------------------------
# 3. Bounded work per tick


def test_at_most_max_repairs_per_tick_oldest_first_and_the_rest_wait(warehouse, instance):
    with connect(warehouse) as conn:
        append_late_rows(conn, [D3, D1, D2], rows_per_day=2, arrived_at=ARRIVED)
    defs = load_defs(warehouse)
    policy = LateDataPolicy(max_repairs_per_tick=1)
    pairs = len(PLAN_NAMES) * 3

    cursor = None
    seen_keys: list[str] = []
    for ticks, day in enumerate((D1, D2, D3), start=1):
        result, cursor = tick(defs, instance, cursor=cursor, policy=policy)
        assert isinstance(result, list), result
        # Each plan's sensor asks for one day per tick, its oldest.
        assert sorted(plan_day(r) for r in result) == [(plan, day) for plan in sorted(PLAN_NAMES)]
        seen_keys += [r.run_key for r in result]
        for plan in PLAN_NAMES:
            seen = json.loads(cursor)[plan]["seen"]
            waiting = 3 - ticks
            assert "3 day(s) changed" in seen
            if waiting:
                assert f"{waiting} wait for the next tick" in seen
            else:
                assert "wait" not in seen
    assert len(set(seen_keys)) == pairs

    done, cursor = tick(defs, instance, cursor=cursor, policy=policy)
    assert isinstance(done, dg.SkipReason)
    # Nothing waits any more and the sources did not move: the tick does not even scan.
    assert done.skip_message == "no source table changed since the last scan"

    # Positive control: the default policy requests all of them in one tick.
    everything, _ = tick(defs, instance)
    assert len(everything) == pairs


# --------------------------------------------------------------------------------------------
# 4. Running the repairs equals a rebuild from scratch; the published view shows the repair


def test_running_the_requested_repairs_matches_a_full_rebuild(warehouse, instance, tmp_path):
    revenue = plan_named("daily_revenue")
    untouched = D1 - dt.timedelta(days=1)
    with connect(warehouse) as conn:
        assert ensure_view(conn, revenue) == "legacy"
        totals = (
            "SELECT order_date, sum(orders), sum(gross_revenue), sum(refunds) "
            "FROM analytics.daily_revenue GROUP BY order_date"
        )
        before = {row[0]: row[1:] for row in conn.execute(totals).fetchall()}
        append_late_rows(conn, [D1, D2, D3], rows_per_day=3, arrived_at=ARRIVED)
        appended = appended_per_day(conn, ARRIVED)
    assert set(appended) == {D1, D2, D3}

    defs = load_defs(warehouse)
    requests, cursor = tick(defs, instance)
    assert len(requests) == len(PLAN_NAMES) * 3
    for request in requests:
        result = run_request(defs, instance, request)
        assert result.success, request.run_key
        assert instance.get_run_by_id(result.run_id).tags[REPAIR_TAG] == "late_data"

    # Nothing left to repair: a full scan (no cursor) finds no changed day.
    after, _ = tick(defs, instance, cursor=None)
    assert isinstance(after, dg.SkipReason)
    assert after.skip_message.startswith("0 day(s) changed")

    with connect(warehouse) as conn:
        for request in requests:
            plan, day = plan_day(request)
            for version in plan_named(plan).version_names:
                row = evidence_row(conn, plan, version, day)
                # The repair recorded the fingerprint its run key named, and checked clean.
                assert row["fingerprint"] == run_key_parts(request.run_key)[3]
                assert row["checks_passed"] and row["applied"]
                assert row["run_id"] != "initial-build"
        repaired = warehouse_checksums(conn)
        after = {row[0]: row[1:] for row in conn.execute(totals).fetchall()}
        for table in ("orders", "refunds", "customers"):
            conn.execute(f"COPY raw.{table} TO '{tmp_path / table}.parquet' (FORMAT parquet)")

    # The same final raw data, built from scratch.
    with connect(tmp_path / "rebuilt.duckdb") as fresh:
        ensure_schema(fresh)
        ensure_tables(fresh)
        for table in ("orders", "refunds", "customers"):
            fresh.execute(
                f"INSERT INTO raw.{table} SELECT * FROM read_parquet('{tmp_path / table}.parquet')"
            )
        for plan in daily_plans():
            for version in plan.version_names:
                build_window(fresh, plan, version, FIRST, END, "rebuild")
        rebuilt = warehouse_checksums(fresh)
    assert repaired == rebuilt

    # Legacy (published) counts every appended row, re-send included, on its own day, and books
    # each appended refund on its order's day (all of whose versions are on the refund's day).
    for day in (D1, D2, D3):
        assert appended[day]["orders"] == 3 + 1
        orders, gross, refunds = (a - b for a, b in zip(after[day], before[day], strict=True))
        assert orders == appended[day]["orders"]
        assert gross == appended[day]["gross"]
        assert refunds == appended[day]["refunds"]
    assert after[untouched] == before[untouched]


# --------------------------------------------------------------------------------------------
# 5. A late row that breaks a blocking check of the published version


def test_a_repair_failing_a_blocking_check_leaves_the_published_day_as_it_was(warehouse, instance):
    fct = plan_named("fct_orders")
    day = dt.date(2024, 2, 14)
    customer = 8_000_001  # not a generated or pilot customer
    with connect(warehouse) as conn:
        assert ensure_view(conn, fct) == "legacy"
        published_before = published_day(conn, fct.view, day)
        order_id = conn.execute("SELECT max(order_id) + 1 FROM raw.orders").fetchone()[0]
        # Bad upstream data: two open ("current") segment rows for one customer; the second
        # starts after the order, so only the legacy join (valid_to IS NULL) doubles the order.
        conn.execute(
            "INSERT INTO raw.customers VALUES "
            "(?, 'consumer', 'north', TIMESTAMP '2023-01-01', NULL), "
            "(?, 'smb', 'north', TIMESTAMP '2024-06-01', NULL)",
            [customer, customer],
        )
        conn.execute(
            "INSERT INTO raw.orders VALUES "
            "(?, ?, 'north', TIMESTAMP '2024-02-14 10:00:00', 12.50, 'placed', ?)",
            [order_id, customer, ARRIVED],
        )

    defs = load_defs(warehouse)
    requests, cursor = tick(defs, instance)
    assert sorted(plan_day(r) for r in requests) == [(plan, day) for plan in sorted(PLAN_NAMES)]
    repair = next(r for r in requests if r.tags[PLAN_TAG] == "fct_orders")
    result = run_request(defs, instance, repair)

    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed = [
        (e.asset_key, e.check_name, e.partition, e.metadata["failed_checks"].value)
        for e in evaluations
        if not e.passed
    ]
    assert failed == [
        (
            dg.AssetKey(["models", "fct_orders__legacy"]),
            "partition_checks_passed",
            day.isoformat(),
            "grain_is_unique",
        )
    ]
    failed_steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failed_steps == ["models__fct_orders__legacy"]

    with connect(warehouse) as conn:
        assert published_day(conn, fct.view, day) == published_before
        legacy = evidence_row(conn, "fct_orders", "legacy", day)
        assert legacy["checks_passed"] is False
        assert legacy["applied"] is False
        assert legacy["checks"]["grain_is_unique"]["duplicate_rows"] == 1
        assert legacy["checks"]["grain_is_unique"]["first_duplicate_keys"] == [str(order_id)]
        # The unpublished candidate is written whole: the late order is in it, once.
        v2 = evidence_row(conn, "fct_orders", "v2", day)
        assert v2["checks_passed"] is True and v2["applied"] is True
        assert conn.execute(
            f"SELECT order_date, customer_segment FROM {fct.model_table('v2')} WHERE order_id = ?",
            [order_id],
        ).fetchall() == [(day, "consumer")]
        # Upstream fixes its data: the wrong open row goes away.
        conn.execute(
            "DELETE FROM raw.customers WHERE customer_id = ? AND segment = 'smb'", [customer]
        )

    again, _ = tick(defs, instance, cursor=cursor)
    assert [plan_day(r) for r in again] == [("fct_orders", day)]
    assert run_request(defs, instance, again[0]).success
    with connect(warehouse) as conn:
        assert evidence_row(conn, "fct_orders", "legacy", day)["applied"] is True
        assert (
            conn.execute(
                f"SELECT count(*) FROM {fct.view} WHERE order_id = ?", [order_id]
            ).fetchone()[0]
            == 1
        )
        assert published_day(conn, fct.view, day)[0] == published_before[0] + 1


# --------------------------------------------------------------------------------------------
# 6. Window checks re-run once writes have settled


def test_window_check_sensor_waits_for_writes_to_settle_then_requests_once(warehouse, instance):
    revenue = plan_named("daily_revenue")
    sensor_name = "window_checks_daily_revenue_sensor"
    with connect(warehouse) as conn:
        build_window(conn, revenue, "v2", D1, D1 + dt.timedelta(days=1), "fresh-write")
    defs = load_defs(warehouse)
    assert defs.resolve_sensor_def(sensor_name).job_name == "window_checks_daily_revenue_job"

    settling, cursor = tick(defs, instance, sensor_name)
    assert isinstance(settling, dg.SkipReason)
    assert "settling" in settling.skip_message
    assert cursor is None

    settle = (
        "UPDATE backfill.partition_evidence "
        "SET written_at = now()::TIMESTAMP - INTERVAL 2 MINUTE WHERE model = ?"
    )
    with connect(warehouse) as conn:
        conn.execute(settle, ["daily_revenue"])
    request, cursor = tick(defs, instance, sensor_name)
    assert isinstance(request, dg.RunRequest), request
    assert request.run_key.startswith("daily_revenue:")
    first_key = request.run_key

    repeat, cursor = tick(defs, instance, sensor_name, cursor=cursor)
    assert isinstance(repeat, dg.SkipReason)
    assert "already requested" in repeat.skip_message

    # A later write (e.g. a repair) makes the checks due again once it has settled.
    with connect(warehouse) as conn:
        build_window(conn, revenue, "legacy", D2, D2 + dt.timedelta(days=1), "repair-write")
    pending, cursor = tick(defs, instance, sensor_name, cursor=cursor)
    assert isinstance(pending, dg.SkipReason)
    assert "settling" in pending.skip_message
    with connect(warehouse) as conn:
        conn.execute(
            "UPDATE backfill.partition_evidence "
            "SET written_at = now()::TIMESTAMP - INTERVAL 90 SECOND "
            "WHERE model = ? AND run_id = 'repair-write'",
            ["daily_revenue"],
        )
    second, cursor = tick(defs, instance, sensor_name, cursor=cursor)
    assert isinstance(second, dg.RunRequest), second
    assert second.run_key.startswith("daily_revenue:") and second.run_key != first_key


def test_window_check_sensor_skips_when_the_checks_already_ran_after_the_write(warehouse, instance):
    """Someone launched the window-check job by hand after the last write: the sensor must
    not queue the same checks again (on two years they take a minute of the writer pool)."""
    revenue = plan_named("daily_revenue")
    sensor_name = "window_checks_daily_revenue_sensor"
    with connect(warehouse) as conn:
        build_window(conn, revenue, "v2", D1, D1 + dt.timedelta(days=1), "settled-write")
        conn.execute(
            "UPDATE backfill.partition_evidence "
            "SET written_at = now()::TIMESTAMP - INTERVAL 2 MINUTE WHERE model = ?",
            ["daily_revenue"],
        )
    defs = load_defs(warehouse)
    by_hand = defs.resolve_job_def("window_checks_daily_revenue_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert by_hand.run_id

    skipped, cursor = tick(defs, instance, sensor_name)
    assert isinstance(skipped, dg.SkipReason), skipped
    assert "window_checks_daily_revenue_job already ran after the write" in skipped.skip_message
    # The other plan's checks never ran: its sensor still asks for them.
    with connect(warehouse) as conn:
        conn.execute(
            "UPDATE backfill.partition_evidence "
            "SET written_at = now()::TIMESTAMP - INTERVAL 2 MINUTE WHERE model = ?",
            ["fct_orders"],
        )
    other, _ = tick(defs, instance, "window_checks_fct_orders_sensor")
    assert isinstance(other, dg.RunRequest), other


# --------------------------------------------------------------------------------------------
# 7. A writer in another process


def test_sensors_skip_while_another_process_writes_the_warehouse(warehouse, instance):
    with connect(warehouse) as conn:
        append_late_rows(conn, [D1], rows_per_day=2, arrived_at=ARRIVED)
    defs = load_defs(warehouse)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "c = duckdb.connect(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(warehouse),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready and holder.stdout.readline().strip() == "ready"
        for sensor_name in (LATE, "window_checks_daily_revenue_sensor"):
            result, cursor = tick(defs, instance, sensor_name)
            assert isinstance(result, dg.SkipReason), sensor_name
            assert "warehouse not readable now" in result.skip_message
            assert cursor is None
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
    # Positive control: once the writer is gone, the same tick sees the late day.
    result, _ = tick(defs, instance)
    assert isinstance(result, list)
    assert {plan_day(r) for r in result} == {(plan, D1) for plan in PLAN_NAMES}


# --------------------------------------------------------------------------------------------
# 8. The arrive command


def test_arrive_command_appends_rows_for_the_days_it_prints(warehouse, instance, capsys):
    with connect(warehouse) as conn:
        max_order, max_ingested = conn.execute(
            "SELECT max(order_id), max(ingested_at) FROM raw.orders"
        ).fetchone()

    assert cli.main(["arrive", "--days", "3", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    printed = [dt.date.fromisoformat(d) for d in re.findall(r"\d{4}-\d{2}-\d{2}", out)]
    assert len(printed) == 3 == len(set(printed))
    assert all(FIRST <= day <= LAST for day in printed)
    assert out.startswith("appended 6 late orders")

    with connect(warehouse) as conn:
        new_orders = conn.execute(
            "SELECT CAST(order_ts AS DATE), count(*) FROM raw.orders "
            "WHERE order_id > ? GROUP BY 1 ORDER BY 1",
            [max_order],
        ).fetchall()
        late_rows = conn.execute(
            "SELECT DISTINCT CAST(order_ts AS DATE) FROM raw.orders WHERE ingested_at > ? "
            "UNION SELECT DISTINCT CAST(refund_ts AS DATE) FROM raw.refunds WHERE ingested_at > ?",
            [max_ingested, max_ingested],
        ).fetchall()
        risky = set(days_whose_resend_reaches_other_days(conn))
    assert new_orders == [(day, 2) for day in sorted(printed)]
    assert sorted(row[0] for row in late_rows) == sorted(printed)

    # What the command promises: the sensor requests exactly those days, for every plan.
    assert not risky & set(printed)  # see test_append_late_rows_changes_only_the_days_it_names
    result, _ = tick(load_defs(warehouse), instance)
    assert sorted(plan_day(r) for r in result) == sorted(
        (plan, day) for plan in PLAN_NAMES for day in printed
    )


def test_arrive_command_without_source_rows_says_so(warehouse_file, capsys):
    with connect(warehouse_file) as conn:
        ensure_schema(conn)
        ensure_tables(conn)
    assert cli.main(["arrive", "--days", "3", "--rows", "2"]) == 1
    assert "seed or load data first" in capsys.readouterr().err
    with connect(warehouse_file) as conn:
        assert conn.execute("SELECT count(*) FROM raw.orders").fetchone()[0] == 0


# --------------------------------------------------------------------------------------------
# Known bug


def test_append_late_rows_changes_only_the_days_it_names(warehouse):
    with connect(warehouse) as conn:
        risky = days_whose_resend_reaches_other_days(conn)
        assert risky, "the generated data has no such day; the test needs one"
        day = risky[0]
        append_late_rows(conn, [day], rows_per_day=3, arrived_at=ARRIVED)
        scan = find_repairs(conn, list(daily_plans()))
    assert {r.partition for r in scan.repairs} == {day}


def test_an_edit_in_place_is_found_by_the_periodic_full_scan_not_by_the_probes(warehouse, instance):
    """Probes see new rows; an UPDATE that keeps count and newest ingested_at needs a full scan."""
    defs = load_defs(warehouse)
    quiet, cursor = tick(defs, instance)  # first tick: full scan, nothing changed yet
    assert isinstance(quiet, dg.SkipReason)
    day = dt.date(2024, 2, 20)
    with connect(warehouse) as conn:
        (order_id,) = conn.execute(
            "SELECT min(order_id) FROM raw.orders WHERE CAST(order_ts AS DATE) = ?", [day]
        ).fetchone()
        conn.execute("UPDATE raw.orders SET amount = amount + 1 WHERE order_id = ?", [order_id])

    missed, cursor = tick(defs, instance, cursor=cursor)
    assert isinstance(missed, dg.SkipReason)
    assert missed.skip_message == "no source table changed since the last scan"

    due = json.dumps(
        {plan: {**state, "full_scan_at": 0} for plan, state in json.loads(cursor).items()}
    )
    found, _ = tick(defs, instance, cursor=due, policy=LateDataPolicy(full_scan_minutes=1))
    assert isinstance(found, list)
    with connect(warehouse) as conn:
        order_days = conn.execute(
            "SELECT DISTINCT CAST(order_ts AS DATE) FROM raw.orders WHERE order_id = ?",
            [order_id],
        ).fetchall()
    # Exactly the days of the edited order are repaired, for both plans.
    assert {plan_day(r) for r in found} == {(p, d) for p in PLAN_NAMES for (d,) in order_days}


def monthly_runs(conn: duckdb.DuckDBPyConnection) -> dict[tuple[str, dt.date], str]:
    """(version, month) -> the run that last built it, for the monthly plan."""
    rows = conn.execute(
        "SELECT version, partition_start::DATE, run_id FROM backfill.partition_evidence "
        "WHERE model = 'monthly_active_customers'"
    ).fetchall()
    return {(version, month): run for version, month, run in rows}


def test_a_late_order_in_a_past_month_repairs_exactly_that_month(warehouse, instance):
    """The monthly plan: one late order on 5 February is one repair, of February, for both
    versions; running it leaves the months equal to a rebuild from scratch."""
    monthly = plan_named("monthly_active_customers")
    months = [dt.date(2024, m, 1) for m in (1, 2, 3)]
    with connect(warehouse) as conn:
        for version in monthly.version_names:
            build_window(conn, monthly, version, months[0], END, "initial-build")
        assert ensure_view(conn, monthly) == "legacy"
        before = monthly_runs(conn)
        append_late_rows(conn, [D2], rows_per_day=2, arrived_at=ARRIVED)
    assert D2.month == 2 and len(before) == 6
    defs = load_defs(warehouse)
    context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
    requests = defs.resolve_sensor_def("late_data_monthly_active_customers_sensor")(context)
    assert isinstance(requests, list), requests
    assert [(r.partition_key, r.tags[PLAN_TAG]) for r in requests] == [
        ("2024-02-01", "monthly_active_customers")
    ]
    (request,) = requests
    assert set(request.asset_selection) == {
        dg.AssetKey(["models", f"monthly_active_customers__{v}"]) for v in monthly.version_names
    }
    assert "1 month(s) changed" in json.loads(context.cursor)["seen"]
    result = run_request(defs, instance, request)
    assert result.success
    with connect(warehouse) as conn:
        after = monthly_runs(conn)
        # February was rebuilt by the repair run; January and March kept their builds.
        assert {k for k in after if after[k] != before[k]} == {
            (v, dt.date(2024, 2, 1)) for v in monthly.version_names
        }
        assert find_repairs(conn, [monthly]).repairs == []
        # The legacy count of February equals a plain query over the sources now.
        counted = conn.execute(
            "SELECT sum(active_customers) FROM models.monthly_active_customers__legacy "
            "WHERE activity_month = DATE '2024-02-01'"
        ).fetchone()[0]
        expected = conn.execute(
            "SELECT sum(n) FROM (SELECT region, count(DISTINCT customer_id) AS n "
            "FROM raw.orders WHERE order_ts >= '2024-02-01' AND order_ts < '2024-03-01' "
            "GROUP BY region)"
        ).fetchone()[0]
        assert counted == expected
