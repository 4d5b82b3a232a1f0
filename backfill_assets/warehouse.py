"""The warehouse layout: schemas, raw source tables, bookkeeping tables, identifier quoting.

Every table the project owns is declared here once. Model tables are not: their columns come
from the version's SQL and are created on first write (see ``build.py``).
"""

import re
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # use with fullmatch

SCHEMAS = ("raw", "models", "backfill", "analytics")

# The current time as a naive UTC timestamp, whatever the connection's TimeZone setting.
UTC_NOW = "CAST(timezone('UTC', now()) AS TIMESTAMP)"

# Source tables (ARCHITECTURE.md §3). Timestamps are naive UTC; a day is CAST(ts AS DATE).
RAW_TABLES: dict[str, dict[str, str]] = {
    "raw.orders": {
        "order_id": "BIGINT",
        "customer_id": "BIGINT",
        "region": "VARCHAR",
        "order_ts": "TIMESTAMP",
        "amount": "DECIMAL(12,2)",
        "status": "VARCHAR",
        "ingested_at": "TIMESTAMP",
    },
    "raw.refunds": {
        "refund_id": "BIGINT",
        "order_id": "BIGINT",
        "refund_ts": "TIMESTAMP",
        "amount": "DECIMAL(12,2)",
        "ingested_at": "TIMESTAMP",
    },
    "raw.customers": {
        "customer_id": "BIGINT",
        "segment": "VARCHAR",
        "region": "VARCHAR",
        "valid_from": "TIMESTAMP",
        "valid_to": "TIMESTAMP",
    },
}

# Columns a source row may never leave empty: a NULL here is refused on load.
# Event-time column of each source with daily rows (customers is a history, not daily).
SOURCE_DAY_COLUMN = {"raw.orders": "order_ts", "raw.refunds": "refund_ts"}

RAW_REQUIRED = {
    "raw.orders": ("order_id", "order_ts", "amount", "status", "ingested_at"),
    "raw.refunds": ("refund_id", "order_id", "refund_ts", "amount", "ingested_at"),
    "raw.customers": ("customer_id", "segment", "valid_from"),
}

BOOKKEEPING_DDL = (
    # One row per (model, version, day): what the day was built from and how it checked out.
    # Written in the same transaction as the day's rows (ARCHITECTURE.md §4.2).
    """
    CREATE TABLE IF NOT EXISTS backfill.partition_evidence (
        model VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        day DATE NOT NULL,
        row_count BIGINT NOT NULL,
        source_rows BIGINT NOT NULL,
        source_max_ingested_at TIMESTAMP,
        source_fingerprint VARCHAR NOT NULL,
        code_version VARCHAR NOT NULL,
        checks_passed BOOLEAN NOT NULL,
        checks JSON NOT NULL,
        applied BOOLEAN NOT NULL,
        run_id VARCHAR NOT NULL,
        written_at TIMESTAMP NOT NULL,
        build_seconds DOUBLE
    )
    """,
    # Append-only log of every promotion and rollback. Nothing in the project deletes from it.
    """
    CREATE TABLE IF NOT EXISTS backfill.promotions (
        model VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        previous_version VARCHAR,
        actor VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        evidence JSON NOT NULL,
        happened_at TIMESTAMP NOT NULL
    )
    """,
)


# Columns added after a warehouse may have been created; each statement is idempotent.
MIGRATIONS = (
    "ALTER TABLE backfill.partition_evidence ADD COLUMN IF NOT EXISTS build_seconds DOUBLE",
)


def quote(identifier: str) -> str:
    """Quote a validated identifier; anything else is refused rather than escaped."""
    if not IDENTIFIER.fullmatch(identifier):
        raise ValueError(f"{identifier!r} is not a plain SQL name (letters, digits, underscore)")
    return f'"{identifier}"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"`` from two validated identifiers."""
    return f"{quote(schema)}.{quote(table)}"


