"""The warehouse: connections, the project's schemas, identifier quoting, transactions.

The project owns three schemas: ``models`` (one table per plan and version), ``backfill``
(evidence and the promotions log, each owned by one module: ``evidence.py``, ``publish.py``)
and ``analytics`` (the published views). Source tables belong to the team and live wherever
the plans say; nothing here knows them.

Two kinds of warehouse run the same statements: the embedded DuckDB file (the default; one
writing process at a time) and a DuckLake (``lake.py``; several writers, each commit checked
against the others'). ``connect_writer``, ``open_read_only`` and ``open_checked`` open either;
``committed`` and ``execute_ddl`` run a write so that, on a lake, a commit that conflicts with
another writer's is run again (on a file they run it once, as before).
"""

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from backfill_assets import lake as lakes
from backfill_assets.spec import IDENTIFIER

T = TypeVar("T")

SCHEMAS = ("models", "backfill", "analytics")
# File names refused up front: the project's schemas and ``raw``, where sources usually live.
# A source in any other schema named like the file is refused when its plan builds
# (``sources.source_problems``).
RESERVED_FILE_STEMS = (*SCHEMAS, "raw")

# The current time as a naive UTC timestamp, whatever the connection's TimeZone setting.
UTC_NOW = "CAST(timezone('UTC', now()) AS TIMESTAMP)"


def quote(identifier: str) -> str:
    """Quote a validated identifier; anything else is refused rather than escaped."""
    if not IDENTIFIER.fullmatch(identifier):
        raise ValueError(f"{identifier!r} is not a plain SQL name (letters, digits, underscore)")
    return f'"{identifier}"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"`` from two validated identifiers."""
    return f"{quote(schema)}.{quote(table)}"


