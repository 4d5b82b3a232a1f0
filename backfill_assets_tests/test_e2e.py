"""End to end: a real ``dagster dev`` (webserver + daemon) driven through its GraphQL API.

Every step goes through the same API calls the UI makes (launch a partition backfill, cancel it,
re-execute it from failure, launch a job with run config, read runs and their event logs), on a
temporary Dagster home that carries the shipped ``dagster.yaml`` (one ``duckdb`` pool slot) and
a temporary warehouse seeded with two years of orders and fully built for both versions of both
plans. The tests run in file order and share the running instance; the last one stops it and
checks that nothing it started is left running. Each test sets up or reads what it needs from
that built state, so any one of them passes alone (``pytest -m e2e -k late``).

The warehouse is a single DuckDB file that runs and sensors of the running instance may hold at
any moment: the test opens it only briefly, in a retry loop (``warehouse()``).

The UI test writes its screenshots to ``docs/screenshots/`` each time it runs.
"""

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component.models import RANGE_END_TAG, RANGE_START_TAG
from backfill_assets.example.dagster_dev import FINISHED_RUN, DagsterDev, DagsterDevError
from backfill_assets.example.generator import generate
from backfill_assets.example.late_rows import append_late_rows
from backfill_assets.late import find_repairs
from backfill_assets.settings import PROJECT_DIR, SHIPPED_DAGSTER_HOME
from backfill_assets_tests.helpers import shipped_plans

pytestmark = pytest.mark.e2e

SEED_FIRST = dt.date(2024, 1, 1)
SEED_LAST = dt.date(2025, 12, 31)
BUILD_END = dt.date(2026, 1, 1)  # exclusive
OK_BACKFILL = {"COMPLETED_SUCCESS", "COMPLETED"}
VERSIONS = ("legacy", "v2")
LOCK_ERRORS = ("could not set lock", "conflicting lock")
PARTITION_TAG = "dagster/partition"
SENSOR_TAG = "dagster/sensor_name"
REPAIR_TAG = "backfill_assets/repair"
PLAN_TAG = "backfill_assets/plan"
GROUP_ROUTE = "/locations/backfill_assets/asset-groups/{group}"
SCREENSHOTS = PROJECT_DIR / "docs" / "screenshots"

RUN_QUERY = """
query Run($id: ID!, $after: String) {
  runOrError(runId: $id) {
    __typename
    ... on Run {
      id status startTime endTime
      tags { key value }
      assetSelection { path }
      eventConnection(afterCursor: $after) {
        cursor hasMore
        events {
          __typename
          ... on MessageEvent { message }
          ... on MaterializationEvent { assetKey { path } partition }
          ... on ExecutionStepFailureEvent { stepError: error { message causes { message } } }
          ... on RunFailureEvent { runError: error { message causes { message } } }
        }
      }
    }
  }
}
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 1000) {
    __typename
    ... on Runs { results { id status startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""

POOLS_QUERY = """
{
  instance {
    poolConfig { poolGranularity defaultPoolLimit }
    concurrencyLimits { concurrencyKey slotCount }
  }
}
"""


LAUNCH_ASSETS = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { id } }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class E2E:
    dev: DagsterDev
    warehouse: Path
    tmp: Path


# Process groups of everything the module starts (dagster dev, chromium), checked at the end.
STARTED_GROUPS: list[int] = []


# --- warehouse access ---------------------------------------------------------------------------


@contextmanager
def warehouse(path: Path, read_only: bool = True, timeout: float = 120) -> Iterator:
    """A short-lived connection, retried while a run or sensor of dagster dev holds the file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        yield conn
    finally:
        conn.close()


def fetch(path: Path, sql: str, params: dict | list | None = None) -> list[tuple]:
    with warehouse(path) as conn:
        return conn.execute(sql, params).fetchall()


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(n) for n in range((last - first).days + 1)]


