"""End to end: a team adopts backfill_assets in its OWN Dagster project, with YAML and SQL only.

``byo/`` is that team's project (``subscriptions_project``), sharing nothing with the shipped
orders example: its data (``byo/data/*.csv``: billing events with UUID ids and text keys, and a
price list) and its plan files (``byo/plan_files/daily_billings/``). The test walks the path a
team takes, in a temporary copy of the project:

1. ``dg scaffold defs backfill_assets.BackfillPlan daily_billings``; the untouched skeleton loads;
2. the team's plan.yaml and SQL replace the skeleton's; ``dg check defs`` and
   ``backfill-assets check`` accept them;
3. ``backfill-assets load`` stores the CSV files with the declared types;
4. a real ``dagster dev`` on the team's workspace runs ONE partition backfill of both versions;
   the model tables equal an independent computation from the CSV files (plain Python);
5. the window checks, ``backfill-assets reconcile`` and the promotion publish v2;
6. late rows for two past days are loaded; the running daemon's late-data sensor repairs exactly
   those two days, and the published view shows the new rows.

Expected figures come from the CSV files, read with the ``csv`` module and summed with
``Decimal`` here, never from the plan's SQL. The figures the data was checked for by hand (the
known records of the plan, the counts below) are constants.

The second test reproduces, in-process and in seconds, a framework bug the team's plan works
around (an integrity rule whose key is the source's UUID); it is an expected failure until fixed.
"""

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.catalog import load_catalog
from backfill_assets.example.dagster_dev import FINISHED_RUN, DagsterDev
from backfill_assets.load import load_file
from backfill_assets.settings import SHIPPED_DAGSTER_HOME
from backfill_assets.window_checks import run_window_checks

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).resolve().parent / "byo"
DATA = TEMPLATE / "data"
PLAN_FILES = TEMPLATE / "plan_files" / "daily_billings"
EVENTS_CSV = "subscription_events.csv"
BIN = Path(sys.executable).parent  # dg and backfill-assets of the venv running the tests

PLAN = "daily_billings"
LOCATION = "subscriptions_project"
VERSIONS = ("legacy", "v2")
FIRST, LAST = dt.date(2025, 1, 1), dt.date(2025, 3, 1)
LATE_DAYS = [dt.date(2025, 1, 15), dt.date(2025, 2, 20)]
APPROVER = "head-of-billing@example.com"
NOTE = "trials are not billings (BYO e2e)"
OK_BACKFILL = {"COMPLETED_SUCCESS", "COMPLETED"}
REPAIR_TAG = "backfill_assets/repair"
PARTITION_TAG = "dagster/partition"
LOCK_ERRORS = ("could not set lock", "conflicting lock")

# Counted by hand in byo/data/subscription_events.csv (and re-derived below from the files).
EVENTS_IN_FILE = 321
TRIAL_EVENTS = 37
UNKNOWN_PLAN_EVENTS = 3  # plan_code gold_legacy is not in plans.csv; every version leaves them out

