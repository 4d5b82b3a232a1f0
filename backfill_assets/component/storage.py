"""The Dagster instance's event log on SQLite, keeping its connections.

Dagster's ``SqliteEventLogStorage`` builds a new SQLAlchemy engine and opens and closes a new
SQLite connection for every statement group: five or so per stored event. Each close of the
last connection to a WAL database checkpoints it (writes the WAL back into the file, with its
fsyncs), and each new engine compiles its statements again. A ranged run stores a
materialization and a check evaluation per partition, so that, not the SQL of the backfill, was
most of a run's time (20 ms a partition, ``docs/benchmarks.md``).

``PooledSqliteEventLogStorage`` is that same class (same files, same tables, same layout under
the Dagster home) with one engine per database file, kept with its connection, for the index
and the few run shards most recently used (``KEPT_SHARDS``; the webserver reads many runs, and
each kept engine holds a file open). Its connections set ``synchronous=NORMAL``, SQLite's
advice for WAL databases: a commit is durable once the WAL is checkpointed, so a power cut
(not a crash of a process) may lose the last events; the files stay consistent. What each
process stores and what the UI shows does not change.

With event batching on (``DAGSTER_EVENT_BATCH_SIZE``, which the project sets), a run hands
its planned and stored materializations to the storage in batches; Dagster's SQLite storage
still stores them one by one, each with a transaction in the run's shard and another in the
index. ``store_event_batch`` here writes the same rows, in the same order, with one
transaction per shard for each stretch of asset events in the batch; any other event (a
planned check, say) is stored on its own, as Dagster does.

The shipped ``dagster_home/dagster.yaml`` names this class as the event log storage with the
Dagster home as its one setting (run and schedule storage stay Dagster's SQLite defaults), so
every process that opens the instance (webserver, daemon, code server, run workers) uses it.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import groupby

import sqlalchemy as db
from dagster import StringSource
from dagster._core.events import ASSET_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS

KEPT_SHARDS = 8  # run-shard engines kept beside the index's; older ones are disposed
EVENTS_FOLDER = ("history", "runs")  # where Dagster's default SQLite storage keeps event logs


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log storage with its engines and connections kept."""

    def __init__(self, dagster_home: str, inst_data=None):
        self._dagster_home = dagster_home
        self._engines: OrderedDict[str, db.Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._tables: set[str] = set()
        super().__init__(os.path.join(dagster_home, *EVENTS_FOLDER), inst_data=inst_data)

    @classmethod
    def config_type(cls) -> Mapping[str, object]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(
        cls,
        inst_data,  # Dagster's ConfigurableClassData (not exported by `dagster`): passed on
        config_value: Mapping[str, str],
    ) -> "PooledSqliteEventLogStorage":
        return cls(config_value["dagster_home"], inst_data=inst_data)

    def _engine(self, shard: str) -> db.Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = db.create_engine(
                self.conn_string_for_shard(shard),
                pool_size=1,
                max_overflow=4,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            db.event.listen(engine, "connect", _normal_sync)
            self._engines[shard] = engine
            runs = [s for s in self._engines if s != INDEX_SHARD_NAME]
            for old in runs[: max(0, len(runs) - KEPT_SHARDS)]:
                self._engines.pop(old).dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        # Dagster's _connect with the engine kept (it creates and disposes one each time).
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        # In order: each stretch of asset events of one run in one transaction per shard, any
        # other event (a planned check, say) on its own, as Dagster stores it.
        for (_, asset_events), stretch in groupby(events, key=_stretch):
            stretch = list(stretch)
            if asset_events and len(stretch) > 1:
                self._store_asset_events(stretch)
            else:
                for event in stretch:
                    self.store_event(event)

    def _store_asset_events(self, events: list[EventLogEntry]) -> None:
        # What Dagster's SqliteEventLogStorage.store_event does for each asset event (a row in
        # the run's shard; a row in the index, its tags, the asset's entry), with one
        # transaction per shard for them all instead of two per event.
        rows = [self._event_to_row(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = [
                conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0]
                for row in rows
            ]
            self._store_asset_event_tags(conn, events, ids)
            # Dagster sets an asset's entry once per event (an INSERT, failing, then an UPDATE:
            # most of the time of a stored event). Each sets its columns to fixed values, so
            # setting the values merged in event order once per asset leaves the same entry.
            with_index_cols = self._has_asset_key_index_cols_on_connection(conn)
            entries: dict[str, dict] = {}
            for event, event_id in zip(events, ids, strict=True):
                key = event.get_dagster_event().asset_key
                if key:
                    entries.setdefault(key.to_string(), {}).update(
                        self._get_asset_entry_values(event, event_id, with_index_cols)
                    )
            for key, values in entries.items():
                if not values:
                    continue
                try:
                    conn.execute(AssetKeyTable.insert().values(asset_key=key, **values))
                except db.exc.IntegrityError:
                    conn.execute(
                        AssetKeyTable.update()
                        .values(**values)
                        .where(AssetKeyTable.c.asset_key == key)
                    )

    def has_table(self, table_name: str) -> bool:
        # Dagster's builds a new engine for every call, and it is called for most events (is
        # the check-execution table there?). A table, once there, stays: remember the yes.
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found

    def _dispose_engines(self) -> None:
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._tables.clear()
        self._dispose_engines()  # the run shards' files are deleted: let go of them first
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()


def _stretch(event: EventLogEntry) -> tuple[str, bool]:
    """An event's run and whether it is an asset event (what ``_store_asset_events`` takes)."""
    return event.run_id, event.is_dagster_event and event.dagster_event_type in ASSET_EVENTS


def _normal_sync(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