def evidence(path: Path, model: str, first: dt.date, last: dt.date) -> dict[tuple, list[str]]:
    """(version, day) -> run ids of the evidence rows of ``model`` in ``first``..``last``."""
    rows = fetch(
        path,
        "SELECT version, partition_start::DATE AS day, run_id FROM backfill.partition_evidence "
        "WHERE model = ? AND partition_start BETWEEN ? AND ?",
        [model, first, last],
    )
    found: dict[tuple, list[str]] = {}
    for version, day, run_id in rows:
        found.setdefault((version, day), []).append(run_id)
    return found


# --- the GraphQL API ----------------------------------------------------------------------------


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def run_range(run: dict) -> tuple[dt.date, dt.date]:
    tags = tags_of(run)
    return dt.date.fromisoformat(tags[RANGE_START_TAG]), dt.date.fromisoformat(tags[RANGE_END_TAG])


def run_details(dev: DagsterDev, run_id: str) -> dict:
    """A run with its whole event log: ``texts`` (messages and error messages) and
    ``materialized`` (asset path, day) pairs."""
    after, texts, materialized, run = None, [], [], None
    while True:
        run = dev.graphql(RUN_QUERY, {"id": run_id, "after": after})["runOrError"]
        assert run["__typename"] == "Run", run
        connection = run["eventConnection"]
        for event in connection["events"]:
            texts.append(event.get("message") or "")
            if event["__typename"] == "MaterializationEvent" and event["partition"]:
                day = dt.date.fromisoformat(event["partition"])
                materialized.append((tuple(event["assetKey"]["path"]), day))
            for error in (event.get("stepError"), event.get("runError")):
                if error:
                    texts.append(error["message"])
                    texts.extend(c["message"] for c in error.get("causes") or [])
        if not connection["hasMore"]:
            break
        after = connection["cursor"]
    return {**run, "texts": texts, "materialized": materialized}


def list_runs(dev: DagsterDev, tags: dict[str, str] | None = None) -> list[dict]:
    run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    data = dev.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


