"""The warehouse resource and the executor every job of this location uses."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.settings import warehouse_path


@dg.definitions
def defs() -> dg.Definitions:
    # In-process: one DuckDB connection per run, no per-step process start (the pool in the
    # shipped dagster.yaml serializes runs, not the steps inside one).
    return dg.Definitions(
        resources={"warehouse": DuckDBResource(database=warehouse_path())},
        executor=dg.in_process_executor,
    )
