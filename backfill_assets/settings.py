"""Where the embedded warehouse and Dagster home live, and how to point them elsewhere.

The project works with zero configuration: the DuckDB file and the Dagster home sit in the
project directory. Two environment variables move them:

- ``BACKFILL_WAREHOUSE``: path of the DuckDB file (default
  ``<project>/warehouse/warehouse.duckdb``; not named like a schema, see ``warehouse.py``);
- ``DAGSTER_HOME``: the Dagster instance folder (default ``<project>/dagster_home``, which ships
  the ``dagster.yaml`` that serializes warehouse writers; ``<project>/dagster_home/postgres``
  when the storage is PostgreSQL).

Two more choose where Dagster keeps runs and events (``instance.py`` sets the home up):

- ``BACKFILL_DAGSTER_STORAGE``: ``sqlite`` (default) or ``postgres`` (an embedded PostgreSQL in
  the Dagster home, started by the command that needs it);
- ``BACKFILL_DAGSTER_PG_URL``: a PostgreSQL server (``postgresql+psycopg2://…``) to use instead
  of the embedded one; setting it implies ``postgres``.

They are read when a command starts or when the code location builds its definitions (the code
server and every run worker it launches inherit the same environment), never at import time.
"""

import os
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SHIPPED_DAGSTER_HOME = PROJECT_DIR / "dagster_home"


def warehouse_path() -> str:
    """The DuckDB file every command and the code location use."""
    configured = os.environ.get("BACKFILL_WAREHOUSE")
    return configured or str(PROJECT_DIR / "warehouse" / "warehouse.duckdb")


STORAGE_ENV = "BACKFILL_DAGSTER_STORAGE"
PG_URL_ENV = "BACKFILL_DAGSTER_PG_URL"
STORAGES = ("sqlite", "postgres")


def dagster_storage() -> str:
    """Where the Dagster instance keeps runs and events: ``sqlite`` or ``postgres``."""
    chosen = os.environ.get(STORAGE_ENV, "").strip().lower()
    if chosen:
        if chosen not in STORAGES:
            raise ValueError(f"{STORAGE_ENV}={chosen!r}: choose one of {', '.join(STORAGES)}")
        return chosen
    return "postgres" if os.environ.get(PG_URL_ENV) else "sqlite"


def dagster_home() -> Path:
    """The Dagster home: ``DAGSTER_HOME``, else the one shipped in the project directory (its
    ``postgres`` folder for Postgres storage, so the SQLite instance is never overwritten)."""
    configured = os.environ.get("DAGSTER_HOME")
    if configured:
        return Path(configured)
    return (
        SHIPPED_DAGSTER_HOME / "postgres"
        if dagster_storage() == "postgres"
        else SHIPPED_DAGSTER_HOME
    )


WRITER_POOL = "duckdb"  # the pool every warehouse writer claims; limit 1 (one writing process)


def set_writer_pool_limit(home: Path) -> None:
    """Record the ``duckdb`` pool's limit in the instance before anything runs.

    ``dagster.yaml``'s ``default_limit`` reaches a pool only once the run queue has seen a run
    of it, and Dagster 1.13's first queue iteration launches the queued runs of a new pool as if
    unlimited: the first backfill on a fresh Dagster home would run its chunks at once. Setting
    the limit explicitly closes that gap.
    """
    subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "concurrency", "set", WRITER_POOL, "1"],
        env={**os.environ, "DAGSTER_HOME": str(Path(home).resolve())},
        check=True,
        capture_output=True,
    )


def reports_dir() -> Path:
    """Where human-readable reports (reconciliation, cutover summaries) are written."""
    return Path(warehouse_path()).resolve().parent / "reports"
