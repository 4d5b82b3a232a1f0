"""The shipped SQLite instance's event log keeps its connections (``component/storage.py``).

What a user relies on: the shipped ``dagster.yaml`` builds it in every process; it writes
Dagster's own files (Dagster's stock SQLite storage reads every per-day materialization and
check result back); a process holding its connections still sees what another process wrote
(the webserver and the daemon reading a run worker's events); it opens a fraction of the
connections Dagster's own does; a batch of asset events stored in one transaction per file
leaves what Dagster's own leaves; its open files stay bounded however many runs it reads; a
wipe still deletes the runs' files.
"""

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.storage.event_log.base import EventLogRecord
from dagster_shared.serdes import deserialize_value

from backfill_assets import settings
from backfill_assets.component.models import PARTITION_CHECKS_PASSED
from backfill_assets.component.storage import KEPT_SHARDS, PooledSqliteEventLogStorage
from backfill_assets.instance import event_env, instance_storage, shipped_config
from backfill_assets_tests.test_model_assets import (
    BAD_DAY,
    V2_FCT_ORDERS,
    days,
    run_v2_fct_orders,
    seed_three_months,
)

# A partitioned asset with a per-partition check, run over a range in a process of its own.
WRITER = textwrap.dedent(
    """
    import sys
    import dagster as dg

    parts = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2025-01-01")
    key = dg.AssetKey(["probe"])

    @dg.asset(key=key, partitions_def=parts, backfill_policy=dg.BackfillPolicy.single_run(),
              check_specs=[dg.AssetCheckSpec("ok", asset=key, partitions_def=parts)])
    def probe(context):
        yield dg.MaterializeResult(asset_key=key)
        for partition in context.partition_keys:
            yield dg.AssetCheckEvaluation(asset_key=key, check_name="ok", passed=True,
                                          partition=partition)
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
            dg.AssetCheckKey(key, "ok")))

    job = dg.Definitions(assets=[probe]).resolve_implicit_global_asset_job_def()
    first, last, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with dg.DagsterInstance.get() as instance:
        for _ in range(runs):
            tags = {"dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last}
            assert job.execute_in_process(instance=instance, tags=tags).success
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A Dagster home with the shipped settings (as ``backfill-assets ui`` and the demo write it)
    and the project's event settings in the environment."""
    for name, value in event_env().items():
        monkeypatch.setenv(name, value)
    with instance_storage(tmp_path / "dagster_home", "sqlite") as storage:
        monkeypatch.setenv("DAGSTER_HOME", str(storage.home))
        yield storage.home


def write_in_another_process(home: Path, first: str, last: str, runs: int = 1) -> None:
    script = home.parent / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "DAGSTER_HOME": str(home), **event_env()}
    done = subprocess.run(
        [sys.executable, str(script), first, last, str(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_shipped_dagster_yaml_builds_it_under_the_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped file names the folder by DAGSTER_HOME, as every Dagster process has it."""
    home = tmp_path / "shipped"
    home.mkdir()
    (home / "dagster.yaml").write_text((settings.SHIPPED_DAGSTER_HOME / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        assert Path(storage._base_dir) == home / "history" / "runs"  # Dagster's own layout
        # Run and schedule storage stay Dagster's SQLite defaults.
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.schedule_storage).__name__ == "SqliteScheduleStorage"
    assert (home / "history" / "runs" / "index.db").exists()


def test_dagsters_own_storage_reads_every_day_it_wrote(home: Path, warehouse_file: Path) -> None:
    """A chunk of January with one bad day, stored by the kept-connection event log and read
    back by Dagster's stock SQLite storage from the same files: every day's failed attempt
    and check result, the bad day's with its reason."""
    seed_three_months(warehouse_file, plant_null_region_on=BAD_DAY)
    january = days(dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        result = run_v2_fct_orders(instance, dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert not result.success

    # Dagster's own SQLite storage on the same folder: what an instance without the shipped
    # event log would use.
    plain = {"storage": {"sqlite": {"base_dir": str(home)}}}
    reader_home = home.parent / "plain_reader"
    reader_home.mkdir()
    (reader_home / "dagster.yaml").write_text(yaml.safe_dump(plain))
    with dg.DagsterInstance.from_config(str(reader_home)) as reader:
        storage = reader.event_log_storage
        assert type(storage).__name__ == "SqliteEventLogStorage"
        attempts = (
            storage.get_latest_asset_partition_materialization_attempts_without_materializations(
                V2_FCT_ORDERS
            )
        )
        assert sorted(attempts) == january
        history = storage.get_asset_check_execution_history(
            dg.AssetCheckKey(V2_FCT_ORDERS, PARTITION_CHECKS_PASSED), limit=1000
        )
        statuses = {r.partition: r.status.value for r in history}
        assert sorted(statuses) == january
        assert {d: s for d, s in statuses.items() if s != "SUCCEEDED"} == {BAD_DAY: "FAILED"}


def test_a_process_holding_its_connections_sees_another_process_write(home: Path) -> None:
    """The webserver and the daemon keep their connections open while run workers write."""
    key = dg.AssetKey(["probe"])
    with dg.DagsterInstance.from_config(str(home)) as watcher:
        assert watcher.get_materialized_partitions(key) == set()  # its connection is now open
        write_in_another_process(home, "2024-01-01", "2024-01-10")
        assert watcher.get_materialized_partitions(key) == set(
            days(dt.date(2024, 1, 1), dt.date(2024, 1, 10))
        )
        write_in_another_process(home, "2024-01-11", "2024-01-12")
        assert len(watcher.get_materialized_partitions(key)) == 12


def test_it_opens_a_fraction_of_the_connections_dagsters_own_does(home: Path) -> None:
    """The same 40-day ranged run of the probe asset, in this process, on Dagster's own
    storage and on the shipped one; every database connection opened is counted."""
    opened = {"count": 0}

    def count(*_args) -> None:
        opened["count"] += 1

    counts = {}
    for name in ("plain", "shipped"):
        folder = _plain_or_shipped_home(home.parent, name)
        job = _job_of("probe")
        with dg.DagsterInstance.from_config(str(folder)) as instance:
            job.execute_in_process(instance=instance, tags=_range("2024-02-01", "2024-02-01"))
            opened["count"] = 0
            sa.event.listen(sa.engine.Engine, "connect", count)
            try:
                result = job.execute_in_process(
                    instance=instance, tags=_range("2024-03-01", "2024-04-09")
                )
            finally:
                sa.event.remove(sa.engine.Engine, "connect", count)
            assert result.success
            counts[name] = opened["count"]
    # 40 planned materializations, 40 materializations, 40 check evaluations at least.
    assert counts["plain"] >= 120, counts
    assert counts["shipped"] * 5 < counts["plain"], counts


# A second asset beside the probe, so a batch holds the events of two assets.
SECOND = textwrap.dedent(
    """
    @dg.asset(key=dg.AssetKey(["second"]), partitions_def=parts,
              backfill_policy=dg.BackfillPolicy.single_run())
    def second(context):
        return dg.MaterializeResult(metadata={"rows": len(context.partition_keys)})
    """
)


def test_a_batch_is_stored_as_dagsters_own_storage_stores_it(home: Path) -> None:
    """A ranged run of two assets over 20 days, with event batching on, on Dagster's own
    storage and on the shipped one. The shipped one writes each stretch of asset events in one
    transaction per file; what it stores is what Dagster's own stores: the same events in the
    same order in the run's file and in the index, the same tags on the same events, each
    asset's entry pointing at its last materialization, and the same check executions."""
    stored = {}
    for name in ("plain", "shipped"):
        folder = _plain_or_shipped_home(home.parent, name)
        job = _job_of("probe", "second")
        with dg.DagsterInstance.from_config(str(folder)) as instance:
            assert type(instance.event_log_storage).__name__ == (
                "SqliteEventLogStorage" if name == "plain" else "PooledSqliteEventLogStorage"
            )
            result = job.execute_in_process(
                instance=instance, tags=_range("2024-03-01", "2024-03-20")
            )
            assert result.success
            stored[name] = _stored(folder / "history" / "runs", result.run_id)
            stored[name]["materialized"] = {
                key: sorted(instance.get_materialized_partitions(dg.AssetKey([key])))
                for key in ("probe", "second")
            }
    assert stored["shipped"] == stored["plain"]
    # Not two empty logs: both assets' 20 days, planned and stored, and the probe's checks.
    march = [f"2024-03-{d:02d}" for d in range(1, 21)]
    assert stored["plain"]["materialized"] == {"probe": march, "second": march}
    index_types = [row[0] for row in stored["plain"]["index"]]
    assert index_types.count("ASSET_MATERIALIZATION_PLANNED") == 40
    assert index_types.count("ASSET_MATERIALIZATION") == 40
    assert stored["plain"]["entries"] == {
        key: ("ASSET_MATERIALIZATION", "2024-03-20", True) for key in ('["probe"]', '["second"]')
    }
    assert len(stored["plain"]["check_executions"]) == 20
    assert len(stored["plain"]["tags"]) >= 40  # a data version for each materialization


def _stored(runs_folder: Path, run_id: str) -> dict:
    """What a run left in Dagster's SQLite event log files, with storage ids resolved to the
    events they point at (ids are each file's own)."""
    with sqlite3.connect(runs_folder / f"{run_id}.db") as run_file:
        run_events = run_file.execute(
            "SELECT dagster_event_type, asset_key, partition, step_key FROM event_logs ORDER BY id"
        ).fetchall()
    with sqlite3.connect(runs_folder / "index.db") as index:
        rows = index.execute(
            "SELECT id, dagster_event_type, asset_key, partition FROM event_logs "
            "WHERE run_id = ? ORDER BY id",
            [run_id],
        ).fetchall()
        event = {row[0]: row[1:] for row in rows}
        # Tag names by the event they tag (their values, data versions, differ from run to run).
        tags = sorted(
            (*event[event_id], key)
            for event_id, key in index.execute("SELECT event_id, key FROM asset_event_tags")
        )
        entries = {}
        for key, record, last_run in index.execute(
            "SELECT asset_key, last_materialization, last_run_id FROM asset_keys"
        ):
            storage_id = deserialize_value(record, EventLogRecord).storage_id
            kind, _, partition = event[storage_id]
            entries[key] = (kind, partition, last_run == run_id)
        checks = sorted(
            index.execute(
                "SELECT asset_key, check_name, partition, execution_status "
                "FROM asset_check_executions WHERE run_id = ?",
                [run_id],
            ).fetchall()
        )
    return {
        "run": run_events,
        "index": [row[1:] for row in rows],
        "tags": tags,
        "entries": entries,
        "check_executions": checks,
    }


def test_open_files_stay_bounded_however_many_runs_it_reads(home: Path) -> None:
    write_in_another_process(home, "2024-01-01", "2024-01-02", runs=KEPT_SHARDS + 6)
    runs_folder = home / "history" / "runs"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_ids = [r.run_id for r in instance.get_runs()]
        assert len(run_ids) == KEPT_SHARDS + 6
        for run_id in run_ids:  # what the webserver does as a user browses runs
            assert instance.all_logs(run_id)
        assert len(_open_databases(runs_folder)) <= KEPT_SHARDS + 1  # + the index
        instance.wipe()
        # A wipe still deletes every run's file (the storage let go of them first).
        assert sorted(p.name for p in runs_folder.glob("*.db")) == ["index.db"]
        assert instance.get_runs() == []
        write_in_another_process(home, "2024-02-01", "2024-02-01")
        assert instance.get_materialized_partitions(dg.AssetKey(["probe"])) == {"2024-02-01"}


def _plain_or_shipped_home(parent: Path, name: str) -> Path:
    """A Dagster home ``parent/name`` on Dagster's own SQLite storage ("plain") or with the
    shipped settings ("shipped")."""
    folder = parent / name
    folder.mkdir()
    if name == "plain":
        config = {"storage": {"sqlite": {"base_dir": str(folder)}}}
    else:
        config = shipped_config()
        config["event_log_storage"]["config"]["dagster_home"] = str(folder)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


def _job_of(*assets: str) -> dg.JobDefinition:
    """A job of ``WRITER``'s probe asset and ``SECOND``'s, defined in this process."""
    namespace: dict = {}
    exec(WRITER.split("job = ")[0] + SECOND, namespace)
    return dg.Definitions(
        assets=[namespace[name] for name in assets]
    ).resolve_implicit_global_asset_job_def()


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def _open_databases(folder: Path) -> set[str]:
    """The database files in ``folder`` this process holds open."""
    names = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.parent == folder and target.suffix == ".db":
            names.add(target.name)
    return names