SKELETON_FILES = ["defs.yaml", "plan.yaml", "sql/legacy.sql", "sql/v2.sql"]
TEAM_ASSETS = {
    "models/daily_billings__legacy",
    "models/daily_billings__v2",
    "analytics/daily_billings",
    "raw/subscription_events",
    "raw/plans",
}
TEAM_JOBS = {"window_checks_daily_billings_job", "promote_daily_billings_job"}
TEAM_SENSORS = {"late_data_daily_billings_sensor", "window_checks_daily_billings_sensor"}

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter, limit: 1000) {
    __typename
    ... on Runs { results { id status tags { key value } assetSelection { path } } }
    ... on PythonError { message }
  }
}
"""

CHECK_EVALUATIONS_QUERY = """
query Checks($id: ID!, $after: String) {
  runOrError(runId: $id) {
    __typename
    ... on Run {
      eventConnection(afterCursor: $after) {
        cursor hasMore
        events {
          __typename
          ... on AssetCheckEvaluationEvent {
            evaluation {
              checkName success
              metadataEntries {
                label
                ... on FloatMetadataEntry { floatValue }
                ... on JsonMetadataEntry { jsonString }
              }
            }
          }
        }
      }
    }
  }
}
"""

Billings = dict[tuple[dt.date, str], tuple[int, Decimal]]


# --- the team's data, read independently of the framework ---------------------------------------


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def tiers() -> dict[str, str]:
    return {row["plan_code"]: row["tier"] for row in csv_rows(DATA / "plans.csv")}


def expected_billings(events: list[dict[str, str]], with_trials: bool) -> Billings:
    """(billing day, tier) -> (events, billed), by hand: one pass over the CSV rows.

    An event whose plan_code is not in the price list has no tier and counts nowhere."""
    tier_of = tiers()
    totals: dict[tuple[dt.date, str], tuple[int, Decimal]] = {}
    for row in events:
        if row["plan_code"] not in tier_of or (row["is_trial"] == "true" and not with_trials):
            continue
        key = (dt.date.fromisoformat(row["event_ts"][:10]), tier_of[row["plan_code"]])
        count, billed = totals.get(key, (0, Decimal("0")))
        totals[key] = (count + 1, billed + Decimal(row["amount"]))
    return totals


def only_days(billings: Billings, days: list[dt.date]) -> Billings:
    return {key: value for key, value in billings.items() if key[0] in days}


def all_days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(n) for n in range((last - first).days + 1)]


# --- processes and the warehouse -----------------------------------------------------------------


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def backfill_assets(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``backfill-assets --defs <project's defs> ...``, retried while a run or a sensor of the
    running instance holds the warehouse file (the command opens it without waiting)."""
    command = [str(BIN / "backfill-assets"), "--defs", str(defs_folder(project)), *args]
    deadline = time.monotonic() + 120
    while True:
        result = run(command, project, env)
        locked = any(e in result.stderr.lower() for e in LOCK_ERRORS)
        if not locked or time.monotonic() > deadline:
            return result
        time.sleep(1)


def defs_folder(project: Path) -> Path:
    return project / "subscriptions_project" / "defs"


@contextmanager
def read_only(path: Path, timeout: float = 120) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short read-only connection, retried while a run of dagster dev writes the file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        yield conn
    finally:
        conn.close()


