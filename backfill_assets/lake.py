"""A DuckLake warehouse: the project's tables as Parquet files in a data folder, their catalog
in PostgreSQL (several writing processes at once) or SQLite (one machine).

The embedded DuckDB file allows one writing process. A DuckLake takes several: each process
opens an in-memory DuckDB, ATTACHes the lake and USEs it, so every schema-qualified name the
project writes (``raw.<source>``, ``models.<plan>__<version>``, ``backfill.*``, ``analytics.*``)
resolves inside the lake; temporary tables stay in the process. Each commit is one snapshot of
the catalog: readers see the state before or after it, never part of it, and a writer killed
before its commit leaves nothing (the Parquet files it had started are orphans no snapshot
names). Two writers whose changes conflict (the same table created twice, rows deleted from the
same data file) are told so at COMMIT; ``retry_conflicts`` runs the work again after a bounded,
logged backoff.

Offline, the extensions come from PyPI packages built for one DuckDB release
(``duckdb-extension-ducklake``, ``-postgres-scanner``, ``-sqlite-scanner``, all 1.5.5 and each
pinning ``duckdb==1.5.5``): they are LOADed from the file each package ships, never downloaded.
Install them in a virtual environment of their own (the ``lake`` extra:
``python3 -m venv .venv-lake && .venv-lake/bin/pip install -e '.[lake]'``;
``lake-constraints.txt`` pins the same set for the test venv), since the project's main
environment runs DuckDB 2.x.

Configuration (read when a command or the code location starts, never at import):

- ``BACKFILL_LAKE_CATALOG``: where the catalog lives. ``postgres:<libpq connection string>``
  (DuckLake's own form, e.g. ``postgres:dbname=lake host=db.internal user=backfill``), a
  ``postgresql://user:password@host:5432/lake`` URL (``+psycopg2`` is dropped), or
  ``sqlite:/path/catalog.sqlite`` for one machine. Unset: the DuckDB file (the default).
- ``BACKFILL_LAKE_DATA_PATH``: the folder holding the Parquet files (created if missing). Every
  writer must see the same folder (a shared volume).

``lake_in_use`` gives a command (``demo --lake``, ``ui --lake``, ``maintain``) the configured
lake or, when none is configured, an embedded one: a PostgreSQL catalog started with pgserver
for as long as the command runs, beside its Parquet folder. ``maintain`` compacts the lake and
expires old snapshots (``python -m backfill_assets.lake maintain``).

No dagster import: the resource (``component/resources.py``) and the command line use it alike.
"""

import argparse
import datetime as dt
import importlib.util
import logging
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

CATALOG_ENV = "BACKFILL_LAKE_CATALOG"
DATA_PATH_ENV = "BACKFILL_LAKE_DATA_PATH"
# The name the lake is attached under. Not a schema of the project (``raw``, ``models``,
# ``backfill``, ``analytics``): DuckDB would find ``<name>.<table>`` ambiguous.
ALIAS = "lake"
# The package that ships each extension's binary, under extensions/v<duckdb version>/.
PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
}
CATALOG_EXTENSION = {"postgres": "postgres_scanner", "sqlite": "sqlite_scanner"}
INSTALL = (
    "install the lake set in a virtual environment of its own (it pins DuckDB 1.5.5): "
    "python3 -m venv .venv-lake && .venv-lake/bin/pip install -e '.[lake]', then run "
    ".venv-lake/bin/backfill-assets"
)

# Conflicting commits: DuckLake itself retries a commit whose changes do not overlap another's
# (``ducklake_max_retry_count``, 10 by default); what it gives up on is run again from the start
# here, at most RETRY_ATTEMPTS times, pausing RETRY_FIRST_PAUSE seconds, doubled each time (with
# jitter so that two writers do not collide again), at most RETRY_MAX_PAUSE: ~20 s in all.
RETRY_ATTEMPTS = 8
RETRY_FIRST_PAUSE = 0.2
RETRY_MAX_PAUSE = 5.0
# How DuckLake 1.5.5 says that another writer's commit got in the way: "Transaction conflict -
# attempting to insert into table ... but another transaction has deleted from it" (PostgreSQL
# or SQLite catalog), and SQLite's own "database is locked" while another process commits.
_CONFLICT = re.compile(r"transaction conflict|database is locked", re.IGNORECASE)