def materialize(dev: DagsterDev, assets: list[list[str]]) -> str:
    """The UI's "Materialize" on unpartitioned assets (their checks not included)."""
    data = dev.graphql(
        LAUNCH_ASSETS,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": "backfill_assets",
                    "repositoryName": "__repository__",
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": path} for path in assets],
                    "assetCheckSelection": [],
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return data["run"]["id"]


def wait_until_started(dev: DagsterDev, backfill_id: str, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = dev.backfill(backfill_id).runs
        if any(r["status"] in {"STARTED", "SUCCESS"} for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"no run of backfill {backfill_id} started in {timeout}s: {runs}")
        time.sleep(0.5)


# --- processes ----------------------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line names ``marker`` (our temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def assert_nothing_left(tmp: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive = [g for g in STARTED_GROUPS if group_alive(g)]
        leftovers = processes_mentioning(str(tmp))
        if not alive and not leftovers:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still running: groups {alive}, processes {leftovers}")
        time.sleep(0.5)


# --- the shared instance ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "home"
    home.mkdir()
    shutil.copy(SHIPPED_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    path = tmp / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    try:
        generate(conn, SEED_FIRST, SEED_LAST, orders_per_day=100, seed=11)
        for plan in shipped_plans():
            for version in plan.version_names:
                build_window(conn, plan, version, SEED_FIRST, BUILD_END, "seed-build")
    finally:
        conn.close()
    try:
        with DagsterDev(home, str(path), log_file=tmp / "dagster_dev.log") as dev:
            STARTED_GROUPS.append(dev.process.pid)
            yield E2E(dev, path, tmp)
    finally:
        assert_nothing_left(tmp)


# --- the scenarios ------------------------------------------------------------------------------


def test_instance_runs_with_the_shipped_pool_config(e2e: E2E) -> None:
    pools = e2e.dev.graphql(POOLS_QUERY)["instance"]["poolConfig"]
    assert pools == {"poolGranularity": "run", "defaultPoolLimit": 1}


def test_duckdb_pool_is_enforced_before_the_first_run(e2e: E2E) -> None:
    if list_runs(e2e.dev):
        pytest.skip("a run was queued before this check; the fresh instance is gone")
    limits = e2e.dev.graphql(POOLS_QUERY)["instance"]["concurrencyLimits"]
    # The UI's Deployment > Concurrency page: the pool every writer claims, with one slot.
    assert {c["concurrencyKey"]: c["slotCount"] for c in limits}.get("duckdb") == 1


def test_backfill_runs_in_policy_chunks_and_records_evidence(e2e: E2E) -> None:
    first, last = dt.date(2024, 1, 1), dt.date(2024, 2, 29)
    backfill_id = e2e.dev.launch_backfill(
        [["models", "daily_revenue__v2"]], f"{first}", f"{last}", "e2e: v2 Jan-Feb 2024"
    )
    state = e2e.dev.wait_backfill(backfill_id, timeout=420)

    assert state.status in OK_BACKFILL
    assert len(state.runs) == 2
    assert [r["status"] for r in state.runs] == ["SUCCESS", "SUCCESS"]
    ranges = sorted(run_range(r) for r in state.runs)
    assert [(end - start).days + 1 for start, end in ranges] == [31, 29]
    assert ranges == [(first, dt.date(2024, 1, 31)), (dt.date(2024, 2, 1), last)]

    run_of_day = {day: r["id"] for r in state.runs for day in days(*run_range(r))}
    found = evidence(e2e.warehouse, "daily_revenue", first, last)
    assert {day for version, day in found if version == "v2"} == set(days(first, last))
    for day in days(first, last):
        assert found[("v2", day)] == [run_of_day[day]], day


def test_overlapping_backfills_queue_on_the_pool_without_lock_errors(e2e: E2E) -> None:
    dev = e2e.dev
    a_first, a_last = dt.date(2024, 3, 1), dt.date(2024, 4, 30)
    b_first, b_last = dt.date(2024, 4, 1), dt.date(2024, 5, 15)
    launched_at = time.time()
    a_id = dev.launch_backfill(
        [["models", "daily_revenue__legacy"], ["models", "daily_revenue__v2"]],
        a_first.isoformat(),
        a_last.isoformat(),
        "e2e: A daily_revenue Mar-Apr",
    )
    b_id = dev.launch_backfill(
        [["models", f"{p}__{v}"] for p in ("daily_revenue", "fct_orders") for v in VERSIONS],
        b_first.isoformat(),
        b_last.isoformat(),
        "e2e: B both plans Apr-mid May",
    )
    a_state = dev.wait_backfill(a_id, timeout=480)
    b_state = dev.wait_backfill(b_id, timeout=480)

    assert a_state.status in OK_BACKFILL and b_state.status in OK_BACKFILL
    backfill_runs = a_state.runs + b_state.runs
    assert backfill_runs and all(r["status"] == "SUCCESS" for r in backfill_runs)

    every_run = list_runs(dev)
    assert [r for r in every_run if r["status"] == "FAILURE"] == []
    for run in every_run:
        texts = "\n".join(run_details(dev, run["id"])["texts"]).lower()
        assert not any(e in texts for e in LOCK_ERRORS), f"lock conflict in run {run['id']}"

    # One writer at a time: no two runs of the instance were in progress together since the
    # launch (earlier runs: see test_duckdb_pool_is_enforced_before_the_first_run).
    spans = sorted(
        (r["startTime"], r["endTime"], r["id"])
        for r in every_run
        if r["startTime"] and (r["endTime"] is None or r["endTime"] > launched_at)
    )
    assert {r["id"] for r in backfill_runs} <= {run_id for _, _, run_id in spans}
    for (_, end, run_id), (next_start, _, next_id) in zip(spans, spans[1:], strict=False):
        assert end is not None and next_start >= end, f"{run_id} overlaps {next_id}"

    # Every day of both ranges was written exactly once per version by one of their runs.
    run_ids = {r["id"] for r in backfill_runs}
    for model, first in (("daily_revenue", a_first), ("fct_orders", b_first)):
        found = evidence(e2e.warehouse, model, first, b_last)
        for version in ("legacy", "v2"):
            for day in days(first, b_last):
                assert len(found[(version, day)]) == 1, (model, version, day)
                assert found[(version, day)][0] in run_ids, (model, version, day)


def test_cancel_then_reexecute_from_failure_leaves_exact_data(e2e: E2E) -> None:
    dev = e2e.dev
    first, last = dt.date(2024, 6, 1), dt.date(2024, 9, 30)
    backfill_id = dev.launch_backfill(
        [["models", "fct_orders__legacy"], ["models", "fct_orders__v2"]],
        first.isoformat(),
        last.isoformat(),
        "e2e: fct_orders Jun-Sep, canceled",
    )
    wait_until_started(dev, backfill_id)
    dev.cancel_backfill(backfill_id)
    canceled = dev.wait_backfill(backfill_id, timeout=420)

    assert len(canceled.runs) == 4
    assert sorted((b - a).days + 1 for a, b in map(run_range, canceled.runs)) == [29, 31, 31, 31]
    if any(r["status"] != "SUCCESS" for r in canceled.runs):
        assert canceled.status == "CANCELED"
        assert {r["status"] for r in canceled.runs} <= {"SUCCESS", "CANCELED"}
    retried_runs: list[dict] = []
    try:
        retry_id = dev.retry_backfill(backfill_id, "FROM_FAILURE")
    except DagsterDevError as error:
        # The cancel reached the runs only after every chunk had materialized both versions
        # (a run can be canceled after its last step): nothing is missing, which the checks
        # below confirm day by day.
        assert "no missing materializations" in str(error)
    else:
        retried = dev.wait_backfill(retry_id, timeout=420)
        assert retried.status in OK_BACKFILL
        assert retried.runs and all(r["status"] == "SUCCESS" for r in retried.runs)
        retried_runs = retried.runs

    # Each version of each day was materialized exactly once, by the canceled backfill or by its
    # re-execution (which redid only what was missing: a canceled run may have finished one
    # version of its chunk), and the warehouse's evidence names that same run.
    built: dict[tuple[str, dt.date], list[str]] = {}
    for run in canceled.runs + retried_runs:
        for path, day in run_details(dev, run["id"])["materialized"]:
            version = path[-1].rsplit("__", 1)[1]  # models/<plan>__<version>
            built.setdefault((version, day), []).append(run["id"])
    expected_pairs = {(v, d) for v in ("legacy", "v2") for d in days(first, last)}
    assert built.keys() == expected_pairs
    assert {k: ids for k, ids in built.items() if len(ids) != 1} == {}
    found = evidence(e2e.warehouse, "fct_orders", first, last)
    assert found == built

    duplicates = fetch(
        e2e.warehouse, "SELECT count(*) - count(DISTINCT order_id) FROM models.fct_orders__v2"
    )
    assert duplicates == [(0,)]
    # Rows per day equal the orders of the day, each counted once as its latest version.
    expected = dict(
        fetch(
            e2e.warehouse,
            """
            WITH latest AS (
                SELECT * FROM raw.orders
                QUALIFY row_number() OVER (
                    PARTITION BY order_id
                    ORDER BY ingested_at DESC, order_ts DESC, amount, status
                ) = 1
            )
            SELECT CAST(order_ts AS DATE), count(*) FROM latest
            WHERE order_ts >= ? AND order_ts < ? GROUP BY 1
            """,
            [first, last + dt.timedelta(1)],
        )
    )
    assert len(expected) == len(days(first, last))
    for version in ("legacy", "v2"):
        built = dict(
            fetch(
                e2e.warehouse,
                f"SELECT order_date, count(*) FROM models.fct_orders__{version} "
                "WHERE order_date BETWEEN ? AND ? GROUP BY 1",
                [first, last],
            )
        )
        assert built == expected, version


def test_promotion_publishes_v2_and_refuses_unapproved_high_risk(e2e: E2E) -> None:
    dev = e2e.dev
    # Publish the baseline views first, as a user does by materializing analytics/*.
    views_run = materialize(dev, [["analytics", "daily_revenue"], ["analytics", "fct_orders"]])
    assert dev.wait_run(views_run, timeout=300) == "SUCCESS"
    views_sql = "SELECT view_name, sql FROM duckdb_views() WHERE schema_name = 'analytics'"
    views = dict(fetch(e2e.warehouse, views_sql))
    assert "models.daily_revenue__legacy" in views["daily_revenue"]
    assert "models.fct_orders__legacy" in views["fct_orders"]

    config = {"version": "v2", "approved_by": "", "note": "e2e"}
    run_id = dev.launch_job(
        "promote_fct_orders_job", {"ops": {"promote_fct_orders": {"config": config}}}
    )
    assert dev.wait_run(run_id, timeout=300) == "SUCCESS"

    checksum = (
        "SELECT count(*), sum(CAST(hash(order_id, order_date, customer_id, region, status, "
        "amount, customer_segment) AS HUGEINT)) FROM {}"
    )
    published = fetch(e2e.warehouse, checksum.format("analytics.fct_orders"))
    assert published == fetch(e2e.warehouse, checksum.format("models.fct_orders__v2"))
    assert published[0][0] > 70_000
    assert fetch(
        e2e.warehouse,
        "SELECT count(*) FROM (SELECT * FROM analytics.fct_orders "
        "EXCEPT ALL SELECT * FROM models.fct_orders__v2)",
    ) == [(0,)]
    log = fetch(
        e2e.warehouse,
        "SELECT model, action, version, previous_version, reason, run_id "
        "FROM backfill.promotions ORDER BY happened_at",
    )
    assert log == [("fct_orders", "promote", "v2", "legacy", "e2e", run_id)]

    # daily_revenue is risk: high; without an approver the job fails and nothing changes.
    config = {"version": "v2", "approved_by": "", "note": "e2e, no approval"}
    refused = dev.launch_job(
        "promote_daily_revenue_job", {"ops": {"promote_daily_revenue": {"config": config}}}
    )
    assert dev.wait_run(refused, timeout=300) == "FAILURE"
    assert "approval" in "\n".join(run_details(dev, refused)["texts"])
    views = dict(fetch(e2e.warehouse, views_sql))
    assert "models.daily_revenue__legacy" in views["daily_revenue"]
    assert fetch(e2e.warehouse, "SELECT count(*) FROM analytics.daily_revenue") == fetch(
        e2e.warehouse, "SELECT count(*) FROM models.daily_revenue__legacy"
    )
    assert fetch(
        e2e.warehouse, "SELECT count(*) FROM backfill.promotions WHERE model = 'daily_revenue'"
    ) == [(0,)]


def test_late_rows_are_repaired_by_the_sensor_for_their_days_only(e2e: E2E) -> None:
    dev = e2e.dev
    late_days = [dt.date(2024, 2, 10), dt.date(2024, 7, 20)]
    arrived_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Model tables, not the views: whichever version another test published, legacy counts
    # every appended row and v2 of fct_orders holds every new order.
    orders_on_day = "SELECT sum(orders) FROM models.daily_revenue__legacy WHERE order_date = ?"
    with warehouse(e2e.warehouse, read_only=False) as conn:
        top_before = conn.execute("SELECT max(order_id) FROM raw.orders").fetchone()[0]
        legacy_before = conn.execute(orders_on_day, [late_days[0]]).fetchone()[0]
        arrival = append_late_rows(conn, late_days, rows_per_day=4, arrived_at=arrived_at)
    assert (arrival.orders, arrival.resent, arrival.refunds) == (8, 2, 2)

    deadline = time.monotonic() + 300
    while True:
        repairs = list_runs(dev, {REPAIR_TAG: "late_data"})
        if repairs and all(r["status"] in FINISHED_RUN for r in repairs):
            with warehouse(e2e.warehouse) as conn:
                pending = find_repairs(conn, list(shipped_plans())).repairs
            if not pending:
                break
        if time.monotonic() > deadline:
            raise AssertionError(f"late rows not repaired in 300s; repair runs: {repairs}")
        time.sleep(5)

    # One run per plan and late day, all built versions of the day together; nothing else.
    by_sensor = [
        run
        for plan in shipped_plans()
        for run in list_runs(dev, {SENSOR_TAG: f"late_data_{plan.name}_sensor"})
    ]
    assert {r["id"] for r in by_sensor} == {r["id"] for r in repairs}
    assert all(r["status"] == "SUCCESS" for r in repairs), repairs
    requested = sorted(
        (tags_of(r)[PLAN_TAG], dt.date.fromisoformat(tags_of(r)[PARTITION_TAG])) for r in repairs
    )
    # Each daily plan repairs the two days; the monthly plan the two months holding them.
    expected = [(p, d) for p in ("daily_revenue", "fct_orders") for d in late_days]
    expected += [("monthly_active_customers", d.replace(day=1)) for d in late_days]
    assert requested == sorted(expected)
    for run in repairs:
        plan = tags_of(run)[PLAN_TAG]
        selection = {tuple(a["path"]) for a in run_details(dev, run["id"])["assetSelection"]}
        assert selection == {("models", f"{plan}__legacy"), ("models", f"{plan}__v2")}

    # v2 of fct_orders holds the new orders; legacy revenue counts every new row.
    new_orders = fetch(
        e2e.warehouse,
        "SELECT order_id FROM raw.orders WHERE order_id > ? AND CAST(order_ts AS DATE) = ? "
        "ORDER BY 1",
        [top_before, late_days[1]],
    )
    assert len(new_orders) == 4
    published = fetch(
        e2e.warehouse,
        "SELECT order_id FROM models.fct_orders__v2 WHERE order_id > ? AND order_date = ? "
        "ORDER BY 1",
        [top_before, late_days[1]],
    )
    assert published == new_orders
    rows_added = fetch(
        e2e.warehouse,
        "SELECT count(*) FROM raw.orders WHERE ingested_at = ? AND CAST(order_ts AS DATE) = ?",
        [arrived_at, late_days[0]],
    )[0][0]
    assert rows_added == 4 + 1  # four new orders and one re-sent version
    legacy_after = fetch(e2e.warehouse, orders_on_day, [late_days[0]])[0][0]
    assert legacy_after - legacy_before == rows_added


def test_affected_launches_one_backfill_of_exactly_a_customers_days(e2e: E2E) -> None:
    """``backfill-assets affected --launch``: the days one customer's order rows reach, found
    by the slice and checked against a plain query, rebuilt by one backfill, nothing else."""
    dev, path = e2e.dev, e2e.warehouse
    # A customer with a few orders: a few days, so a few runs (one per contiguous range).
    (customer,) = fetch(
        path,
        "SELECT customer_id FROM raw.orders GROUP BY 1 HAVING count(DISTINCT order_id) >= 2 "
        "ORDER BY count(*), 1 LIMIT 1",
    )[0]
    expected = sorted(
        d
        for (d,) in fetch(
            path,
            "SELECT DISTINCT CAST(o2.order_ts AS DATE) FROM raw.orders AS o1 "
            "JOIN raw.orders AS o2 USING (order_id) WHERE o1.customer_id = ? "
            "AND o2.order_ts < TIMESTAMP '2026-01-01'",
            [customer],
        )
    )
    before = evidence(path, "fct_orders", SEED_FIRST, SEED_LAST)
    command = [
        str(PROJECT_DIR / ".venv" / "bin" / "backfill-assets"),
        "affected",
        "fct_orders",
        "--where",
        f"customer_id = {customer}",
        "--launch",
        "--url",
        dev.url,
    ]
    env = {**os.environ, "BACKFILL_WAREHOUSE": str(path)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"{len(expected)} day(s) of fct_orders hold rows of raw.orders" in done.stdout
    backfill_id = done.stdout.strip().splitlines()[-1].split()[2]
    state = dev.wait_backfill(backfill_id, timeout=420)
    assert state.status in OK_BACKFILL and all(r["status"] == "SUCCESS" for r in state.runs)
    after = evidence(path, "fct_orders", SEED_FIRST, SEED_LAST)
    rebuilt = sorted({key[1] for key, runs in after.items() if runs != before[key]})
    assert rebuilt == expected
    launched = {r["id"] for r in state.runs}
    for day in expected:
        for version in ("legacy", "v2"):
            assert set(after[(version, day)]) <= launched


def _screenshot(url: str, out: Path, profile: Path, size: str = "1600,1000") -> None:
    chromium = shutil.which("chromium")
    assert chromium
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size}",
        "--virtual-time-budget=20000", f"--screenshot={out}", url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    STARTED_GROUPS.append(process.pid)
    try:
        process.wait(timeout=180)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # helpers chromium may leave behind
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


ASSET_NODES = "{ assetNodes { assetKey { path } groupName } }"


def test_every_node_in_a_plan_group_has_its_own_label(e2e: E2E) -> None:
    # The UI labels a node with the last part of its key: in each plan's group, the sources,
    # every version, the preflight and the published view must read differently.
    groups: dict[str, list[str]] = {}
    for node in e2e.dev.graphql(ASSET_NODES)["assetNodes"]:
        groups.setdefault(node["groupName"], []).append(node["assetKey"]["path"][-1])
    for plan in shipped_plans():
        labels = groups[plan.name]
        assert len(labels) == len(set(labels)), (plan.name, sorted(labels))
        expected = {f"{plan.name}__{v}" for v in plan.version_names} | {plan.name}
        assert expected <= set(labels), (plan.name, sorted(labels))


def test_ui_pages_and_the_report_as_a_person_sees_them(e2e: E2E) -> None:
    """Screenshots of the asset graph, a backfill's page, the published asset's checks and the
    HTML reconciliation report, written to ``docs/screenshots/`` on every run so the README's
    pictures are those of the code that passed."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    dev = e2e.dev
    # The UI's "Skip" on the first-visit community dialog, so it does not cover the pages.
    assert dev.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
    backfill_id = dev.launch_backfill(
        [["models", "daily_revenue__v2"]], "2024-01-01", "2024-01-31", "e2e: the backfill page"
    )
    assert dev.wait_backfill(backfill_id, timeout=420).status in OK_BACKFILL
    checks = dev.launch_job("window_checks_daily_revenue_job")
    assert dev.wait_run(checks, timeout=420) in FINISHED_RUN
    report = e2e.tmp / "reconciliation.html"
    done = subprocess.run(
        [str(PROJECT_DIR / ".venv" / "bin" / "backfill-assets"), "reconcile", "daily_revenue",
         "--html", str(report)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "BACKFILL_WAREHOUSE": str(e2e.warehouse)},
    )  # fmt: skip
    assert report.exists(), done.stdout + done.stderr

    pages = {
        "ui-asset-graph": dev.url + GROUP_ROUTE.format(group="daily_revenue"),
        "ui-fct-orders-graph": dev.url + GROUP_ROUTE.format(group="fct_orders"),
        "ui-backfill": f"{dev.url}/runs/b/{backfill_id}",
        "ui-published-checks": f"{dev.url}/assets/analytics/daily_revenue"
        "?view=checks&checkDetail=refund_orders_exist",
        "report-daily-revenue": report.as_uri(),
    }
    shots = {}
    for name, url in pages.items():
        shots[name] = e2e.tmp / f"{name}.png"
        size = "1280,2000" if name.startswith("report") else "1600,1000"
        _screenshot(url, shots[name], e2e.tmp / "chromium-profile", size)
    for name, shot in shots.items():
        picture = shot.read_bytes()
        assert picture.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert len(picture) > 20_000, name  # a blank or one-colour page compresses to a few kB
    assert shots["ui-asset-graph"].read_bytes() != shots["ui-fct-orders-graph"].read_bytes()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, shot in shots.items():
        shutil.copy(shot, SCREENSHOTS / f"{name}.png")


def test_stopping_dagster_dev_leaves_no_process(e2e: E2E) -> None:
    pgid = e2e.dev.process.pid
    e2e.dev.stop()
    assert_nothing_left(e2e.tmp)  # waits a moment for killed children to be reaped
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