def relation(table: str) -> str:
    """``"schema"."table"`` from a validated ``schema.table`` name."""
    schema, name = table.split(".")
    return qualified(schema, name)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the project's schemas that do not exist yet (tables belong to their owners)."""
    for schema in SCHEMAS:
        execute_ddl(conn, f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")


def retrying(conn: duckdb.DuckDBPyConnection, action: Callable[[], T], what: str) -> T:
    """``action()``; on a DuckLake, run again while its commit conflicts with another writer's
    (``lake.retry_conflicts``: bounded, logged backoff). On a DuckDB file, run once: the file
    has one writer, and its errors are reported as they are."""
    if not lakes.is_lake(conn):
        return action()
    return lakes.retry_conflicts(action, what)


def committed(conn: duckdb.DuckDBPyConnection, body: Callable[[], T], what: str) -> T:
    """``body()`` inside ``transaction(conn)``, the whole transaction run again on a lake when
    its COMMIT conflicts (nothing of a failed commit was written, so ``body`` starts over from
    the state the other writer left)."""

    def attempt() -> T:
        with transaction(conn):
            return body()

    return retrying(conn, attempt, what)


def execute_ddl(conn: duckdb.DuckDBPyConnection, statement: str) -> None:
    """Run one idempotent DDL statement (``CREATE ... IF NOT EXISTS``) in its own commit.

    On a lake, two writers creating the same schema or table at once conflict at COMMIT although
    each said IF NOT EXISTS; the loser runs it again and finds it there.
    """
    retrying(conn, lambda: conn.execute(statement), statement.split("(")[0].strip())


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


# DuckDB's own default is 80% of the machine's memory. A run that reads two years of source rows
# (the window checks, a promotion) would take ~1.8 GB for hash tables it can spill instead:
# capped at 1 GB, its process peaks near 1.3 GB and takes ~10% longer (docs/benchmarks.md).
MEMORY_LIMIT = "1GB"


class WarehouseNameError(ValueError):
    """A warehouse file whose name DuckDB would confuse with one of the project's schemas."""


def check_warehouse_name(path: str) -> None:
    """Refuse a file named like a schema of the project (``backfill.duckdb``, ``raw.duckdb``).

    DuckDB names a file's catalog after its stem; when that equals a schema, every
    ``backfill.<table>``-style name is ambiguous and DuckDB refuses the statement
    ("Ambiguous reference to catalog or schema"). Checked before anything is opened or written.
    """
    stem = Path(path).stem
    if path != ":memory:" and stem in RESERVED_FILE_STEMS:
        raise WarehouseNameError(
            f"The warehouse file {path} is named like the project's schema {stem!r}; DuckDB would "
            f"find names such as {stem}.<table> ambiguous. Fix: rename the file (for example to "
            f"{Path(path).with_name('warehouse' + Path(path).suffix)}) and point "
            "BACKFILL_WAREHOUSE at it."
        )


class WarehouseFileError(duckdb.Error):
    """The warehouse file is missing or is not a readable DuckDB database.

    A ``duckdb.Error``, so callers that already treat DuckDB's errors as "not readable now"
    (the sensors, the command line) report it with its message.
    """


class WarehouseMissingError(WarehouseFileError):
    """No file at the warehouse path; nothing was created."""


class WarehouseDamagedError(WarehouseFileError):
    """The file exists but DuckDB cannot read all of it; it was left as it was."""


# How DuckDB 2.0 says that a file is not (all) a DuckDB database: an unknown format or an empty
# file, a block past the end of a truncated file, a block whose checksum does not match.
_DAMAGE = ("not a valid duckdb database file", "could not read enough bytes", "corrupt database")

# ``:memory:`` and server databases (``md:name``) have no local file to find or read through.
_NOT_A_FILE = re.compile(r"^(:memory:|[A-Za-z][A-Za-z0-9+.-]+:)")

REBUILD = (
    "`backfill-assets seed` for the shipped example, or `backfill-assets load <schema.table> "
    "<file>` for each of your sources"
)


def is_local_file(path: str) -> bool:
    """Whether ``path`` names a file on this machine (not ``:memory:`` or ``md:...``)."""
    return not _NOT_A_FILE.match(path)


def require_file(path: str) -> None:
    """Refuse a missing warehouse file before DuckDB would create an empty one there."""
    if is_local_file(path) and not Path(path).exists():
        raise WarehouseMissingError(
            f"There is no warehouse file at {path}; nothing was created. Fix: if the path is "
            "mistyped, point BACKFILL_WAREHOUSE at the warehouse file; to start one, write its "
            f"source tables with {REBUILD}."
        )


def damaged_message(path: str, error: duckdb.Error) -> str:
    """What is wrong with the file, that it was left alone, and the two ways out."""
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"The warehouse file {path} is damaged: it is not a readable DuckDB database "
        f"(DuckDB: {said}). Nothing was written to it. Fix: restore it from a copy (a backup or "
        f"a snapshot), or move it aside (mv {path} {path}.damaged) and build a new one: "
        f"{REBUILD}, then backfill the plans again."
    )


@contextmanager
def damage_reported(path: str) -> Iterator[None]:
    """Turn DuckDB's errors about an unreadable file into ``WarehouseDamagedError``; any other
    error (a lock, a bad statement) passes unchanged."""
    try:
        yield
    except WarehouseFileError:
        raise
    except duckdb.Error as error:
        if not any(sign in str(error).lower() for sign in _DAMAGE):
            raise
        raise WarehouseDamagedError(damaged_message(path, error)) from error


def read_through(conn: duckdb.DuckDBPyConnection, path: str) -> None:
    """Read every block of every table of the file, or close ``conn`` and raise
    ``WarehouseDamagedError``.

    DuckDB opens a truncated file, or one with a damaged data block, and fails only when a
    query reads the missing or damaged block (its checksum); until then its answers come from
    the sound part and its writes land beside the damage. Hashing every row reads every column
    block (``count(*)`` would not); it costs well under a second for millions of rows.
    """
    try:
        with damage_reported(path):
            tables = conn.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND NOT temporary"
            ).fetchall()
            for schema, table in tables:
                conn.execute(
                    f"SELECT count(*), bit_xor(hash(t)) FROM {catalog_relation(schema, table)} AS t"
                ).fetchone()
    except BaseException:
        conn.close()
        raise


