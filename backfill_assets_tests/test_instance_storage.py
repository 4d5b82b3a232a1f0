"""The Dagster instance's storage (SQLite or PostgreSQL) and event settings (``instance.py``).

Layers: the settings and the written ``dagster.yaml`` as plain data; the embedded PostgreSQL
started and stopped for real; ranged runs of the project's model asset on batched SQLite and
PostgreSQL instances (per-partition materializations and check results kept); why the
planned-subset flag stays off (it hides a failed chunk's days); and, marked ``e2e``, a real
``dagster dev`` on the embedded PostgreSQL: a backfill, the window checks and a promotion, a
chunk with one bad day, and a failed chunk re-executed from the backfill.
"""

import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import yaml

from backfill_assets import instance as storage_module
from backfill_assets import settings
from backfill_assets.build import build_window
from backfill_assets.component.models import (
    PARTITION_CHECKS_PASSED,
    partitions_def,
    range_tags,
)
from backfill_assets.example.dagster_dev import DagsterDev, DagsterDevError
from backfill_assets.example.generator import generate
from backfill_assets.instance import (
    MARKER,
    InstanceStorage,
    InstanceStorageError,
    event_env,
    instance_storage,
    postgres_config,
    postgres_running,
)
from backfill_assets.partition_checks import NULL_RATES_WITHIN_LIMITS
from backfill_assets_tests.helpers import plan_named
from backfill_assets_tests.test_e2e import (
    days,
    fetch,
    processes_mentioning,
    run_details,
    run_range,
    warehouse,
)
from backfill_assets_tests.test_model_assets import (
    BAD_DAY,
    V2_FCT_ORDERS,
    check_evaluations,
    run_v2_fct_orders,
    seed_three_months,
)
from backfill_assets_tests.test_model_assets import (
    days as day_keys,
)

BATCH_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
SUBSET_VARIABLE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
OK_BACKFILL = {"COMPLETED_SUCCESS", "COMPLETED"}
BACKFILL_TAG = "dagster/backfill"
LEFT = {"STARTING", "STARTED", "SUCCESS", "FAILURE"}  # a run that left the queue