def fetch(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with read_only(path) as conn:
        return conn.execute(sql, params).fetchall()


def model_rows(path: Path, relation: str) -> Billings:
    rows = fetch(path, f"SELECT billing_date, tier, events, billed FROM {relation}")
    return {(day, tier): (events, billed) for day, tier, events, billed in rows}


def evidence_stamps(path: Path) -> dict[tuple[str, dt.date], tuple[str, dt.datetime]]:
    """(version, day) -> (run id, written at) of every evidence row of the plan."""
    rows = fetch(
        path,
        "SELECT version, CAST(partition_start AS DATE), run_id, written_at "
        "FROM backfill.partition_evidence WHERE model = ?",
        [PLAN],
    )
    return {(version, day): (run_id, written) for version, day, run_id, written in rows}


# --- the Dagster UI's API ------------------------------------------------------------------------


def list_runs(dev: DagsterDev, tags: dict[str, str]) -> list[dict]:
    run_filter = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    data = dev.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


def tags_of(run_record: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run_record["tags"]}


def check_evaluations(dev: DagsterDev, run_id: str) -> dict[str, dict]:
    """Check name -> {passed, metadata label -> value} of the evaluations a run recorded."""
    found, after = {}, None
    while True:
        data = dev.graphql(CHECK_EVALUATIONS_QUERY, {"id": run_id, "after": after})["runOrError"]
        assert data["__typename"] == "Run", data
        for event in data["eventConnection"]["events"]:
            if event["__typename"] != "AssetCheckEvaluationEvent":
                continue
            evaluation = event["evaluation"]
            metadata = {}
            for entry in evaluation["metadataEntries"]:
                if "jsonString" in entry:
                    metadata[entry["label"]] = json.loads(entry["jsonString"])
                elif "floatValue" in entry:
                    metadata[entry["label"]] = entry["floatValue"]
            found[evaluation["checkName"]] = {"passed": evaluation["success"], **metadata}
        if not data["eventConnection"]["hasMore"]:
            return found
        after = data["eventConnection"]["cursor"]


# --- the team's project --------------------------------------------------------------------------


def team_project(tmp_path: Path) -> Path:
    """A fresh copy of the team's project, without the plan files it keeps apart."""
    project = tmp_path / "subscriptions"
    shutil.copytree(TEMPLATE, project, ignore=shutil.ignore_patterns("data", "plan_files"))
    return project


def team_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    if not home.exists():
        home.mkdir()
        shutil.copy(SHIPPED_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "BACKFILL_DEFS"}
    return {
        **env,
        "DAGSTER_HOME": str(home),
        "BACKFILL_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }


def listed_defs(project: Path, env: dict[str, str]) -> dict[str, set[str]]:
    """What ``dg list defs`` says the project defines: asset keys, jobs, sensors."""
    listed = run([str(BIN / "dg"), "list", "defs", "--json"], project, env)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    return {
        "assets": {a["asset_key"] for a in found["assets"]},
        "jobs": {j["name"] for j in found["jobs"]},
        "sensors": {s["name"] for s in found["sensors"]},
    }


def checked_defs(project: Path, env: dict[str, str]) -> dict[str, set[str]]:
    """``dg check defs`` passes, and the plan really loaded: the component turns a plan that does
    not load into a ``plan_errors/<folder>`` asset and the location still loads, so a clean exit
    alone proves little. Returns what ``dg list defs`` lists."""
    checked = run([str(BIN / "dg"), "check", "defs"], project, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = listed_defs(project, env)
    assert not [key for key in listed["assets"] if key.startswith("plan_errors/")], checked.stderr
    return listed


def scaffold_and_adopt(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Scaffold the plan, check the skeleton, put the team's plan in its place, check again."""
    project = team_project(tmp_path)
    env = team_env(tmp_path)
    scaffolded = run(
        [str(BIN / "dg"), "scaffold", "defs", "backfill_assets.BackfillPlan", PLAN], project, env
    )
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    folder = defs_folder(project) / PLAN
    assert all((folder / name).is_file() for name in SKELETON_FILES), sorted(folder.rglob("*"))
    assert (folder / "defs.yaml").read_text() == (
        "type: backfill_assets.BackfillPlan\nattributes:\n  plan: plan.yaml\n"
    )
    assert f"name: {PLAN}\n" in (folder / "plan.yaml").read_text()
    skeleton = checked_defs(project, env)
    expected = {"models/daily_billings__legacy", "models/daily_billings__v2", "raw/events"}
    assert expected <= skeleton["assets"]

    # The team edits the skeleton: its own plan.yaml and SQL replace the examples.
    (folder / "plan.yaml").unlink()
    shutil.rmtree(folder / "sql")
    shutil.copytree(PLAN_FILES, folder, dirs_exist_ok=True)
    adopted = checked_defs(project, env)
    assert TEAM_ASSETS <= adopted["assets"] and "raw/events" not in adopted["assets"]
    assert TEAM_JOBS <= adopted["jobs"] and TEAM_SENSORS <= adopted["sensors"]
    checked = backfill_assets(project, env, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert PLAN in checked.stdout and "BROKEN" not in checked.stdout, checked.stdout
    return project, env


def load(project: Path, env: dict[str, str], table: str, path: Path) -> None:
    loaded = backfill_assets(project, env, "load", table, str(path))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"into {table}" in loaded.stdout


# --- the scenario, step by step ------------------------------------------------------------------


def load_sources(project: Path, env: dict[str, str], events: list[dict[str, str]]) -> Path:
    """Load the CSV files with the CLI; the table keeps the declared types and every value."""
    warehouse = Path(env["BACKFILL_WAREHOUSE"])
    load(project, env, "raw.plans", DATA / "plans.csv")
    load(project, env, "raw.subscription_events", DATA / EVENTS_CSV)
    types = dict(
        fetch(
            warehouse,
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'raw' AND table_name = 'subscription_events'",
        )
    )
    assert types == {
        "event_id": "UUID",
        "subscription_id": "VARCHAR",
        "customer_key": "VARCHAR",
        "plan_code": "VARCHAR",
        "event_type": "VARCHAR",
        "is_trial": "BOOLEAN",
        "amount": "DECIMAL(10,2)",
        "event_ts": "TIMESTAMP",
        "loaded_at": "TIMESTAMP",
    }
    stored = fetch(warehouse, "SELECT event_id, subscription_id FROM raw.subscription_events")
    assert len(stored) == EVENTS_IN_FILE
    assert {(str(event_id), sub) for event_id, sub in stored} == {
        (row["event_id"], row["subscription_id"]) for row in events
    }
    return warehouse


def backfill_both_versions(dev: DagsterDev, warehouse: Path, expected: dict[str, Billings]) -> None:
    """One partition backfill of legacy and v2 over the window, as the UI launches it; every
    day of both versions has one evidence row and the tables equal the hand computation."""
    backfill_id = dev.launch_backfill(
        [["models", f"{PLAN}__{version}"] for version in VERSIONS],
        FIRST.isoformat(),
        LAST.isoformat(),
        "BYO: daily_billings legacy + v2",
    )
    state = dev.wait_backfill(backfill_id, timeout=300)
    assert state.status in OK_BACKFILL, state
    assert state.runs and all(r["status"] == "SUCCESS" for r in state.runs), state.runs

    rows = fetch(
        warehouse,
        "SELECT version, CAST(partition_start AS DATE) AS day, count(*), min(row_count), "
        "bool_and(checks_passed AND applied), "
        "bool_and(partition_end = partition_start + INTERVAL 1 DAY) "
        "FROM backfill.partition_evidence WHERE model = ? GROUP BY ALL",
        [PLAN],
    )
    assert {(version, day) for version, day, *_ in rows} == {
        (version, day) for version in VERSIONS for day in all_days(FIRST, LAST)
    }
    for version, day, count, row_count, passed, one_day in rows:
        day_rows = len(only_days(expected[version], [day]))
        assert (count, row_count, passed, one_day) == (1, day_rows, True, True), (version, day)
    for version in VERSIONS:
        assert model_rows(warehouse, f"models.daily_billings__{version}") == expected[version]


def check_reconcile_promote(
    dev: DagsterDev, project: Path, env: dict[str, str], unknown_event_ids: list[str]
) -> str:
    """Window checks, the reconciliation report, then the promotion of v2; its run id."""
    checks_run = dev.launch_job("window_checks_daily_billings_job")
    assert dev.wait_run(checks_run, timeout=300) == "SUCCESS"
    checks = check_evaluations(dev, checks_run)
    # Every check passes but the warning that lists the events of unknown plans.
    failed = {name for name, result in checks.items() if not result["passed"]}
    assert failed == {"plan_codes_known"}, {name: checks[name] for name in failed}
    assert {"reconciles_with_baseline", "window_is_complete", "sources_are_valid"} <= set(checks)
    assert checks["plan_codes_known"]["offending_rows"] == UNKNOWN_PLAN_EVENTS
    assert checks["plan_codes_known"]["first_keys"] == unknown_event_ids  # in day order
    # Each trial event moves one event and its 1.00 card check.
    assert checks["reconciles_with_baseline"]["total_abs_delta"] == 2 * TRIAL_EVENTS

    reconciled = backfill_assets(project, env, "reconcile", PLAN)
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "PASSED" in reconciled.stdout, reconciled.stdout

    config = {"version": "v2", "approved_by": APPROVER, "note": NOTE}
    promote_run = dev.launch_job(
        "promote_daily_billings_job", {"ops": {"promote_daily_billings": {"config": config}}}
    )
    assert dev.wait_run(promote_run, timeout=300) == "SUCCESS"
    return promote_run


def append_late_rows(
    project: Path, env: dict[str, str], tmp_path: Path, rows: list[dict[str, str]]
) -> None:
    """Load the events again with the late rows appended: a load replaces the table."""
    combined = tmp_path / "subscription_events_with_late_rows.csv"
    with combined.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    load(project, env, "raw.subscription_events", combined)


def wait_for_repairs(dev: DagsterDev, expected_runs: int, timeout: float) -> list[dict]:
    """The late-data repair runs, once the sensor launched ``expected_runs`` and all finished.

    The sensor ticks every 60 s, and the repairs queue behind any other run on the pool."""
    deadline = time.monotonic() + timeout
    while True:
        repairs = list_runs(dev, {REPAIR_TAG: "late_data"})
        done = all(r["status"] in FINISHED_RUN for r in repairs)
        if len(repairs) >= expected_runs and done:
            return repairs
        if time.monotonic() > deadline:
            raise AssertionError(f"late rows not repaired in {timeout}s; repair runs: {repairs}")
        time.sleep(3)


def test_a_team_project_scaffolds_builds_promotes_and_repairs_its_own_plan(tmp_path: Path) -> None:
    events = csv_rows(DATA / EVENTS_CSV)
    late = csv_rows(DATA / "late_subscription_events.csv")
    assert len(events) == EVENTS_IN_FILE
    assert sum(row["is_trial"] == "true" for row in events) == TRIAL_EVENTS
    unknown = [row["event_id"] for row in events if row["plan_code"] not in tiers()]
    assert len(unknown) == UNKNOWN_PLAN_EVENTS
    assert {dt.date.fromisoformat(row["event_ts"][:10]) for row in late} == set(LATE_DAYS)
    expected = {
        "legacy": expected_billings(events, with_trials=True),
        "v2": expected_billings(events, with_trials=False),
    }
    counted = {version: sum(n for n, _ in rows.values()) for version, rows in expected.items()}
    assert counted["legacy"] == EVENTS_IN_FILE - UNKNOWN_PLAN_EVENTS == 318
    assert counted["v2"] == counted["legacy"] - TRIAL_EVENTS == 281
    assert (len(expected["legacy"]), len(expected["v2"])) == (144, 136)  # (day, tier) rows
    # The plan's known records, checked by hand in the CSV file.
    assert expected["v2"][(dt.date(2025, 1, 22), "pro")] == (3, Decimal("288.00"))
    assert expected["v2"][(dt.date(2025, 2, 14), "starter")] == (3, Decimal("27.00"))

    project, env = scaffold_and_adopt(tmp_path)
    warehouse = load_sources(project, env, events)

    with DagsterDev(
        tmp_path / "dagster_home",
        str(warehouse),
        log_file=tmp_path / "dagster_dev.log",
        workspace=project / "workspace.yaml",
        location=LOCATION,
        env={"PYTHONPATH": str(project)},
    ) as dev:
        backfill_both_versions(dev, warehouse, expected)

        promote_run = check_reconcile_promote(dev, project, env, unknown)
        view_sql = fetch(
            warehouse,
            "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
            [PLAN],
        )[0][0]
        assert "daily_billings__v2" in view_sql and "daily_billings__legacy" not in view_sql
        assert model_rows(warehouse, "analytics.daily_billings") == expected["v2"]
        assert fetch(
            warehouse,
            "SELECT model, action, version, previous_version, actor, reason, run_id "
            "FROM backfill.promotions",
        ) == [(PLAN, "promote", "v2", "legacy", APPROVER, NOTE, promote_run)]

        # Late rows for two past days; the running daemon's late-data sensor repairs them.
        before = evidence_stamps(warehouse)
        append_late_rows(project, env, tmp_path, events + late)
        repairs = wait_for_repairs(dev, expected_runs=len(LATE_DAYS), timeout=240)
        assert all(r["status"] == "SUCCESS" for r in repairs), repairs
        repaired_days = sorted(dt.date.fromisoformat(tags_of(r)[PARTITION_TAG]) for r in repairs)
        assert repaired_days == LATE_DAYS
        for repair in repairs:
            selection = {tuple(a["path"]) for a in repair["assetSelection"]}
            assert selection == {("models", f"{PLAN}__{version}") for version in VERSIONS}

        # Exactly those days were rebuilt, both versions, by the repair runs; nothing else moved.
        after = evidence_stamps(warehouse)
        assert after.keys() == before.keys()
        rebuilt = {key for key in after if after[key] != before[key]}
        assert rebuilt == {(version, day) for version in VERSIONS for day in LATE_DAYS}
        assert {after[key][0] for key in rebuilt} == {r["id"] for r in repairs}

        new_v2 = expected_billings(events + late, with_trials=False)
        published = model_rows(warehouse, "analytics.daily_billings")
        assert only_days(published, LATE_DAYS) == only_days(new_v2, LATE_DAYS)
        assert only_days(published, LATE_DAYS) != only_days(expected["v2"], LATE_DAYS)
        assert published == new_v2
        new_legacy = expected_billings(events + late, with_trials=True)
        assert model_rows(warehouse, "models.daily_billings__legacy") == new_legacy
        # By hand from late_subscription_events.csv: on 2025-01-15 two paid pro events
        # (29.00 each) join the two there were (317.00); the late trial start does not count.
        assert published[(dt.date(2025, 1, 15), "pro")] == (4, Decimal("375.00"))


# --- keys of any type in integrity rules, without dagster dev ----------------------------------


def test_an_integrity_rule_may_return_the_sources_uuid_as_its_key(tmp_path: Path) -> None:
    """The team's own rule, written the natural way (``e.event_id AS key``, a UUID), reports the
    offending events instead of crashing the window checks."""
    plan_folder = tmp_path / "defs" / PLAN
    shutil.copytree(PLAN_FILES, plan_folder)
    (plan_folder / "defs.yaml").write_text(
        "type: backfill_assets.BackfillPlan\nattributes:\n  plan: plan.yaml\n"
    )
    rule = plan_folder / "sql" / "ri_plan_codes_known.sql"
    rule.write_text(rule.read_text().replace("CAST(e.event_id AS VARCHAR)", "e.event_id"))
    assert "e.event_id AS key" in rule.read_text()
    warehouse = tmp_path / "warehouse.duckdb"
    found = load_catalog(tmp_path / "defs", str(warehouse))
    assert not found.errors, found.errors  # the plan loads: nothing says a key must be text
    plan = found.named(PLAN)

    conn = duckdb.connect(str(warehouse))
    try:
        for table, file in (("raw.plans", "plans.csv"), ("raw.subscription_events", EVENTS_CSV)):
            load_file(conn, table, DATA / file, columns=plan.source(table).columns)
        for version in VERSIONS:
            build_window(conn, plan, version, FIRST, LAST + dt.timedelta(1), "uuid-key")
        results = {check.name: check for check in run_window_checks(conn, plan, "v2")}
    finally:
        conn.close()

    events = csv_rows(DATA / EVENTS_CSV)
    unknown = [row["event_id"] for row in events if row["plan_code"] not in tiers()]
    integrity = results["plan_codes_known"]
    assert not integrity.passed and not integrity.blocking
    assert integrity.figures["offending_rows"] == UNKNOWN_PLAN_EVENTS
    assert [str(key) for key in integrity.figures["first_keys"]] == unknown