log = logging.getLogger("backfill_assets.lake")

T = TypeVar("T")


class LakeError(duckdb.Error):
    """The lake cannot be opened here; the message names the fix.

    A ``duckdb.Error``, like ``warehouse.WarehouseFileError``: the sensors and the command
    line already report DuckDB's errors as "the warehouse is not readable now", with the
    message."""


@dataclass(frozen=True)
class Lake:
    """Where a DuckLake keeps its catalog and its data files."""

    catalog: str  # normalized: "postgres:<libpq connection string>" or "sqlite:<path>"
    data_path: str

    @property
    def kind(self) -> str:
        """``postgres`` or ``sqlite``."""
        return self.catalog.split(":", 1)[0]

    def describe(self) -> str:
        """The lake for messages and logs, without a password."""
        shown = re.sub(r"(password\s*=\s*)\S+", r"\1***", self.catalog, flags=re.IGNORECASE)
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", shown)
        return f"DuckLake {shown} (data {self.data_path})"


def parse_catalog(text: str) -> str:
    """The catalog in DuckLake's own form, or ``LakeError`` naming the accepted forms."""
    text = text.strip()
    found = re.match(r"^postgres(?:ql)?(?:\+\w+)?://", text)
    if found:
        return "postgres:postgresql://" + text[found.end() :]
    if text.startswith(("postgres:", "sqlite:")) and text.split(":", 1)[1].strip():
        return text
    raise LakeError(
        f"{CATALOG_ENV}={text[:40]!r} is not a DuckLake catalog this project runs on. Fix: "
        "postgres:dbname=lake host=... user=... (or a postgresql://user@host/lake URL) for "
        "several writers, or sqlite:/path/catalog.sqlite on one machine."
    )


def lake(catalog: str, data_path: str) -> Lake:
    """A ``Lake`` from configured text, checked."""
    if not data_path or not str(data_path).strip():
        raise LakeError(
            f"a DuckLake needs a data folder. Fix: set {DATA_PATH_ENV} to the folder every "
            "writer shares (created if missing)"
        )
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", str(data_path)):
        raise LakeError(
            f"{DATA_PATH_ENV}={data_path!r}: object storage needs DuckDB's httpfs extension, "
            "which this project does not load yet. Fix: a folder on a shared volume"
        )
    return Lake(parse_catalog(catalog), str(Path(data_path).expanduser().resolve()))


def from_env(environ: dict[str, str] | None = None) -> Lake | None:
    """The lake ``BACKFILL_LAKE_CATALOG`` / ``BACKFILL_LAKE_DATA_PATH`` name, or None (the
    DuckDB file). Read at call time."""
    env = os.environ if environ is None else environ
    catalog = env.get(CATALOG_ENV, "").strip()
    if not catalog:
        return None
    return lake(catalog, env.get(DATA_PATH_ENV, ""))


def extension_file(name: str) -> Path | None:
    """The binary of extension ``name`` that its PyPI package ships for this DuckDB, if any."""
    spec = importlib.util.find_spec(PACKAGES[name])
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = folder / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    return found if found.is_file() else None


def unavailable(kind: str = "postgres") -> str | None:
    """Why a lake with a ``kind`` catalog cannot be opened in this environment; None if it can."""
    for name in ("ducklake", CATALOG_EXTENSION[kind]):
        if extension_file(name) is None:
            package = PACKAGES[name].replace("_", "-")
            installed = importlib.util.find_spec(PACKAGES[name]) is not None
            return (
                f"DuckDB {duckdb.__version__} has no offline {name} extension: "
                + (
                    f"{package} is installed for another DuckDB version"
                    if installed
                    else f"{package} is not installed"
                )
                + f". Fix: {INSTALL}"
            )
    return None


