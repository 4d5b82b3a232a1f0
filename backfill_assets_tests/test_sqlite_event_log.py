"""The shipped SQLite instance's event log keeps its connections (``component/storage.py``).

What a user relies on: the shipped ``dagster.yaml`` builds it in every process; it writes
Dagster's own files (Dagster's stock SQLite storage reads every per-day materialization and
check result back); a process holding its connections still sees what another process wrote
(the webserver and the daemon reading a run worker's events); it opens a fraction of the
connections Dagster's own does; its open files stay bounded however many runs it reads; a wipe
still deletes the runs' files.
"""

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

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
        folder = home.parent / name
        folder.mkdir()
        if name == "plain":
            config = {"storage": {"sqlite": {"base_dir": str(folder)}}}
        else:
            config = shipped_config()
            config["event_log_storage"]["config"]["dagster_home"] = str(folder)
        (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
        namespace: dict = {}
        exec(WRITER.split("job = ")[0], namespace)  # the probe asset, defined here
        job = dg.Definitions(assets=[namespace["probe"]]).resolve_implicit_global_asset_job_def()
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
