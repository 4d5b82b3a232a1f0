"""The warehouse resource every plan's definitions share, and a write session on it."""

from collections.abc import Iterator
from contextlib import closing, contextmanager
from functools import cache

import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets.warehouse import MEMORY_LIMIT, connect_waiting


class Warehouse(DuckDBResource):
    """The DuckDB warehouse; a writer waits a bounded time for the file's single-writer lock."""

    lock_wait_seconds: int = Field(
        default=120,
        description="How long a run waits for another process to release the warehouse file.",
    )
    memory_limit: str = Field(
        default=MEMORY_LIMIT,
        description="DuckDB's memory_limit for a run's connection; past it DuckDB spills to "
        "disk. Raise it on a bigger machine.",
    )


@cache
def shared_warehouse(database: str) -> Warehouse:
    """One resource object per warehouse file: every plan's definitions hand Dagster the same
    object, which is how ``Definitions.merge`` accepts the same resource key from many
    components."""
    return Warehouse(database=database)


@contextmanager
def session(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection from the resource, closed however the block ends.

    Waits ``lock_wait_seconds`` (a ``Warehouse`` field; 120 s for a plain ``DuckDBResource``)
    for another writer to let go of the file.

    Every run executes plan SQL on this connection, so it has no file or extension access
    (``read_csv``, ``ATTACH``, ``COPY ... TO``, ``INSTALL``/``LOAD`` fail, and it cannot be
    switched back on); DuckDB still writes its own database file, WAL and temp directory.
    ``connection_config`` cannot turn it back on: it can be set from a run's config, and no run
    may give plan SQL the file system.
    """
    wait = getattr(resource, "lock_wait_seconds", 120)
    config = {"memory_limit": getattr(resource, "memory_limit", MEMORY_LIMIT)}
    config.update(resource.connection_config)
    config["enable_external_access"] = False
    conn = connect_waiting(resource.database, wait, config)
    with closing(conn):
        yield conn