def _load_extensions(conn: duckdb.DuckDBPyConnection, kind: str) -> None:
    for name in ("ducklake", CATALOG_EXTENSION[kind]):
        path = extension_file(name)
        if path is None:
            raise LakeError(unavailable(kind) or f"{name} is missing. Fix: {INSTALL}")
        conn.execute(f"LOAD {_text(str(path))}")


def _text(value: str) -> str:
    """A string literal (ATTACH takes no bound parameters)."""
    return "'" + value.replace("'", "''") + "'"


def connect(
    where: Lake,
    config: dict | None = None,
    read_only: bool = False,
    external_access: bool = False,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached and in use.

    ``config``: DuckDB settings for the connection (``memory_limit``; an
    ``enable_external_access`` there is replaced by ``external_access``). Without external
    access (the default, and what every run gets, ARCHITECTURE.md §4.9) it is switched off
    after the lake is attached: no ``read_csv``, ``ATTACH``, ``COPY``, ``INSTALL`` or ``LOAD``
    from then on, and it cannot be switched back on. DuckLake still reaches its catalog and the
    data folder (``allowed_directories``), as a file warehouse still writes its own file.
    """
    settings = {k: v for k, v in (config or {}).items() if k != "enable_external_access"}
    # Nothing is downloaded: a missing extension fails at once instead of after a timeout.
    settings["autoinstall_known_extensions"] = False
    # Past memory_limit DuckDB spills here (an in-memory database would use ./.tmp of whatever
    # folder the process runs in); DuckDB creates it on the first spill and removes it on close.
    settings.setdefault(
        "temp_directory",
        str(
            Path(tempfile.gettempdir())
            / f"backfill-lake-spill-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ),
    )
    conn = duckdb.connect(":memory:", config=settings)
    try:
        _load_extensions(conn, where.kind)
        data = Path(where.data_path)
        if not read_only:
            data.mkdir(parents=True, exist_ok=True)
        if where.kind == "sqlite" and not read_only:
            Path(where.catalog.split(":", 1)[1]).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        options = [f"DATA_PATH {_text(str(data) + '/')}"]
        if read_only:
            options.append("READ_ONLY")
        try:
            conn.execute(
                f"ATTACH {_text('ducklake:' + where.catalog)} AS {ALIAS} ({', '.join(options)})"
            )
        except duckdb.Error as error:
            said = str(error).strip().splitlines()[0]
            raise LakeError(
                f"cannot open {where.describe()}: {said}. Fix: check that the catalog is "
                f"reachable and {CATALOG_ENV} / {DATA_PATH_ENV} are right"
            ) from error
        conn.execute(f"USE {ALIAS}")
        # The empty in-memory database would make a schema named ``memory`` ambiguous.
        conn.execute("DETACH memory")
        conn.execute("SET enable_progress_bar = false")
        if not external_access:
            conn.execute(f"SET allowed_directories = [{_text(str(data) + '/')}]")
            conn.execute("SET enable_external_access = false")
    except BaseException:
        conn.close()
        raise
    return conn


# What plan SQL must not call on a lake connection, although it is a plain SELECT: with the
# extensions loaded, ``postgres_execute``/``sqlite_query`` run any statement on the catalog's
# database (or, ``postgres_scan``/``sqlite_scan``, read another one, even with external access
# off), ``ducklake_expire_snapshots`` and friends rewrite the lake's history, and ``query()``
# runs SQL hidden in a string. Prefixes cover every function the three extensions add (1.5.5).
REFUSED_FUNCTION = re.compile(
    r"^(ducklake_|postgres_|pg_clear_cache$|read_postgres_binary$|sqlite_|query$|query_table$)",
    re.IGNORECASE,
)
METADATA_CATALOG = "__ducklake_metadata_"  # the catalog database DuckLake attaches beside ALIAS


def reach_problems(tree: object) -> list[str]:
    """What a parsed query (``json_serialize_sql``'s tree) reaches beyond the tables it reads:
    refused functions and the lake's catalog database, each named once, sorted.

    Plain parsing, no extension needed: ``plan.sql_problem`` can refuse such plan SQL when a
    plan loads, whichever warehouse it will run on.
    """
    found: set[str] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            name = node.get("function_name")
            if isinstance(name, str) and REFUSED_FUNCTION.match(name):
                found.add(f"{name}()")
            catalog = node.get("catalog_name")
            if isinstance(catalog, str) and catalog.lower().startswith(METADATA_CATALOG):
                found.add(catalog)
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return sorted(found)


def is_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``conn`` works in a DuckLake (its current database is one)."""
    found = conn.execute(
        "SELECT type FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(found) and found[0] == "ducklake"


def is_conflict(error: BaseException) -> bool:
    """Whether ``error`` says another writer's commit got in the way (worth running again)."""
    return isinstance(error, duckdb.Error) and bool(_CONFLICT.search(str(error)))


def _reason(error: BaseException) -> str:
    """The line of DuckLake's message that names the conflict (its first line is generic)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if _CONFLICT.search(line)), lines[0] if lines else "")


def retry_conflicts(
    action: Callable[[], T],
    what: str,
    attempts: int = RETRY_ATTEMPTS,
    first_pause: float = RETRY_FIRST_PAUSE,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``action()``, run again after a growing pause while it fails on a conflicting commit.

    ``action`` must be safe to repeat: a whole transaction (its COMMIT failed, so nothing of it
    was written) or an idempotent statement (``CREATE ... IF NOT EXISTS``). Each retry is
    logged (``backfill_assets.lake``, WARNING) with the attempt, the pause and DuckLake's
    message; past ``attempts`` the last error is raised. Any other error is raised at once.
    """
    pause = first_pause
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except duckdb.Error as error:
            if not is_conflict(error) or attempt == attempts:
                raise
            wait = min(pause, RETRY_MAX_PAUSE) * (1 + random.random())
            log.warning(
                "%s: commit conflicted with another writer (attempt %d of %d); retrying in "
                "%.2fs at %s: %s",
                what,
                attempt,
                attempts,
                wait,
                dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f"),
                _reason(error),
            )
            sleep(wait)
            pause *= 2
    raise AssertionError("unreachable")  # the loop returns or raises


# ---------------------------------------------------------------------------------------------
# A lake for a command: the configured one, or an embedded one

CATALOG_FOLDER = "catalog"  # the embedded PostgreSQL's data folder, under the lake's root
DATA_FOLDER = "data"  # the embedded lake's Parquet files, beside it
EMBEDDED_DATABASE = "lake"  # the catalog's database on the embedded server


def with_database(url: str, name: str) -> str:
    """``url`` (``postgresql+psycopg2://user:@/db?host=...``) naming database ``name``."""
    head, mark, query = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}{mark}{query}"


def create_database(url: str, name: str) -> None:
    """Create database ``name`` on the server ``url`` reaches, unless it exists."""
    import psycopg2

    plain = "postgresql://" + url.split("://", 1)[1]
    with closing(psycopg2.connect(plain)) as admin:
        admin.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cursor.fetchone() is None:
                quoted = '"' + name.replace('"', '""') + '"'
                cursor.execute(f"CREATE DATABASE {quoted}")


@contextmanager
def lake_in_use(root: Path) -> Iterator[Lake]:
    """The lake a command works on, set in this process's environment while the block runs,
    so that everything it starts (``dagster dev``, its daemon, code server and run workers)
    inherits ``BACKFILL_LAKE_CATALOG`` and ``BACKFILL_LAKE_DATA_PATH``.

    With ``BACKFILL_LAKE_CATALOG`` set: that lake, as configured (a team's own server and
    shared folder). Unset: an embedded lake under ``root``, what a data team expects from a
    quick start (nothing to install or run first, and the catalog is PostgreSQL as in
    production, so several writers commit at once): a PostgreSQL 16 (``pgserver``, the same
    helper as the Dagster instance's embedded storage) on ``root/catalog``, database ``lake``,
    started now and stopped when the block ends, and the Parquet files in ``root/data``. Run
    again, it finds the same catalog and files. Refuses at once, naming the install command,
    where the lake set is not installed.
    """
    configured = from_env()
    if configured is not None:
        if problem := unavailable(configured.kind):
            raise LakeError(problem)
        yield configured
        return
    if problem := unavailable("postgres"):
        raise LakeError(problem)
    from backfill_assets.instance import InstanceStorageError, embedded_postgres

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = False
    try:
        with embedded_postgres(root / CATALOG_FOLDER) as server:
            started = True
            url = with_database(server, EMBEDDED_DATABASE)
            create_database(server, EMBEDDED_DATABASE)
            where = lake(url, str(root / DATA_FOLDER))
            previous = {name: os.environ.get(name) for name in (CATALOG_ENV, DATA_PATH_ENV)}
            os.environ[CATALOG_ENV] = where.catalog
            os.environ[DATA_PATH_ENV] = where.data_path
            try:
                yield where
            finally:
                for name, value in previous.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    except InstanceStorageError as error:
        if started:  # the command's own (its Dagster instance's storage): not the catalog's
            raise
        raise LakeError(f"cannot start the embedded lake catalog: {error}") from error


# ---------------------------------------------------------------------------------------------
# Maintenance: compaction, snapshot expiry, old files

KEEP_SNAPSHOTS = dt.timedelta(days=7)
# How long a file no snapshot needs (or no commit ever named) stays before it is deleted: longer
# than any run or query may take, so that no reader or writer still at work loses a file.
GRACE = dt.timedelta(days=1)


@dataclass(frozen=True)
class Maintenance:
    """What ``maintain`` did: rows moved out of the catalog, data files merged or rewritten
    (processed → created), snapshots expired, files deleted."""

    rows_flushed: int
    files_merged: tuple[int, int]
    files_rewritten: tuple[int, int]
    snapshots_expired: int
    files_deleted: int
    orphans_deleted: int

    def text(self) -> str:
        return (
            f"{self.rows_flushed:,} inlined rows written to Parquet; "
            f"{self.files_merged[0]:,} small files merged into {self.files_merged[1]:,}; "
            f"{self.files_rewritten[0]:,} files with deleted rows rewritten into "
            f"{self.files_rewritten[1]:,}; {self.snapshots_expired:,} snapshots expired; "
            f"{self.files_deleted:,} files no snapshot needs and {self.orphans_deleted:,} files "
            "no commit named deleted"
        )


def maintain(
    conn: duckdb.DuckDBPyConnection,
    keep: dt.timedelta = KEEP_SNAPSHOTS,
    grace: dt.timedelta = GRACE,
) -> Maintenance:
    """Compact the lake ``conn`` works in and drop history older than ``keep``.

    Every backfill run commits small Parquet files and, when it rebuilds, delete files; every
    commit is a snapshot, and DuckLake keeps every file some snapshot names. So, in DuckLake
    1.5.5's own functions, each step its own commit (retried on a conflicting writer, like the
    runs' commits, so it may run beside a backfill):

    1. ``ducklake_flush_inlined_data``: rows DuckLake kept in the catalog (small inserts) to
       Parquet;
    2. ``ducklake_merge_adjacent_files``: small files of a table into larger ones;
    3. ``ducklake_rewrite_data_files``: files with many deleted rows, rewritten without them;
    4. ``ducklake_expire_snapshots(older_than => now - keep)``: time travel before that ends;
    5. ``ducklake_cleanup_old_files(older_than => now - grace)``: files that only expired
       snapshots named, once they have waited ``grace`` (files freed by this run's step 4 go
       on the next run after ``grace``), so a query still reading them is not cut off;
    6. ``ducklake_delete_orphaned_files(older_than => now - grace)``: files no commit ever
       named (a writer killed before its commit), once older than ``grace``: a writer still
       at work has not committed its files yet, so ``grace`` must exceed the longest run.

    What it changes is the lake's history and files, never what a query sees now: the
    published views and the evidence read the same before and after.
    """
    if not is_lake(conn):
        raise LakeError("maintain needs a DuckLake connection; a DuckDB file needs no compaction")

    def call(sql: str, params: list | None = None) -> list[tuple]:
        def run() -> list[tuple]:
            return conn.execute(sql, params or []).fetchall()

        return retry_conflicts(run, f"lake maintenance: {sql.split('(')[0]}")

    def before(age: dt.timedelta) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - age

    catalog = _text(ALIAS)
    flushed = call(f"CALL ducklake_flush_inlined_data({catalog})")
    merged = call(f"CALL ducklake_merge_adjacent_files({catalog})")
    rewritten = call(f"CALL ducklake_rewrite_data_files({catalog})")
    expired = call(f"CALL ducklake_expire_snapshots({catalog}, older_than => ?)", [before(keep)])
    deleted = call(f"CALL ducklake_cleanup_old_files({catalog}, older_than => ?)", [before(grace)])
    orphans = call(
        f"CALL ducklake_delete_orphaned_files({catalog}, older_than => ?)", [before(grace)]
    )
    return Maintenance(
        rows_flushed=int(sum(row[2] for row in flushed)),
        files_merged=(sum(row[2] for row in merged), sum(row[3] for row in merged)),
        files_rewritten=(sum(row[2] for row in rewritten), sum(row[3] for row in rewritten)),
        snapshots_expired=len(expired),
        files_deleted=len(deleted),
        orphans_deleted=len(orphans),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m backfill_assets.lake maintain [--keep-days 7]``: maintain the configured
    lake, or the embedded one beside the warehouse file (started for the occasion)."""
    from backfill_assets import settings

    parser = argparse.ArgumentParser(
        prog="python -m backfill_assets.lake",
        description="Maintain the DuckLake warehouse (BACKFILL_LAKE_CATALOG, else the "
        "embedded one the --lake commands use).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    maintenance = sub.add_parser(
        "maintain", help="flush inlined rows, merge small files, expire old snapshots"
    )
    maintenance.add_argument(
        "--keep-days",
        type=float,
        default=KEEP_SNAPSHOTS.days,
        help="snapshots (and the files only they name) younger than this are kept "
        f"(default {KEEP_SNAPSHOTS.days})",
    )
    maintenance.add_argument(
        "--grace-hours",
        type=float,
        default=GRACE.total_seconds() / 3600,
        help="files no snapshot or commit needs are deleted once this old: longer than any "
        f"run may take (default {GRACE.total_seconds() / 3600:.0f})",
    )
    args = parser.parse_args(argv)
    root = settings.lake_root()
    if from_env() is None and not (root / CATALOG_FOLDER).is_dir():
        print(
            f"python -m backfill_assets.lake {args.command}: no lake to maintain: "
            f"{CATALOG_ENV} is unset and there is no embedded lake in {root}. Fix: set "
            f"{CATALOG_ENV} and {DATA_PATH_ENV}, or build one with backfill-assets demo --lake",
            file=sys.stderr,
        )
        return 1
    try:
        with lake_in_use(root) as where, closing(connect(where)) as conn:
            print(f"maintaining {where.describe()}")
            done = maintain(
                conn, dt.timedelta(days=args.keep_days), dt.timedelta(hours=args.grace_hours)
            )
    except duckdb.Error as error:
        print(f"python -m backfill_assets.lake {args.command}: {error}", file=sys.stderr)
        return 1
    print(done.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
