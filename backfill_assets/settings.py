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

Three more make the warehouse a DuckLake (``lake.py``): ``BACKFILL_LAKE_CATALOG``,
``BACKFILL_LAKE_DATA_PATH`` and ``BACKFILL_LAKE_WRITERS`` (how many runs may write it at once,
default 4). A lake has a Dagster home of its own (``<project>/dagster_home/lake``, its
``postgres`` folder for Postgres storage), because the writer pool's limit is recorded in the
instance: several writers on the lake, one on the DuckDB file, never mixed up.

They are read when a command starts or when the code location builds its definitions (the code
server and every run worker it launches inherit the same environment), never at import time.
"""

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from backfill_assets.lake import CATALOG_ENV, DATA_PATH_ENV

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


def lake_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the warehouse is a DuckLake (``BACKFILL_LAKE_CATALOG`` is set)."""
    env = os.environ if environ is None else environ
    return bool(env.get(CATALOG_ENV, "").strip())


def dagster_home() -> Path:
    """The Dagster home: ``DAGSTER_HOME``, else the one shipped in the project directory (its
    ``postgres`` folder for Postgres storage, so the SQLite instance is never overwritten), or,
    on a DuckLake, its ``lake`` folder (``lake/postgres``): the lake's instance records a
    writer pool limit above 1, which must never reach the DuckDB file's instance."""
    configured = os.environ.get("DAGSTER_HOME")
    if configured:
        return Path(configured)
    base = SHIPPED_DAGSTER_HOME / "lake" if lake_configured() else SHIPPED_DAGSTER_HOME
    return base / "postgres" if dagster_storage() == "postgres" else base


def lake_root() -> Path:
    """Where ``--lake`` keeps an embedded DuckLake when ``BACKFILL_LAKE_CATALOG`` is unset: a
    ``lake`` folder beside the warehouse file (its PostgreSQL catalog in ``catalog``, its
    Parquet files in ``data``)."""
    return Path(warehouse_path()).resolve().parent / "lake"


WRITER_POOL = "duckdb"  # the pool every warehouse writer claims (the name is the pool's, kept)
LAKE_WRITERS_ENV = "BACKFILL_LAKE_WRITERS"
DEFAULT_LAKE_WRITERS = 4


def writer_pool_limit(environ: Mapping[str, str] | None = None) -> int:
    """How many runs may write the warehouse at once: always 1 on the DuckDB file (DuckDB
    allows one writing process per file); on a DuckLake ``BACKFILL_LAKE_WRITERS``, default 4.

    4 because a lake's writers meet only at COMMIT (conflicts are retried), so a backfill's
    chunks can be written side by side, while each writer holds a run worker's memory and a
    catalog connection; on two cores more writers were not faster (docs/benchmarks.md), the
    gain is run workers on several machines. Raise it with the workers you have."""
    env = os.environ if environ is None else environ
    if not lake_configured(env):
        return 1
    text = env.get(LAKE_WRITERS_ENV, "").strip()
    if not text:
        return DEFAULT_LAKE_WRITERS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(
            f"{LAKE_WRITERS_ENV}={text!r} is not a number of writers. Fix: a whole number of "
            f"runs that may write the lake at once, 1 or more (default {DEFAULT_LAKE_WRITERS})"
        )
    return limit


def set_writer_pool_limit(home: Path, limit: int | None = None) -> int:
    """Record the ``duckdb`` pool's limit in the instance before anything runs; return it.

    ``limit`` defaults to ``writer_pool_limit()`` (1 on the DuckDB file, several on a lake). It
    is recorded on every start, so a home always carries the limit of the warehouse of the
    command that started it. ``dagster.yaml``'s ``default_limit`` reaches a pool only once the
    run queue has seen a run of it, and Dagster 1.13's first queue iteration launches the
    queued runs of a new pool as if unlimited: the first backfill on a fresh Dagster home would
    run its chunks at once. Setting the limit explicitly closes that gap.

    A limit above 1 is refused for the shipped Dagster home (and its ``postgres`` folder): that
    is the DuckDB file's instance, whose writers must stay one at a time.
    """
    limit = writer_pool_limit() if limit is None else limit
    resolved = Path(home).resolve()
    file_homes = {SHIPPED_DAGSTER_HOME.resolve(), (SHIPPED_DAGSTER_HOME / "postgres").resolve()}
    if limit > 1 and resolved in file_homes:
        raise ValueError(
            f"a writer pool limit of {limit} in {resolved}: that Dagster home is the DuckDB "
            "file's, where one process writes at a time. Fix: leave DAGSTER_HOME unset on a "
            f"lake (its home is {SHIPPED_DAGSTER_HOME / 'lake'}) or point it at a home of the "
            "lake's own"
        )
    command = ["dagster", "instance", "concurrency", "set", WRITER_POOL, str(limit)]
    subprocess.run(
        [sys.executable, "-m", *command],
        env={**os.environ, "DAGSTER_HOME": str(resolved)},
        check=True,
        capture_output=True,
    )
    return limit


def reports_dir() -> Path:
    """Where human-readable reports (reconciliation, cutover summaries) are written: beside
    the warehouse file, or on a lake beside its data folder (the shared volume every run
    worker sees, wherever it runs)."""
    data_path = os.environ.get(DATA_PATH_ENV, "").strip() if lake_configured() else ""
    if data_path:
        return Path(data_path).expanduser().resolve().parent / "reports"
    return Path(warehouse_path()).resolve().parent / "reports"
