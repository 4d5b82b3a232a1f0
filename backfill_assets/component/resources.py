"""The warehouse resource every plan's definitions share, and a write session on it.

Two kinds of warehouse stand behind the one resource: the DuckDB file ``database`` (the
default), or, when ``lake_catalog`` is set, a DuckLake (``lake.py``) whose catalog is
PostgreSQL (several writers at once) or SQLite (one machine) and whose Parquet files sit in
``lake_data_path``. The code location sets both from ``BACKFILL_LAKE_CATALOG`` and
``BACKFILL_LAKE_DATA_PATH`` as ``dg.EnvVar``s, so the catalog URL (it may hold a password) is
never shown in the UI's resource config, only the variable's name.
"""

import os
from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import cache

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets import lake as lakes
from backfill_assets.warehouse import (
    MEMORY_LIMIT,
    checkpointed_state,
    connect_writer,
    mark_sound,
    open_read_only,
)


class Warehouse(DuckDBResource):
    """The warehouse: the DuckDB file (one writer, who waits a bounded time for its lock), or a
    DuckLake when ``lake_catalog`` is set (several writers; conflicting commits are retried)."""

    lock_wait_seconds: int = Field(
        default=120,
        description="How long a run waits for another process to release the warehouse file.",
    )
    memory_limit: str = Field(
        default=MEMORY_LIMIT,
        description="DuckDB's memory_limit for a run's connection; past it DuckDB spills to "
        "disk. Raise it on a bigger machine.",
    )
    lake_catalog: str | None = Field(
        default=None,
        description="A DuckLake catalog instead of the DuckDB file: postgres:<libpq "
        "connection string> or a postgresql:// URL (several writers), or sqlite:<path> (one "
        "machine). Unset: the DuckDB file `database`.",
    )
    lake_data_path: str | None = Field(
        default=None,
        description="The folder holding the DuckLake's Parquet files, shared by every writer.",
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """``DuckDBResource``'s connection (the team's own assets may use it): the file, or
        the lake when one is set, with ``connection_config`` applied either way."""
        where = warehouse_lake(self)
        if where is None:
            with super().get_connection() as conn:
                yield conn
            return
        config = {"memory_limit": self.memory_limit, **self.connection_config}
        external = bool(config.get("enable_external_access", True))
        with closing(lakes.connect(where, config, external_access=external)) as conn:
            yield conn


def _value(field: str | None) -> str | None:
    """A field's value: an ``EnvVar`` read outside a run (where Dagster has not resolved it)
    is looked up now."""
    if isinstance(field, dg.EnvVar):
        return field.get_value()
    return field


def warehouse_lake(resource: DuckDBResource) -> lakes.Lake | None:
    """The lake ``resource`` names, or None for the DuckDB file."""
    catalog = _value(getattr(resource, "lake_catalog", None))
    if not catalog:
        return None
    return lakes.lake(catalog, _value(getattr(resource, "lake_data_path", None)) or "")


@cache
def _shared(database: str, lake_catalog_set: bool, lake_data_path_set: bool) -> Warehouse:
    return Warehouse(
        database=database,
        lake_catalog=dg.EnvVar(lakes.CATALOG_ENV) if lake_catalog_set else None,
        lake_data_path=dg.EnvVar(lakes.DATA_PATH_ENV) if lake_data_path_set else None,
    )


def shared_warehouse(database: str) -> Warehouse:
    """One resource object per warehouse: every plan's definitions hand Dagster the same
    object, which is how ``Definitions.merge`` accepts the same resource key from many
    components. A DuckLake when ``BACKFILL_LAKE_CATALOG`` is set (read now, when the
    definitions are built, never at import)."""
    return _shared(
        database,
        bool(os.environ.get(lakes.CATALOG_ENV, "").strip()),
        bool(os.environ.get(lakes.DATA_PATH_ENV, "").strip()),
    )


@contextmanager
def session(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection from the resource, closed however the block ends.

    On the DuckDB file it waits ``lock_wait_seconds`` (a ``Warehouse`` field; 120 s for a plain
    ``DuckDBResource``) for another writer to let go of the file; on a DuckLake nobody waits:
    writers meet at COMMIT, where ``warehouse.committed`` retries a conflicting one.

    Every run executes plan SQL on this connection, so it has no file or extension access
    (``read_csv``, ``ATTACH``, ``COPY ... TO``, ``INSTALL``/``LOAD`` fail, and it cannot be
    switched back on); DuckDB still writes its own database file, WAL and temp directory, and
    DuckLake its catalog and data folder. ``connection_config`` cannot turn it back on: it can
    be set from a run's config, and no run may give plan SQL the file system.
    """
    wait = getattr(resource, "lock_wait_seconds", 120)
    config = {"memory_limit": getattr(resource, "memory_limit", MEMORY_LIMIT)}
    config.update(resource.connection_config)
    config["enable_external_access"] = False
    lake = warehouse_lake(resource)
    conn = connect_writer(resource.database, lake, wait, config)
    with closing(conn):
        yield conn
        # The work raised nothing: the file is recorded as sound once closed (a lake has no
        # file to read through).
        held = None if lake else checkpointed_state(conn, resource.database)
    mark_sound(resource.database, held)


def read_session(resource: DuckDBResource) -> duckdb.DuckDBPyConnection:
    """A read-only connection for sensors (``with read_session(warehouse) as conn``): the file
    read-only (``duckdb.Error`` at once when a writer holds it), or the lake attached
    read-only, which writers never block. No file or extension access either way."""
    return open_read_only(resource.database, warehouse_lake(resource))