def raw_table_ddl(table: str) -> str:
    """The CREATE statement of one raw source table."""
    schema, name = table.split(".")
    columns = ", ".join(f"{quote(col)} {typ}" for col, typ in RAW_TABLES[table].items())
    return f"CREATE TABLE IF NOT EXISTS {qualified(schema, name)} ({columns})"


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the schemas and bookkeeping tables that do not exist yet.

    Raw tables are not created here: a build must fail on a missing source, never read an
    empty stand-in. Only loading data (``seed.py``) creates them.
    """
    for schema in SCHEMAS:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    for ddl in BOOKKEEPING_DDL:
        conn.execute(ddl)
    for ddl in MIGRATIONS:
        conn.execute(ddl)


def ensure_raw_tables(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the raw source tables that do not exist yet (when loading source data)."""
    for table in RAW_TABLES:
        conn.execute(raw_table_ddl(table))


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse file for longer than a run may wait."""


def _lock_holder(error: duckdb.Error) -> str:
    """'PID 123 (duckdb cli ...)' from DuckDB's lock message, as far as this machine can tell."""
    found = re.search(r"PID (\d+)", str(error))
    if not found:
        return "another process"
    pid = found.group(1)
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        command = ""
    return f"PID {pid}" + (f" ({command[:120]})" if command else "")


# DuckDB's own default is 80% of the machine's memory. A run that reads two years of orders
# (the window checks, a promotion) would take ~1.8 GB for hash tables it can spill instead:
# capped at 1 GB, its process peaks near 1.3 GB and takes ~10% longer (docs/benchmarks.md).
MEMORY_LIMIT = "1GB"


class WarehouseNameError(ValueError):
    """A warehouse file whose name DuckDB would confuse with one of the project's schemas."""


def check_warehouse_name(path: str) -> None:
    """Refuse a file named like a schema of the project (``backfill.duckdb``, ``raw.duckdb``).

    DuckDB names a file's catalog after its stem; when that equals a schema, every
    ``backfill.partition_evidence``-style name is ambiguous and DuckDB refuses the statement
    ("Ambiguous reference to catalog or schema"). Checked before anything is opened or written.
    """
    stem = Path(path).stem
    if path != ":memory:" and stem in SCHEMAS:
        raise WarehouseNameError(
            f"The warehouse file {path} is named like the project's schema {stem!r}; DuckDB would "
            f"find names such as {stem}.<table> ambiguous. Fix: rename the file (for example to "
            f"{Path(path).with_name('warehouse' + Path(path).suffix)}) and point "
            "BACKFILL_WAREHOUSE at it."
        )


def connect_waiting(path: str, wait_seconds: float, config: dict | None = None):
    """Open the warehouse for writing, waiting up to ``wait_seconds`` for another writer.

    DuckDB lets one process write a file; a second one (an analyst's shell, a stray run) makes
    this wait and retry. Past the wait it raises ``WarehouseBusyError`` naming the holder and
    the fix; nothing has been written by then.
    """
    check_warehouse_name(path)
    deadline = time.monotonic() + wait_seconds
    pause = 0.5
    while True:
        try:
            conn = duckdb.connect(path, config={"memory_limit": MEMORY_LIMIT, **(config or {})})
            # No terminal progress bar: run logs and sensor ticks are not terminals.
            conn.execute("SET enable_progress_bar = false")
            return conn
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseBusyError(
                    f"The warehouse {path} is held by {_lock_holder(error)} and stayed locked for "
                    f"{wait_seconds:.0f}s. Nothing was written. Fix: close that DuckDB session "
                    "(DuckDB allows one writing process per file) or wait for it to finish, then "
                    "re-execute this run."
                ) from error
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 5.0)


@contextmanager
def session(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection from the resource, closed however the block ends.

    Waits ``lock_wait_seconds`` (a ``Warehouse`` field; 120 s for a plain ``DuckDBResource``)
    for another writer to let go of the file.
    """
    wait = getattr(resource, "lock_wait_seconds", 120)
    config = {"memory_limit": getattr(resource, "memory_limit", MEMORY_LIMIT)}
    conn = connect_waiting(resource.database, wait, {**config, **resource.connection_config})
    with closing(conn):
        yield conn


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` ... ``COMMIT``; on any error ``ROLLBACK`` and re-raise that error.

    When COMMIT itself fails (disk full), DuckDB has already ended the transaction, so the
    ROLLBACK is skipped rather than allowed to hide the real error.
    """
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            pass  # a failed COMMIT ended the transaction already; report the COMMIT's error
        raise


def open_read_only(path: str) -> duckdb.DuckDBPyConnection:
    """A read-only connection for sensors and reports; raises ``duckdb.Error`` at once (no
    retries) when another process holds the file for writing."""
    check_warehouse_name(path)
    return duckdb.connect(path, read_only=True, config={"memory_limit": MEMORY_LIMIT})


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (table or view)."""
    found = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(found and found[0])
