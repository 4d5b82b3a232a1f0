"""The warehouse resource and the executor every job of this location uses."""

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets.settings import warehouse_path
from backfill_assets.warehouse import MEMORY_LIMIT


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


@dg.definitions
def defs() -> dg.Definitions:
    # In-process: one DuckDB connection per run, no per-step process start (the pool in the
    # shipped dagster.yaml serializes runs, not the steps inside one).
    return dg.Definitions(
        resources={"warehouse": Warehouse(database=warehouse_path())},
        executor=dg.in_process_executor,
    )