@contextmanager
def postgres_folder() -> Iterator[Path]:
    """A folder for a Dagster home with an embedded PostgreSQL, outside pytest's temporary root.

    As root, pgserver runs the server as the user ``pgserver``, who must be able to traverse
    every folder above the data folder; every pytest session that starts resets
    ``/tmp/pytest-of-root`` to mode 0700 (other sessions on a shared machine included), which
    would cut a running server off from its own data.
    """
    folder = Path(tempfile.mkdtemp(prefix="backfill-pg-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    with postgres_folder() as folder:
        yield folder


def check_history(instance: dg.DagsterInstance, asset: dg.AssetKey, check: str) -> list:
    """Every stored execution of one asset check (newest first), as the UI lists them."""
    return instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(asset, check), limit=10_000
    )


# --- settings and the written dagster.yaml ----------------------------------------------------


def test_storage_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGSTER_HOME", settings.STORAGE_ENV, settings.PG_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    assert settings.dagster_storage() == "sqlite"
    assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME

    monkeypatch.setenv(settings.STORAGE_ENV, "postgres")
    assert settings.dagster_storage() == "postgres"
    # The Postgres instance has its own home: the shipped SQLite one is never rewritten.
    assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME / "postgres"

    monkeypatch.delenv(settings.STORAGE_ENV)
    monkeypatch.setenv(settings.PG_URL_ENV, "postgresql+psycopg2://u@db:5432/dagster")
    assert settings.dagster_storage() == "postgres"
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere/else")
    assert settings.dagster_home() == Path("/somewhere/else")

    monkeypatch.setenv(settings.STORAGE_ENV, "mysql")
    with pytest.raises(ValueError, match="sqlite, postgres"):
        settings.dagster_storage()


def test_postgres_yaml_is_the_shipped_settings_plus_postgres_storage(tmp_path: Path) -> None:
    shipped = yaml.safe_load((settings.SHIPPED_DAGSTER_HOME / "dagster.yaml").read_text())
    written = storage_module.write_instance_yaml(
        tmp_path, postgres_config({"env": settings.PG_URL_ENV}), "postgres"
    )
    config = yaml.safe_load(written.read_text())
    url = {"postgres_url": {"env": settings.PG_URL_ENV}}
    assert config.pop("run_storage") == {
        "module": "dagster_postgres",
        "class": "PostgresRunStorage",
        "config": url,
    }
    # The event log storage that holds its connection (component/postgres_storage.py).
    assert config.pop("event_log_storage") == {
        "module": "backfill_assets.component.postgres_storage",
        "class": "PooledPostgresEventLogStorage",
        "config": url,
    }
    assert config.pop("schedule_storage") == {
        "module": "dagster_postgres",
        "class": "PostgresScheduleStorage",
        "config": url,
    }
    # One writer at a time and the fast run queue, exactly as shipped (less its SQLite event log).
    del shipped["event_log_storage"]
    assert config == shipped
    assert config["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}
    assert written.read_text().startswith(MARKER)


def test_a_dagster_yaml_the_user_wrote_is_never_overwritten(tmp_path: Path) -> None:
    mine = "storage:\n  postgres:\n    postgres_url: {env: MY_URL}\n"
    (tmp_path / "dagster.yaml").write_text(mine)
    storage_module.write_instance_yaml(tmp_path, postgres_config("postgresql+psycopg2://x"), "pg")
    assert (tmp_path / "dagster.yaml").read_text() == mine


def test_a_server_url_needs_a_driver_this_project_installs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.PG_URL_ENV, "postgresql://dagster:secret@db:5432/dagster")
    with pytest.raises(InstanceStorageError, match=r"postgresql\+psycopg2://"):
        with instance_storage(tmp_path / "home", "postgres"):
            pass
    monkeypatch.setenv(settings.PG_URL_ENV, "postgresql+psycopg2://dagster:secret@db/dagster")
    with instance_storage(tmp_path / "home", "postgres") as storage:
        text = (storage.home / "dagster.yaml").read_text()
    # The URL, and its password, stay in the environment; the file names the variable.
    assert "secret" not in text
    for storage_kind in ("run_storage", "event_log_storage", "schedule_storage"):
        assert yaml.safe_load(text)[storage_kind]["config"]["postgres_url"] == {
            "env": settings.PG_URL_ENV
        }
    assert not (storage.home / storage_module.PGDATA).exists()


def test_sqlite_home_gets_the_shipped_settings_and_the_event_variables(tmp_path: Path) -> None:
    environment = dict(os.environ)
    with instance_storage(tmp_path / "home", "sqlite") as storage:
        assert storage == InstanceStorage(
            "sqlite",
            (tmp_path / "home").resolve(),
            env={"DAGSTER_HOME": str((tmp_path / "home").resolve()), **event_env()},
        )
        # The shipped settings, the event log's folder named by path instead of DAGSTER_HOME,
        # so the home opens the same from a process whose DAGSTER_HOME is elsewhere.
        shipped = yaml.safe_load((settings.SHIPPED_DAGSTER_HOME / "dagster.yaml").read_text())
        shipped["event_log_storage"]["config"] = {"dagster_home": str(storage.home)}
        written = storage.home / "dagster.yaml"
        assert yaml.safe_load(written.read_text()) == shipped
        assert written.read_text().startswith(MARKER)
    # The variables are handed to dagster dev; this process's environment is left alone.
    assert dict(os.environ) == environment


def test_event_variables_are_the_ones_the_installed_dagster_reads() -> None:
    """Batching on, the planned-subset flag off (see the test below); and the installed Dagster
    still reads both names (source text, no private import), so an upgrade that renames them
    fails here instead of silently slowing every backfill."""
    env = event_env()
    assert int(env[BATCH_VARIABLE]) >= 100
    assert SUBSET_VARIABLE not in env
    source = Path(dg.__file__).parent / "_core"
    batching = (source / "instance" / "methods" / "event_methods.py").read_text()
    assert f'os.getenv("{BATCH_VARIABLE}"' in batching
    subset = (source / "storage" / "event_log" / "base.py").read_text()
    assert f'os.getenv("{SUBSET_VARIABLE}")' in subset


# --- the embedded PostgreSQL ---------------------------------------------------------------------


def test_embedded_postgres_holds_the_instance_and_stops_when_done(pg_tmp: Path) -> None:
    home = pg_tmp / "home"
    pgdata = home / storage_module.PGDATA
    with instance_storage(home, "postgres") as storage:
        assert storage.embedded and storage.url.startswith("postgresql+psycopg2://")
        pid = postgres_running(pgdata)
        assert pid is not None
        with dg.DagsterInstance.from_config(str(storage.home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            # Every process that loads the instance builds the storage that pools.
            inst_data = instance.event_log_storage.inst_data
            assert inst_data.class_name == "PooledPostgresEventLogStorage"
        # The shipped pools reach the instance: the writer pool's limit is recorded in Postgres.
        settings.set_writer_pool_limit(storage.home)
        with dg.DagsterInstance.from_config(str(storage.home)) as instance:
            assert instance.event_log_storage.get_concurrency_info("duckdb").slot_count == 1
    assert postgres_running(pgdata) is None
    assert processes_mentioning(str(pgdata)) == []
    # Started again on the same folder: the same database, nothing lost; and a handle left by
    # a process that was killed while it held the server does not keep the server running.
    (pgdata / ".handle_pids.json").write_text("[999999999]")
    with instance_storage(home, "postgres") as storage:
        with dg.DagsterInstance.from_config(str(storage.home)) as instance:
            assert instance.event_log_storage.get_concurrency_info("duckdb").slot_count == 1
    assert postgres_running(pgdata) is None


def test_a_socket_folder_with_unusual_characters_is_quoted_in_the_url(pg_tmp: Path) -> None:
    home = pg_tmp / "a+b%c"
    with instance_storage(home, "postgres") as storage:
        assert "a%2Bb%25c" in storage.url
        with dg.DagsterInstance.from_config(str(storage.home)) as instance:
            assert instance.get_runs() == []
    assert postgres_running(home / storage_module.PGDATA) is None
    # A space, which pgserver cannot pass on, is refused with the fix.
    with pytest.raises(InstanceStorageError, match="no spaces"):
        with instance_storage(pg_tmp / "a b", "postgres"):
            pass


# --- ranged runs on batched instances -----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def batched_instance(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """A real instance of each storage, with the event settings the project runs with."""
    for name, value in event_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(SUBSET_VARIABLE, raising=False)
    with postgres_folder() as folder:
        home = (folder if request.param == "postgres" else tmp_path) / "dagster_home"
        with instance_storage(home, request.param) as storage:
            with dg.DagsterInstance.from_config(str(storage.home)) as instance:
                yield instance


def test_batched_ranged_run_keeps_every_partition_and_check_result(
    batched_instance: dg.DagsterInstance, warehouse_file: Path
) -> None:
    """A chunk of January with one bad day, on a batched instance: the same per-day records as
    without batching (``test_model_assets``), and the bad day's result says why."""
    seed_three_months(warehouse_file, plant_null_region_on=BAD_DAY)
    january = day_keys(dt.date(2024, 1, 1), dt.date(2024, 1, 31))

    result = run_v2_fct_orders(batched_instance, dt.date(2024, 1, 1), dt.date(2024, 1, 31))

    assert not result.success
    # The chunk failed before recording any materialization: its days show failed, as the UI
    # reads them (planned in a failed run, never materialized).
    assert batched_instance.get_materialized_partitions(V2_FCT_ORDERS) == set()
    storage = batched_instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        V2_FCT_ORDERS
    )
    assert sorted(attempts) == january
    planned = batched_instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    # One planned event per day: what the asset's partition status is built from.
    assert sorted(r.event_log_entry.dagster_event.partition for r in planned) == january
    assert len(check_evaluations(result)) == 31
    stored = {
        r.partition: r
        for r in check_history(batched_instance, V2_FCT_ORDERS, PARTITION_CHECKS_PASSED)
    }
    assert sorted(stored) == january
    assert {k: r.status.value for k, r in stored.items() if r.status.value != "SUCCEEDED"} == {
        BAD_DAY: "FAILED"
    }
    evaluation = stored[BAD_DAY].event.dagster_event.asset_check_evaluation_data
    assert evaluation.metadata["failed_checks"].value == NULL_RATES_WITHIN_LIMITS
    assert set(evaluation.metadata[NULL_RATES_WITHIN_LIMITS].value["over_limit"]) == {"region"}


def test_postgres_event_log_keeps_its_connection_through_a_ranged_run(
    pg_tmp: Path, warehouse_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dagster-postgres alone opens a server session per statement (several per stored event);
    the project's event log storage holds its connection: the same ranged run opens a fraction
    of the sessions."""
    for name, value in event_env().items():
        monkeypatch.setenv(name, value)
    seed_three_months(warehouse_file)
    opened = {}
    with instance_storage(pg_tmp / "home", "postgres") as storage:
        plain = {"storage": {"postgres": {"postgres_url": storage.url}}}
        shipped = storage_module.shipped_config()
        del shipped["event_log_storage"]  # the shipped SQLite event log
        for name, config, month in (
            ("plain dagster-postgres", {**plain, **shipped}, 2),
            ("the project's", postgres_config(storage.url), 3),
        ):
            (storage.home / "dagster.yaml").write_text(yaml.safe_dump(config))
            with dg.DagsterInstance.from_config(str(storage.home)) as instance:
                before = _sessions(storage.url)
                first, last = dt.date(2024, month, 1), dt.date(2024, month, 28)
                assert run_v2_fct_orders(instance, first, last).success
                opened[name] = _sessions(storage.url) - before
    # 28 planned events, 28 materializations and 28 check evaluations each time.
    assert opened["the project's"] * 3 < opened["plain dagster-postgres"], opened


def test_planned_subset_flag_would_hide_the_failed_days_of_a_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why ``event_env`` leaves DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS off: a chunk that
    fails before it materializes (SQL error, lock timeout, killed worker) shows its days as
    failed with per-day planned events, and as merely missing with the flag."""
    parts = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")

    @dg.asset(partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run())
    def chunk(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        raise RuntimeError("the chunk's SQL failed")

    keys = parts.get_partition_keys()
    statuses = {}
    for flag in (False, True):
        for name, value in event_env().items():
            monkeypatch.setenv(name, value)
        if flag:
            monkeypatch.setenv(SUBSET_VARIABLE, "true")
        else:
            monkeypatch.delenv(SUBSET_VARIABLE, raising=False)
        home = tmp_path / f"flag-{flag}"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            result = dg.materialize(
                [chunk],
                instance=instance,
                tags=range_tags(keys[0], keys[-1]),
                raise_on_error=False,
            )
            assert not result.success
            statuses[flag] = instance.get_status_by_partition(chunk.key, keys, parts)
    assert set(statuses[False].values()) == {dg.AssetPartitionStatus.FAILED}
    assert set(statuses[True].values()) == {None}


# --- a real dagster dev on the embedded PostgreSQL (e2e) ------------------------------------------

SEED_FIRST = dt.date(2024, 1, 1)
SEED_LAST = dt.date(2025, 12, 31)
PLAN = "fct_orders"
SET_POOL_LIMIT = """
mutation Limit($key: String!, $limit: Int!) {
  setConcurrencyLimit(concurrencyKey: $key, limit: $limit)
}
"""
BACKFILL_COUNTS = """
query Counts($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill {
      status
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
  }
}
"""
CHECK_EXECUTIONS = """
query Executions($asset: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $asset, checkName: $check, partition: $partition, limit: 5) {
    runId status partition
    evaluation { success metadataEntries { label ... on TextMetadataEntry { text } } }
  }
}
"""


@dataclass(frozen=True)
class PG:
    dev: DagsterDev
    warehouse: Path
    storage: InstanceStorage


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PG]:
    """``dagster dev`` on an embedded PostgreSQL, over a warehouse whose fct_orders is built for
    the plan's whole window (so its window checks and promotion can pass)."""
    tmp = tmp_path_factory.mktemp("pg")
    path = tmp / "warehouse.duckdb"
    plan = plan_named(PLAN)
    with duckdb.connect(str(path)) as conn:
        generate(conn, SEED_FIRST, SEED_LAST, orders_per_day=50, seed=42)
        for version in plan.version_names:
            build_window(conn, plan, version, SEED_FIRST, dt.date(2026, 1, 1), "seed-build")
    with postgres_folder() as folder:
        home = folder / "home"
        with instance_storage(home, "postgres") as storage:
            log = tmp / "dagster_dev.log"
            with DagsterDev(storage.home, str(path), env=storage.env, log_file=log) as dev:
                yield PG(dev, path, storage)
        deadline = time.monotonic() + 15
        while processes_mentioning(str(home)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_mentioning(str(home)) == []
        assert postgres_running(home / storage_module.PGDATA) is None


def _pg_connect(url: str):
    return psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://", 1))


def _sessions(url: str) -> int:
    """Sessions the server has opened so far (PostgreSQL 14+)."""
    with _pg_connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = 'postgres'")
        return cursor.fetchone()[0]


def _paths(plan) -> list[list[str]]:
    return [plan.asset_path(v) for v in plan.version_names]


def _set_pool_limit(dev: DagsterDev, limit: int) -> None:
    """The UI's Deployment > Concurrency: the ``duckdb`` pool's slots."""
    assert dev.graphql(SET_POOL_LIMIT, {"key": settings.WRITER_POOL, "limit": limit})[
        "setConcurrencyLimit"
    ]


@pytest.mark.e2e
def test_backfill_checks_and_promotion_run_on_postgres(pg: PG) -> None:
    dev, plan = pg.dev, plan_named(PLAN)
    first, last = dt.date(2024, 1, 1), dt.date(2024, 2, 29)
    backfill_id = dev.launch_backfill(
        _paths(plan), first.isoformat(), last.isoformat(), "pg: fct_orders Jan-Feb"
    )
    state = dev.wait_backfill(backfill_id, timeout=600)
    assert state.status in OK_BACKFILL
    assert sorted(run_range(r) for r in state.runs) == [
        (first, dt.date(2024, 1, 31)),
        (dt.date(2024, 2, 1), last),
    ]
    checks_run = dev.launch_job(f"window_checks_{PLAN}_job")
    assert dev.wait_run(checks_run, timeout=300) == "SUCCESS", dev.failure_reasons(checks_run)
    config = {"version": "v2", "approved_by": "", "note": "e2e on postgres"}
    promotion = dev.launch_job(
        f"promote_{PLAN}_job", {"ops": {f"promote_{PLAN}": {"config": config}}}
    )
    assert dev.wait_run(promotion, timeout=300) == "SUCCESS", dev.failure_reasons(promotion)

    # Dagster's own records, through an instance opened on the same home.
    home = pg.storage.home
    wanted = {(tuple(path), day) for path in _paths(plan) for day in days(first, last)}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = instance.get_runs(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        assert sorted(r.status.value for r in runs) == ["SUCCESS", "SUCCESS"]
        run_ids = [r.run_id for r in runs]
        materialized = [
            (tuple(r.event_log_entry.dagster_event.asset_key.path), r.partition_key)
            for run_id in run_ids
            for r in instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
        ]
        assert sorted(materialized) == sorted((p, d.isoformat()) for p, d in wanted)
        for path in _paths(plan):
            results = {
                r.partition: r.status.value
                for r in check_history(instance, dg.AssetKey(path), PARTITION_CHECKS_PASSED)
                if r.run_id in run_ids
            }
            assert results == {d.isoformat(): "SUCCEEDED" for d in days(first, last)}, path
        window_results = instance.get_records_for_run(
            checks_run, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        assert window_results
        assert {
            tuple(r.event_log_entry.dagster_event.asset_check_evaluation_data.asset_key.path)
            for r in window_results
        } == {tuple(plan.published_path)}
        assert instance.get_run_by_id(promotion).status.value == "SUCCESS"

    # The same rows, read in PostgreSQL itself: nothing went to SQLite files in the home.
    with _pg_connect(pg.storage.url) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = ANY(%s) "
            "AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (run_ids,),
        )
        assert cursor.fetchone()[0] == len(wanted)
        cursor.execute(
            "SELECT count(*) FROM asset_check_executions WHERE run_id = ANY(%s) "
            "AND partition IS NOT NULL AND execution_status = 'SUCCEEDED'",
            (run_ids,),
        )
        assert cursor.fetchone()[0] == len(wanted)
        cursor.execute(
            "SELECT count(*) FROM runs WHERE run_id = ANY(%s)",
            ([*run_ids, checks_run, promotion],),
        )
        assert cursor.fetchone()[0] == 4
    assert list(home.rglob("*.db")) == []
    log = fetch(pg.warehouse, "SELECT model, action, version, run_id FROM backfill.promotions")
    assert log == [(PLAN, "promote", "v2", promotion)]


@pytest.mark.e2e
def test_a_chunk_with_one_bad_day_shows_that_day_failed_with_its_reason(pg: PG) -> None:
    dev, plan = pg.dev, plan_named(PLAN)
    v2 = dg.AssetKey(plan.asset_path("v2"))
    first, last, bad = dt.date(2024, 3, 1), dt.date(2024, 3, 31), dt.date(2024, 3, 13)
    day_of = "CAST(order_ts AS DATE) = ?"
    with warehouse(pg.warehouse, read_only=False) as conn:
        conn.execute(
            "CREATE OR REPLACE TABLE main.kept_regions AS "
            f"SELECT order_id, ingested_at, region FROM raw.orders WHERE {day_of}",
            [bad],
        )
        conn.execute(f"UPDATE raw.orders SET region = NULL WHERE {day_of}", [bad])
    try:
        backfill_id = dev.launch_backfill(
            [plan.asset_path("v2")], first.isoformat(), last.isoformat(), "pg: one bad day"
        )
        state = dev.wait_backfill(backfill_id, timeout=600)
    finally:
        with warehouse(pg.warehouse, read_only=False) as conn:
            conn.execute(
                "UPDATE raw.orders AS o SET region = k.region FROM main.kept_regions AS k "
                "WHERE o.order_id = k.order_id AND o.ingested_at = k.ingested_at"
            )
            conn.execute("DROP TABLE main.kept_regions")

    (run,) = state.runs
    assert run["status"] == "FAILURE"
    assert run_range(run) == (first, last)
    assert any(PARTITION_CHECKS_PASSED in reason for reason in dev.failure_reasons(run["id"]))
    # The check's page in the UI: the bad day failed, with the sub-check that failed.
    shown = dev.graphql(
        CHECK_EXECUTIONS,
        {"asset": {"path": v2.path}, "check": PARTITION_CHECKS_PASSED, "partition": str(bad)},
    )["assetCheckExecutions"]
    assert shown[0]["runId"] == run["id"] and shown[0]["status"] == "FAILED"
    entries = {e["label"]: e.get("text") for e in shown[0]["evaluation"]["metadataEntries"]}
    assert entries["failed_checks"] == NULL_RATES_WITHIN_LIMITS
    assert NULL_RATES_WITHIN_LIMITS in entries
    keys = [d.isoformat() for d in days(first, last)]
    with dg.DagsterInstance.from_config(str(pg.storage.home)) as instance:
        results = {
            r.partition: r.status.value
            for r in check_history(instance, v2, PARTITION_CHECKS_PASSED)
            if r.run_id == run["id"]
        }
        assert results == {k: "FAILED" if k == str(bad) else "SUCCEEDED" for k in keys}
        # Every day of the chunk has a status on the asset's partitions bar (materialized, or
        # failed when a build stops before it materializes), none is silently missing.
        status = instance.get_status_by_partition(v2, keys, partitions_def(plan))
        assert None not in status.values(), status

    # "Re-execute" from failure on the backfill page: Dagster retries the asset partitions the
    # backfill did not materialize. This build records every day of a chunk before its blocking
    # check fails, so there is nothing to retry, and Dagster says so; were a day left
    # unmaterialized, the retry would rebuild exactly this chunk.
    try:
        retry_id = dev.retry_backfill(backfill_id, "FROM_FAILURE")
    except DagsterDevError as error:
        assert "no missing materializations" in str(error)
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    else:
        retried = dev.wait_backfill(retry_id, timeout=600)
        assert [run_range(r) for r in retried.runs] == [(first, last)]
        assert [r["status"] for r in retried.runs] == ["SUCCESS"]


@pytest.mark.e2e
def test_a_failed_chunk_is_shown_failed_and_reexecuted_exactly(pg: PG) -> None:
    """One chunk of a backfill fails before it materializes (a source table is gone while it
    runs), the other succeeds: the failed chunk's days show failed on the asset and on the
    backfill page, and "re-execute from failure" rebuilds exactly that chunk."""
    dev, plan = pg.dev, plan_named(PLAN)
    first, last = dt.date(2024, 4, 1), dt.date(2024, 5, 31)
    keys = [d.isoformat() for d in days(first, last)]
    broken = False

    def set_customers(present: bool) -> None:
        nonlocal broken
        old, new = ("customers_away", "customers") if present else ("customers", "customers_away")
        with warehouse(pg.warehouse, read_only=False) as conn:
            conn.execute(f"ALTER TABLE raw.{old} RENAME TO {new}")
        broken = not present

    # The pool decides which chunk runs when: closed, both chunks queue; opened for one run
    # while raw.customers is away, then for the other once it is back.
    _set_pool_limit(dev, 0)
    try:
        backfill_id = dev.launch_backfill(
            _paths(plan), first.isoformat(), last.isoformat(), "pg: a failed chunk"
        )
        deadline = time.monotonic() + 180
        while [r["status"] for r in dev.backfill(backfill_id).runs] != ["QUEUED", "QUEUED"]:
            assert time.monotonic() < deadline, "the daemon did not queue both chunks"
            time.sleep(1)
        set_customers(present=False)
        _set_pool_limit(dev, 1)
        while not (begun := [r for r in dev.backfill(backfill_id).runs if r["status"] in LEFT]):
            assert time.monotonic() < deadline + 120, "no chunk left the queue"
            time.sleep(0.2)
        _set_pool_limit(dev, 0)
        (failed_id,) = [r["id"] for r in begun]
        assert dev.wait_run(failed_id, timeout=300) == "FAILURE"
        set_customers(present=True)
        _set_pool_limit(dev, 1)
        state = dev.wait_backfill(backfill_id, timeout=600)
    finally:
        if broken:
            set_customers(present=True)
        _set_pool_limit(dev, 1)

    failed = next(r for r in state.runs if r["id"] == failed_id)
    (succeeded,) = [r for r in state.runs if r["id"] != failed_id]
    assert succeeded["status"] == "SUCCESS"
    failed_days = {d.isoformat() for d in days(*run_range(failed))}
    assert "raw.customers does not exist" in "\n".join(run_details(dev, failed_id)["texts"])
    with dg.DagsterInstance.from_config(str(pg.storage.home)) as instance:
        for path in _paths(plan):
            status = instance.get_status_by_partition(dg.AssetKey(path), keys, partitions_def(plan))
            assert {k for k, s in status.items() if s == dg.AssetPartitionStatus.FAILED} == (
                failed_days
            ), path
            assert {k for k, s in status.items() if s == dg.AssetPartitionStatus.MATERIALIZED} == (
                set(keys) - failed_days
            ), path
    counts = dev.graphql(BACKFILL_COUNTS, {"id": backfill_id})["partitionBackfillOrError"]
    assert counts["status"] == "COMPLETED_FAILED"
    for row in counts["assetBackfillData"]["assetBackfillStatuses"]:
        assert (row["numPartitionsFailed"], row["numPartitionsMaterialized"]) == (
            len(failed_days),
            len(keys) - len(failed_days),
        ), row

    retry_id = dev.retry_backfill(backfill_id, "FROM_FAILURE")
    retried = dev.wait_backfill(retry_id, timeout=600)
    assert retried.status in OK_BACKFILL
    assert [(r["status"], run_range(r)) for r in retried.runs] == [("SUCCESS", run_range(failed))]
    with dg.DagsterInstance.from_config(str(pg.storage.home)) as instance:
        rebuilt = {
            (tuple(r.event_log_entry.dagster_event.asset_key.path), r.partition_key)
            for r in instance.get_records_for_run(
                retried.runs[0]["id"], of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
        }
        assert rebuilt == {(tuple(p), d) for p in _paths(plan) for d in failed_days}
        for path in _paths(plan):
            status = instance.get_status_by_partition(dg.AssetKey(path), keys, partitions_def(plan))
            assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}, path
    # The warehouse agrees: each day's evidence names the run that built it last.
    evidence = dict(
        fetch(
            pg.warehouse,
            "SELECT CAST(partition_start AS DATE), run_id FROM backfill.partition_evidence "
            "WHERE model = ? AND version = 'v2' AND partition_start BETWEEN ? AND ?",
            [PLAN, first, last],
        )
    )
    assert {str(d) for d, r in evidence.items() if r == retried.runs[0]["id"]} == failed_days
    assert {str(d) for d, r in evidence.items() if r == succeeded["id"]} == set(keys) - failed_days