# Beside the file: its state when a writer of this project last closed it after a sound
# session ("warehouse.duckdb.read-through").
SOUND_SUFFIX = ".read-through"


def _file_state(path: str) -> list[int] | None:
    """What changes whenever anything writes the file: its identity (device, inode), size,
    modification and status-change times. The status-change time cannot be set back by hand
    (restoring the modification time changes it too)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def known_sound(path: str) -> bool:
    """Whether nothing has written the file since a writer of this project closed it after a
    sound session (``mark_sound``): then it need not be read through again. Asked while the
    caller holds the file (after connecting), so no write can come between the answer and the
    use. Never when DuckDB left a write-ahead log beside it (a writer that did not close).

    What it cannot see: bytes written by something other than DuckDB within the same tick of
    the file system's clock as the recorded close (a few milliseconds on Linux before 6.13),
    or a write from another machine that a network file system's cached attributes hide. A
    warehouse on a network file system should not be shared by writers on several machines
    anyway: DuckDB's lock does not hold there.
    """
    if not is_local_file(path) or Path(path + ".wal").exists():
        return False
    try:
        recorded = json.loads(Path(path + SOUND_SUFFIX).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _file_state(path)


def checkpointed_state(conn: duckdb.DuckDBPyConnection, path: str) -> list[int] | None:
    """The file's state with everything written (``CHECKPOINT``), read while ``conn`` still
    holds the file; None when it cannot checkpoint (another transaction of this process is
    open), and then nothing is recorded."""
    if not is_local_file(path):
        return None
    try:
        conn.execute("CHECKPOINT")
    except duckdb.Error:
        return None
    return _file_state(path)


def mark_sound(path: str, held: list[int] | None) -> None:
    """Record the file as sound after a writer closed it at the end of work that raised
    nothing: it was read through (or known sound) when opened, and since then only that
    writer, through DuckDB, wrote it. ``held``: its ``checkpointed_state`` before it let go;
    recorded only if closing changed nothing, so a write by anyone else after the writer let
    go is never taken for its own. The next writer skips the read-through while the file stays
    as recorded (``known_sound``)."""
    if held is None or _file_state(path) != held or Path(path + ".wal").exists():
        return
    witness = Path(path + SOUND_SUFFIX)
    partial = witness.with_name(f"{witness.name}.{os.getpid()}")
    try:
        partial.write_text(json.dumps(held))
        os.replace(partial, witness)
    except OSError:
        partial.unlink(missing_ok=True)  # no record: the next writer reads the file through


def catalog_relation(schema: str, table: str) -> str:
    """``"schema"."table"`` for names read from the catalog, which need not be plain SQL
    names; quotes inside are doubled."""
    return ".".join('"' + name.replace('"', '""') + '"' for name in (schema, table))


def retry_while_locked(opener, path: str, wait_seconds: float, then: str):
    """``opener()``, retried with a growing pause while another process holds the file's lock.

    DuckDB lets one process write a file; a second one (an analyst's shell, a run, a sensor)
    makes this wait. Past ``wait_seconds`` it raises ``WarehouseBusyError`` naming the holder
    and the fix, ending with ``then`` (what to do once the holder is gone). Any other error,
    a missing or damaged file included, is raised at once.
    """
    deadline = time.monotonic() + wait_seconds
    pause = 0.5
    while True:
        try:
            return opener()
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WarehouseBusyError(
                    f"The warehouse {path} is held by {_lock_holder(error)} and stayed locked for "
                    f"{wait_seconds:.0f}s. Nothing was written. Fix: close that DuckDB session "
                    f"(DuckDB allows one writing process per file) or wait for it to finish, then "
                    f"{then}."
                ) from error
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 5.0)


def connect_waiting(path: str, wait_seconds: float, config: dict | None = None):
    """Open the warehouse for writing, waiting up to ``wait_seconds`` for another writer
    (``retry_while_locked``); nothing has been written when it gives up. An existing file is
    read through first (``read_through``): a run never writes into a damaged warehouse.

    Unless it is ``known_sound``: nothing wrote it since a writer closed it after a sound
    session (``mark_sound``, which the caller records when its work raised nothing).
    Reading through scans every table, however little the run writes: 0.2-0.4 s a connection
    for the benchmark's 46 million rows, and a run opens one per model.
    """
    check_warehouse_name(path)
    existed = is_local_file(path) and Path(path).exists()

    def opener() -> duckdb.DuckDBPyConnection:
        with damage_reported(path):
            conn = duckdb.connect(path, config={"memory_limit": MEMORY_LIMIT, **(config or {})})
        # No terminal progress bar: run logs and sensor ticks are not terminals.
        conn.execute("SET enable_progress_bar = false")
        if existed and not known_sound(path):
            read_through(conn, path)
        return conn

    return retry_while_locked(opener, path, wait_seconds, "re-execute this run")


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


def connect_writer(
    path: str,
    lake: lakes.Lake | None,
    wait_seconds: float,
    config: dict | None = None,
) -> duckdb.DuckDBPyConnection:
    """A run's write connection: to ``lake`` when one is configured, else to the file at
    ``path`` (``connect_waiting``). A lake has no file lock to wait for: its writers meet at
    COMMIT (``committed``). ``config``'s ``enable_external_access`` holds for both."""
    if lake is None:
        return connect_waiting(path, wait_seconds, config)
    external = (config or {}).get("enable_external_access", True)
    return lakes.connect(lake, config, external_access=bool(external))


def open_read_only(path: str, lake: lakes.Lake | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only connection for sensors and reports; raises ``duckdb.Error`` at once (no
    retries) when another process holds the file for writing, when there is no file (none is
    created) or when DuckDB cannot open it. Not read through: a sensor ticks every minute and a
    reader cannot make the damage worse. Without external access: sensors run plan SQL on it.

    With ``lake``: the lake attached read-only (writers do not block it; it reads the latest
    committed snapshot), ``path`` unused."""
    if lake is not None:
        return lakes.connect(lake, {"memory_limit": MEMORY_LIMIT}, read_only=True)
    check_warehouse_name(path)
    require_file(path)
    config = {"memory_limit": MEMORY_LIMIT, "enable_external_access": False}
    with damage_reported(path):
        return duckdb.connect(path, read_only=True, config=config)


def open_checked(
    path: str, create: bool = False, lake: lakes.Lake | None = None
) -> duckdb.DuckDBPyConnection:
    """A command line connection, read through before it is used unless ``known_sound``.

    Commands that only read must not leave an empty file at a mistyped path (``create`` is for
    those that write sources), and none may answer from, or write beside, the sound part of a
    damaged file. Not read-only only because the project's tables are created on first use.
    Commands that read (``create`` false) run plan SQL, so they get no file or extension
    access; ``seed`` and ``load`` read files and keep it.

    With ``lake``: the lake (``path`` unused), with external access only when ``create``. A
    lake's catalog and files are checked by DuckLake itself; there is no file to read through.
    """
    if lake is not None:
        return lakes.connect(lake, {"memory_limit": MEMORY_LIMIT}, external_access=create)
    check_warehouse_name(path)
    existed = is_local_file(path) and Path(path).exists()
    if not create:
        require_file(path)
    with damage_reported(path):
        conn = duckdb.connect(path)
    if not create:
        # A setting rather than a connect option: it holds for this database from now on, and
        # a connection option would clash with another connection to the file in the process.
        conn.execute("SET enable_external_access = false")
    if existed and not known_sound(path):  # as a run's writer left it: no read-through
        read_through(conn, path)
    return conn


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (table or view). DuckDB's own catalog functions, tables
    first: ``information_schema.tables`` answers the same in twice the time, and a build asks
    three times."""
    for catalog, name_column in (
        ("duckdb_tables()", "table_name"),
        ("duckdb_views()", "view_name"),
    ):
        found = conn.execute(
            f"SELECT count(*) FROM {catalog} WHERE schema_name = ? AND {name_column} = ?",
            [schema, table],
        ).fetchone()
        if found and found[0]:
            return True
    return False
