"""A DuckLake warehouse with an embedded PostgreSQL catalog, written by several real processes.

The tests that open a lake run real processes against a real DuckLake: its catalog in a
PostgreSQL 16 started by ``pgserver`` (one server for the module, one database per test), its
Parquet files in a folder under ``tmp_path``. Nothing is mocked: writers are separate
operating-system processes, each with its own DuckDB connection, forked from a
``multiprocessing`` forkserver that imported the project once (a fresh interpreter needs
~1.5 s for it). Expectations are computed with plain
SQL: against the same backfill on a DuckDB file, or the version's SQL run directly.

Those that open a lake need DuckDB 1.5.5 with the ``duckdb-extension-*`` packages, in a virtual
environment of their own (``pip install -e '.[dev]' -r lake-constraints.txt``, see ``lake.py``);
elsewhere (DuckDB 2.x) they skip and say why. Select them with ``-m lake``.
"""

import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import duckdb
import pytest

from backfill_assets import lake as lakes
from backfill_assets import settings
from backfill_assets.build import build_window
from backfill_assets.example.generator import generate
from backfill_assets.instance import postgres_running
from backfill_assets.plan import Plan, sql_files
from backfill_assets.publish import ensure_view, history, published_version
from backfill_assets.warehouse import committed
from backfill_assets_tests.helpers import shipped_plans

UNAVAILABLE = lakes.unavailable("postgres")
try:
    import pgserver  # noqa: F401

    NO_PGSERVER = None
except ImportError:
    NO_PGSERVER = "pgserver is not installed (pip install -e '.[postgres]')"

# Every test that opens a lake asks for the ``postgres`` fixture, which skips with the reason
# when the extensions or pgserver are missing; the plain ones (configuration, plan SQL) run
# everywhere.
pytestmark = pytest.mark.lake

PLAN = "daily_revenue"
SEED_FIRST, SEED_LAST = dt.date(2024, 2, 1), dt.date(2024, 3, 10)
# 21 days, the pilot market's hand-checked days (2024-02-28..03-05) included.
WINDOW_FIRST, WINDOW_LAST = dt.date(2024, 2, 15), dt.date(2024, 3, 6)
ORDERS_PER_DAY = 30
WRITERS = 4
# Evidence columns that must match between two builds of the same rows (not the run, the time
# it was written or how long it took).
EVIDENCE_COLUMNS = (
    "model, version, partition_start, partition_end, row_count, source_rows, "
    "source_max_loaded_at, source_fingerprint, code_version, checks_passed, "
    "CAST(checks AS VARCHAR) AS checks, applied"
)


def _plan() -> Plan:
    plan = next(p for p in shipped_plans() if p.name == PLAN)
    return plan.with_window(WINDOW_FIRST, WINDOW_LAST)


def _chunks(plan: Plan, count: int) -> list[tuple[dt.date, dt.date]]:
    """``count`` consecutive half-open windows covering the plan's window."""
    days = plan.cadence.starts(plan.window_start, plan.window_end)
    size = -(-len(days) // count)
    parts = [days[i : i + size] for i in range(0, len(days), size)]
    return [(part[0], plan.cadence.next(part[-1])) for part in parts]


# ---------------------------------------------------------------------------------------------
# The embedded PostgreSQL and one lake per test


def _postmasters(pgdata: Path) -> list[int]:
    """PIDs of processes serving ``pgdata`` (postmaster and its children), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "postgres" in command and str(pgdata) in command:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL 16 server on a Unix socket for this module; its URL (database ``postgres``).

    Its data folder is a fresh folder of the system's temporary directory, not under pytest's
    ``tmp_path``: as root, pgserver runs the server as the user ``pgserver`` and opens the
    folders above the data folder to it, and any pytest run on the machine sets
    ``/tmp/pytest-of-root`` back to 0700, which would lock the server out. pgserver stops the
    server when the last process holding it lets go (``cleanup_mode`` ``stop``); writers only
    connect to it as clients. The teardown checks that no postgres process of this data folder
    is left, then deletes the folder.
    """
    if UNAVAILABLE:
        pytest.skip(f"no DuckLake here: {UNAVAILABLE}")
    if NO_PGSERVER:
        pytest.skip(f"no embedded PostgreSQL: {NO_PGSERVER}")
    import pgserver

    pgdata = Path(tempfile.mkdtemp(prefix="backfill-lake-pg-")) / "pgdata"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield server.get_uri()  # postgresql://postgres:@/postgres?host=<socket folder>
    finally:
        server.cleanup()
        deadline = time.monotonic() + 30
        while _postmasters(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _postmasters(pgdata)
        if not left:
            shutil.rmtree(pgdata.parent, ignore_errors=True)
        assert not left, f"postgres of {pgdata} still running after cleanup: {left}"


def _database_uri(uri: str, name: str) -> str:
    """The server URL with another database name."""
    head, _, query = uri.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}?{query}"


@pytest.fixture
def lake(postgres: str, tmp_path: Path, request: pytest.FixtureRequest) -> lakes.Lake:
    """A new, empty DuckLake: a database of its own on the module's server, a data folder."""
    import psycopg2

    name = "lake_" + request.node.name.replace("[", "_").replace("]", "").lower()[:40]
    with closing(psycopg2.connect(postgres)) as admin:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cursor.execute(f'CREATE DATABASE "{name}"')
    return lakes.lake(_database_uri(postgres, name), str(tmp_path / "lake_data"))


def _seed(conn: duckdb.DuckDBPyConnection) -> None:
    generate(conn, SEED_FIRST, SEED_LAST, orders_per_day=ORDERS_PER_DAY, seed=11)


@pytest.fixture
def seeded(lake: lakes.Lake) -> lakes.Lake:
    """The lake with the example's raw tables (a writer that may read files, as ``seed``)."""
    with closing(lakes.connect(lake, external_access=True)) as conn:
        _seed(conn)
    return lake


# ---------------------------------------------------------------------------------------------
# Writer processes (forked from a forkserver that imported the project once)


def _context() -> mp.context.BaseContext:
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(
        [
            "backfill_assets.build",
            "backfill_assets.publish",
            "backfill_assets.component.resources",
            "backfill_assets_tests.helpers",
        ]
    )
    return context


def _log_to(path: str) -> None:
    """Send the worker's ``backfill_assets`` log records (the retries) to a file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(process)d %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("backfill_assets")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _backfill_worker(catalog, data_path, first, last, log_path, ready, go, results) -> None:
    """Build every version of the plan over ``[first, last)`` through the ``Warehouse``
    resource's write session on the lake, as a run worker would."""
    from backfill_assets.component.resources import Warehouse, session

    _log_to(log_path)
    plan = _plan()
    resource = Warehouse(
        database=str(Path(data_path).parent / "unused.duckdb"),
        lake_catalog=catalog,
        lake_data_path=data_path,
    )
    try:
        with session(resource) as conn:
            ready.wait()  # every writer connected: the builds overlap
            go.wait()
            started = time.perf_counter()
            for version in plan.version_names:
                build_window(conn, plan, version, first, last, f"lake-{first}")
            results.put((str(first), "ok", time.perf_counter() - started))
    except Exception as error:  # reported to the test, which fails naming it
        results.put((str(first), f"{type(error).__name__}: {error}", 0.0))


def _rebuild_worker(catalog, data_path, run_id, ready, go) -> None:
    """Rebuild the candidate over the whole window in one transaction (to be killed)."""
    where = lakes.Lake(catalog, data_path)
    plan = _plan()
    with closing(lakes.connect(where)) as conn:
        ready.set()
        go.wait()
        build_window(conn, plan, plan.spec.candidate, plan.window_start, plan.window_end, run_id)


def _promote_worker(catalog, data_path, run_id, ready, go, results) -> None:
    """Prepare a promotion (the gate holds), wait for the other promoter, then commit."""
    from backfill_assets.publish import commit_promotion, prepare_promotion

    where = lakes.Lake(catalog, data_path)
    plan = _plan()
    with closing(lakes.connect(where)) as conn:
        try:
            _, entry = prepare_promotion(
                conn, plan, plan.spec.candidate, plan.spec.approvers[0], "race", run_id
            )
        except Exception as error:
            ready.wait()
            results.put((run_id, f"prepare: {type(error).__name__}: {error}"))
            return
        ready.wait()
        go.wait()
        try:
            commit_promotion(conn, plan, entry)
            results.put((run_id, "ok"))
        except Exception as error:
            results.put((run_id, f"{type(error).__name__}: {error}"))


def _drain(results, count: int) -> list[tuple]:
    return [results.get(timeout=120) for _ in range(count)]


# ---------------------------------------------------------------------------------------------
# Plain-SQL comparisons


def _compare_sql(left: str, right: str) -> str:
    """Rows in one relation and not the other (multiset), both ways."""
    return (
        f"SELECT (SELECT count(*) FROM (FROM {left} EXCEPT ALL FROM {right})), "
        f"(SELECT count(*) FROM (FROM {right} EXCEPT ALL FROM {left})), "
        f"(SELECT count(*) FROM {left})"
    )


def _rows_by_partition(conn: duckdb.DuckDBPyConnection, table: str, column: str) -> dict:
    """Each partition's rows, as a sorted tuple of rows."""
    found: dict = {}
    for row in conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall():
        names = [d[0] for d in conn.description]
        found.setdefault(row[names.index(column)], []).append(row)
    return {day: tuple(rows) for day, rows in found.items()}


def _expected_rows(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> dict:
    """What a build of ``version`` over the window must hold: its SQL, run as it is."""
    sql = plan.version_sql(version)
    params = {"start": plan.window_start, "end": plan.window_end}
    rows = conn.execute(
        f"SELECT * FROM ({sql}) ORDER BY ALL", {k: v for k, v in params.items() if f"${k}" in sql}
    ).fetchall()
    names = [d[0] for d in conn.description]
    found: dict = {}
    for row in rows:
        found.setdefault(row[names.index(plan.spec.partition_column)], []).append(row)
    return {day: tuple(r) for day, r in found.items()}


# ---------------------------------------------------------------------------------------------
# Tests


def test_the_project_runs_on_a_lake_with_a_postgres_catalog(seeded: lakes.Lake) -> None:
    """One writer: build, window checks, promote, rollback, promote again; no statement of the
    project fails on a DuckLake, and a run's connection has no file access."""
    from backfill_assets.publish import promote, rollback
    from backfill_assets.window_checks import run_window_checks

    plan = _plan()
    with closing(lakes.connect(seeded)) as conn:
        assert lakes.is_lake(conn)
        for version in plan.version_names:
            result = build_window(
                conn, plan, version, plan.window_start, plan.window_end, "one-writer"
            )
            assert result.rows > 0 and not result.failing
        ensure_view(conn, plan)
        failing = [c.name for c in run_window_checks(conn, plan) if c.blocking and not c.passed]
        assert failing == []
        promote(conn, plan, "v2", plan.spec.approvers[0], "on a lake", "promote-1")
        rollback(conn, plan, "ops@example.com", "drill", "rollback-1")
        promote(conn, plan, "v2", plan.spec.approvers[0], "again", "promote-2")
        assert [(e.action, e.version) for e in history(conn, plan)] == [
            ("promote", "v2"),
            ("rollback", "legacy"),
            ("promote", "v2"),
        ]
        assert conn.execute(_compare_sql(plan.view, plan.model_table("v2"))).fetchone()[:2] == (
            0,
            0,
        )
        with pytest.raises(duckdb.PermissionException):
            conn.execute("SELECT * FROM read_csv('/etc/hostname')")
        with pytest.raises(duckdb.Error):
            conn.execute("SET enable_external_access = true")
        # A late order for a built day (a writer that loads sources).
        conn.execute(
            "INSERT INTO raw.orders SELECT -order_id, customer_id, region, "
            "order_ts, amount, status, ingested_at + INTERVAL 3 DAY FROM raw.orders "
            "WHERE CAST(order_ts AS DATE) = DATE '2024-02-20' LIMIT 1"
        )

    # What a sensor reads: the lake read-only, never blocked by a writer, unable to write.
    from backfill_assets.component.resources import Warehouse, read_session
    from backfill_assets.late import find_repairs

    resource = Warehouse(database="unused.duckdb", lake_catalog=seeded.catalog)
    with pytest.raises(lakes.LakeError, match="data folder"):
        read_session(resource)
    resource = Warehouse(
        database="unused.duckdb", lake_catalog=seeded.catalog, lake_data_path=seeded.data_path
    )
    with closing(lakes.connect(seeded)) as writer, read_session(resource) as reader:
        writer.execute("BEGIN")
        writer.execute("DELETE FROM raw.customers")  # an open write transaction elsewhere
        scan = find_repairs(reader, [plan])
        assert [(r.partition, r.versions) for r in scan.repairs] == [
            (dt.date(2024, 2, 20), ("legacy", "v2"))
        ]
        writer.execute("ROLLBACK")
        with pytest.raises(duckdb.Error, match="read-only|read only"):
            reader.execute("DELETE FROM raw.orders")


def test_four_writers_build_what_one_writer_builds_on_a_duckdb_file(
    seeded: lakes.Lake, tmp_path: Path
) -> None:
    """Four processes, each its own chunk and connection, write the lake at once; rows and
    evidence equal the same backfill built by one writer on a DuckDB file."""
    plan = _plan()
    chunks = _chunks(plan, WRITERS)
    assert len(chunks) == WRITERS

    # The reference: the same sources and the same chunks, one writer, a DuckDB file.
    reference = tmp_path / "reference.duckdb"
    with closing(duckdb.connect(str(reference))) as conn:
        _seed(conn)
        for first, last in chunks:
            for version in plan.version_names:
                build_window(conn, plan, version, first, last, f"file-{first}")

    context = _context()
    ready, go, results = context.Barrier(WRITERS + 1), context.Barrier(WRITERS + 1), context.Queue()
    logs = [tmp_path / f"writer-{i}.log" for i in range(WRITERS)]
    workers = [
        context.Process(
            target=_backfill_worker,
            args=(seeded.catalog, seeded.data_path, first, last, str(log), ready, go, results),
        )
        for (first, last), log in zip(chunks, logs, strict=True)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)
    started = time.perf_counter()
    go.wait(timeout=60)
    outcomes = _drain(results, WRITERS)
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join(timeout=60)
    assert [o[1] for o in outcomes] == ["ok"] * WRITERS, outcomes
    assert [w.exitcode for w in workers] == [0] * WRITERS
    retries = [line for log in logs for line in log.read_text().splitlines() if "conflict" in line]
    print(f"\n4 writers: {seconds:.2f}s, {len(retries)} retried commit(s)", *retries, sep="\n  ")

    with closing(lakes.connect(seeded, external_access=True)) as conn:
        conn.execute(f"ATTACH '{reference}' AS reference (READ_ONLY)")
        for version in plan.version_names:
            table = plan.model_table(version)
            only_lake, only_file, rows = conn.execute(
                _compare_sql(f"{lakes.ALIAS}.{table}", f"reference.{table}")
            ).fetchone()
            assert (only_lake, only_file) == (0, 0), version
            assert rows > 0
        evidence = (
            f"(SELECT {EVIDENCE_COLUMNS} FROM {{}}.backfill.partition_evidence "
            f"WHERE model = '{plan.name}')"
        )
        only_lake, only_file, rows = conn.execute(
            _compare_sql(evidence.format(lakes.ALIAS), evidence.format("reference"))
        ).fetchone()
        assert (only_lake, only_file) == (0, 0)
        days = len(plan.cadence.starts(plan.window_start, plan.window_end))
        assert rows == days * len(plan.version_names)


def _conflicting_writer(where: lakes.Lake, day: str) -> None:
    """Another operating-system process deletes and inserts rows of ``models.t`` and commits."""
    code = """
import sys, duckdb
catalog, data_path, day, *extensions = sys.argv[1:]
conn = duckdb.connect(config={"autoinstall_known_extensions": False})
for path in extensions:
    conn.execute(f"LOAD '{path}'")
conn.execute(f"ATTACH 'ducklake:{catalog}' AS lake (DATA_PATH '{data_path}/')")
conn.execute("BEGIN")
conn.execute("DELETE FROM lake.models.t WHERE day = ?", [day])
conn.execute("INSERT INTO lake.models.t VALUES (?, 2)", [day])
conn.execute("COMMIT")
"""
    extensions = [str(lakes.extension_file(n)) for n in ("ducklake", "postgres_scanner")]
    subprocess.run(
        [sys.executable, "-c", code, where.catalog, where.data_path, day, *extensions],
        check=True,
        timeout=120,
    )


def test_a_conflicting_commit_is_retried_with_a_logged_backoff(
    lake: lakes.Lake, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction whose commit loses to another process's is run again and then commits;
    the retry is logged. Past the bound it gives up with DuckLake's error."""
    with closing(lakes.connect(lake)) as conn:
        conn.execute("CREATE SCHEMA models")
        conn.execute("CREATE TABLE models.t (day DATE, v INTEGER)")
        conn.execute("INSERT INTO models.t VALUES ('2024-01-01', 0), ('2024-01-02', 0)")
        attempts = []

        def write() -> None:
            conn.execute("DELETE FROM models.t WHERE day = '2024-01-01'")
            conn.execute("INSERT INTO models.t VALUES ('2024-01-01', 1)")
            if not attempts:  # the other writer commits while this transaction is open
                _conflicting_writer(lake, "2024-01-02")
            attempts.append(time.perf_counter())

        with caplog.at_level(logging.WARNING, logger="backfill_assets.lake"):
            committed(conn, write, "test write")
        assert len(attempts) == 2
        retried = [r.getMessage() for r in caplog.records if "conflicted" in r.getMessage()]
        assert len(retried) == 1 and "attempt 1 of" in retried[0], retried
        assert "Transaction conflict" in retried[0]
        assert conn.execute("SELECT * FROM models.t ORDER BY day").fetchall() == [
            (dt.date(2024, 1, 1), 1),
            (dt.date(2024, 1, 2), 2),
        ]

        # Bounded: a writer that loses every time gives up after `attempts` tries.
        caplog.clear()
        tries = []

        def always_loses() -> None:
            conn.execute("BEGIN")
            try:
                conn.execute("DELETE FROM models.t WHERE day = '2024-01-01'")
                _conflicting_writer(lake, "2024-01-02")
                tries.append(1)
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                raise

        with caplog.at_level(logging.WARNING, logger="backfill_assets.lake"):
            with pytest.raises(duckdb.Error, match="conflict"):
                lakes.retry_conflicts(always_loses, "always loses", attempts=3, first_pause=0.01)
        assert len(tries) == 3
        assert len([r for r in caplog.records if "conflicted" in r.getMessage()]) == 2


# Kills: each lands half-way between the latest kill that left the old rows and the earliest
# that found the new ones, so they close in on the moment of the commit.
KILLS = 9


def _data_files(where: lakes.Lake) -> set[str]:
    return {str(p) for p in Path(where.data_path).rglob("*.parquet")}


def _referenced_files(conn: duckdb.DuckDBPyConnection, plan: Plan) -> set[str]:
    files: set[str] = set()
    for schema, table in (("models", plan.table_name("v2")), ("backfill", "partition_evidence")):
        for data, deletes in conn.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)",
            [lakes.ALIAS, table, schema],
        ).fetchall():
            files.update(f for f in (data, deletes) if f)
    return files


def test_a_writer_killed_mid_commit_leaves_every_partition_old_or_new(
    seeded: lakes.Lake,
) -> None:
    """SIGKILL a writer at points closing in on its commit (its data files written, its catalog
    commit under way, or done): each partition then holds exactly the rows it had before or
    exactly the rows the version's SQL gives over the changed sources, all of the window the
    same, and its evidence says which. Files written by a killed writer are left unreferenced
    (counted and printed), never read."""
    plan = _plan()
    version = plan.spec.candidate
    table = plan.model_table(version)
    context = _context()

    def rebuild(run_id: str, kill_after: float | None) -> float:
        ready, go = context.Event(), context.Event()
        worker = context.Process(
            target=_rebuild_worker,
            args=(seeded.catalog, seeded.data_path, run_id, ready, go),
        )
        worker.start()
        assert ready.wait(timeout=120)
        started = time.perf_counter()
        go.set()
        if kill_after is None:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        else:
            time.sleep(kill_after)
            worker.kill()  # SIGKILL
            worker.join(timeout=30)
        return time.perf_counter() - started

    def evidence_runs(conn: duckdb.DuckDBPyConnection) -> dict:
        return dict(
            conn.execute(
                "SELECT partition_start, run_id FROM backfill.partition_evidence "
                "WHERE model = ? AND version = ?",
                [plan.name, version],
            ).fetchall()
        )

    outcomes = []
    with closing(lakes.connect(seeded)) as conn:
        build_window(conn, plan, version, plan.window_start, plan.window_end, "before")
        measured = rebuild("measured", None)
        early, late = 0.0, measured * 1.2
        for attempt in range(KILLS):
            kill_after = (early + late) / 2
            # Change every partition's sources, so old and new rows differ everywhere.
            conn.execute("UPDATE raw.orders SET amount = amount + 1")
            old = _rows_by_partition(conn, table, plan.spec.partition_column)
            new = _expected_rows(conn, plan, version)
            old_runs = evidence_runs(conn)
            files_before = _data_files(seeded)
            run_id = f"killed-{attempt}"
            rebuild(run_id, kill_after)
            now = _rows_by_partition(conn, table, plan.spec.partition_column)
            runs = evidence_runs(conn)
            orphans = (_data_files(seeded) - files_before) - _referenced_files(conn, plan)
            assert set(now) == set(old) == set(new)
            states = set()
            for day, rows in now.items():
                assert rows in (old[day], new[day]), f"{day} is neither old nor new after the kill"
                state = "new" if rows == new[day] and rows != old[day] else "old"
                states.add(state)
                start = dt.datetime.combine(day, dt.time())
                assert runs[start] == (run_id if state == "new" else old_runs[start]), day
            assert len(states) == 1, f"one transaction, yet the window is mixed: {states}"
            state = states.pop()
            outcomes.append((round(kill_after, 3), state, len(orphans)))
            if state == "old":
                early = kill_after
            else:
                late = kill_after
        print(f"\nrebuild {measured:.2f}s; killed after (s, state, uncommitted files):", outcomes)
        assert any(state == "old" for _, state, _ in outcomes)

        # The next run finishes the job.
        rebuild("after", None)
        assert _rows_by_partition(conn, table, plan.spec.partition_column) == _expected_rows(
            conn, plan, version
        )


def test_two_promotions_at_once_one_wins(seeded: lakes.Lake) -> None:
    """Two processes pass the gate, then commit the same promotion at once: one wins, the log
    holds one row, for the winner, and the view shows the promoted version's rows."""
    plan = _plan()
    with closing(lakes.connect(seeded)) as conn:
        for version in plan.version_names:
            build_window(conn, plan, version, plan.window_start, plan.window_end, "built")
        ensure_view(conn, plan)  # the view on the baseline and the (empty) log
        assert published_version(conn, plan) == plan.spec.baseline

    context = _context()
    ready, go, results = context.Barrier(3), context.Barrier(3), context.Queue()
    workers = [
        context.Process(
            target=_promote_worker,
            args=(seeded.catalog, seeded.data_path, f"promoter-{i}", ready, go, results),
        )
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=180)
    go.wait(timeout=60)
    outcomes = dict(_drain(results, 2))
    for worker in workers:
        worker.join(timeout=60)
    print("\npromotions:", outcomes)
    winners = [run for run, said in outcomes.items() if said == "ok"]
    assert len(winners) == 1, outcomes
    loser = next(said for run, said in outcomes.items() if said != "ok")
    assert "conflict" in loser.lower() or "published version changed" in loser, loser

    with closing(lakes.connect(seeded)) as conn:
        log = history(conn, plan)
        assert [(e.action, e.version, e.run_id) for e in log] == [
            ("promote", plan.spec.candidate, winners[0])
        ]
        assert published_version(conn, plan) == plan.spec.candidate
        window = (
            f"(SELECT * FROM {plan.model_table(plan.spec.candidate)} "
            f"WHERE {plan.partition_column} >= DATE '{plan.window_start}' "
            f"AND {plan.partition_column} < DATE '{plan.window_end}')"
        )
        only_view, only_table, rows = conn.execute(_compare_sql(plan.view, window)).fetchone()
        assert (only_view, only_table) == (0, 0) and rows > 0


def test_a_dagster_run_writes_the_lake_the_environment_names(
    seeded: lakes.Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The code location's ``warehouse`` resource is the lake when BACKFILL_LAKE_CATALOG and
    BACKFILL_LAKE_DATA_PATH are set (as ``EnvVar``s: the UI shows the variables' names, not
    the catalog URL); a ranged run of a model asset writes its rows and evidence there and
    leaves no DuckDB file."""
    import dagster as dg

    from backfill_assets.component.models import range_tags
    from backfill_assets_tests.helpers import load_definitions

    unused = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(unused))
    monkeypatch.setenv(lakes.CATALOG_ENV, seeded.catalog)
    monkeypatch.setenv(lakes.DATA_PATH_ENV, seeded.data_path)
    defs = load_definitions()
    resource = defs.resources["warehouse"]
    assert isinstance(resource.lake_catalog, dg.EnvVar)
    assert resource.lake_catalog.env_var_name == lakes.CATALOG_ENV
    with resource.get_connection() as conn:  # DuckDBResource's own API reaches the lake too
        assert lakes.is_lake(conn)
    first, last = dt.date(2024, 2, 20), dt.date(2024, 2, 26)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["models", f"{PLAN}__v2"])],
            tags=range_tags(first, last),
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            raise_on_error=False,
        )
    assert result.success
    assert not unused.exists()
    with closing(lakes.connect(seeded)) as conn:
        built = conn.execute(
            "SELECT min(partition_start), max(partition_start), count(*), bool_and(checks_passed) "
            "FROM backfill.partition_evidence WHERE model = ? AND version = 'v2'",
            [PLAN],
        ).fetchone()
    assert built == (
        dt.datetime.combine(first, dt.time()),
        dt.datetime.combine(last, dt.time()),
        7,
        True,
    )


def test_a_catalog_that_cannot_be_reached_is_reported_with_the_fix(
    postgres: str, tmp_path: Path
) -> None:
    """A catalog database that does not exist: a ``LakeError`` (a ``duckdb.Error``, which the
    sensors report as "not readable now") naming the lake and the settings to check."""
    where = lakes.lake(_database_uri(postgres, "no_such_lake"), str(tmp_path / "data"))
    with pytest.raises(lakes.LakeError, match="cannot open DuckLake .*no_such_lake") as error:
        lakes.connect(where)
    assert isinstance(error.value, duckdb.Error)
    assert lakes.CATALOG_ENV in str(error.value)


def test_configuration_is_read_from_the_environment_and_checked(tmp_path: Path) -> None:
    """BACKFILL_LAKE_CATALOG / BACKFILL_LAKE_DATA_PATH choose the lake; bad values say the fix."""
    assert lakes.from_env({}) is None
    found = lakes.from_env(
        {
            lakes.CATALOG_ENV: "postgresql+psycopg2://u:secret@db:5432/lake",
            lakes.DATA_PATH_ENV: str(tmp_path),
        }
    )
    assert found.catalog == "postgres:postgresql://u:secret@db:5432/lake"
    assert "secret" not in found.describe()
    with pytest.raises(lakes.LakeError, match="several writers"):
        lakes.from_env({lakes.CATALOG_ENV: "lake.duckdb", lakes.DATA_PATH_ENV: str(tmp_path)})
    with pytest.raises(lakes.LakeError, match="data folder"):
        lakes.from_env({lakes.CATALOG_ENV: f"sqlite:{tmp_path}/c.sqlite"})


def test_plan_sql_that_reaches_past_its_tables_on_a_lake_is_named() -> None:
    """With the lake's extensions loaded, a plain SELECT could run statements on the catalog
    database or expire the lake's snapshots; ``reach_problems`` names such calls from the
    parsed SQL alone (no extension needed), for plan validation to refuse. The shipped plans'
    SQL reaches nothing."""
    parser = duckdb.connect(config={"enable_external_access": False})

    def reach(sql: str) -> list[str]:
        tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
        assert not tree.get("error"), tree
        return lakes.reach_problems(tree)

    assert reach(
        "WITH x AS (SELECT * FROM postgres_execute('__ducklake_metadata_lake', 'DROP TABLE t')) "
        "SELECT * FROM raw.orders, x"
    ) == ["postgres_execute()"]
    assert reach("SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())") == [
        "ducklake_expire_snapshots()"
    ]
    assert reach("SELECT * FROM query('SELECT * FROM sqlite_query(''c'', ''DELETE'')')") == [
        "query()"
    ]
    assert reach("SELECT count(*) FROM __ducklake_metadata_lake.public.ducklake_snapshot") == [
        "__ducklake_metadata_lake"
    ]
    assert reach("SELECT (SELECT max(a) FROM sqlite_scan('/x.db', 't')) AS a") == ["sqlite_scan()"]
    for plan in shipped_plans():
        for field, relative in sql_files(plan.spec).items():
            assert reach((plan.path.parent / relative).read_text()) == [], (plan.name, field)


# ---------------------------------------------------------------------------------------------
# The writer pool, maintenance and the lake demo


def _instance_pool_limit(home: Path) -> int:
    """The ``duckdb`` pool's limit as the instance in ``home`` records it."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.event_log_storage.get_concurrency_info(settings.WRITER_POOL).slot_count


def test_the_writer_pool_limit_follows_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One writer on the DuckDB file whatever is configured, ``BACKFILL_LAKE_WRITERS`` (default
    4) on a lake, each recorded in a Dagster home of its own; the shipped (file) home refuses
    a limit above 1. Runs everywhere: no lake is opened."""
    from backfill_assets.instance import instance_storage

    lake_env = {lakes.CATALOG_ENV: "postgres:dbname=lake", lakes.DATA_PATH_ENV: str(tmp_path)}
    assert settings.writer_pool_limit({}) == 1
    assert settings.writer_pool_limit({settings.LAKE_WRITERS_ENV: "8"}) == 1
    assert settings.writer_pool_limit(lake_env) == 4
    assert settings.writer_pool_limit({**lake_env, settings.LAKE_WRITERS_ENV: " 2 "}) == 2
    for bad in ("0", "-1", "four", "2.5"):
        with pytest.raises(ValueError, match=f"{settings.LAKE_WRITERS_ENV}=.*Fix: a whole number"):
            settings.writer_pool_limit({**lake_env, settings.LAKE_WRITERS_ENV: bad})

    for name in ("DAGSTER_HOME", settings.STORAGE_ENV, settings.PG_URL_ENV, lakes.CATALOG_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(settings.LAKE_WRITERS_ENV, raising=False)
    assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME
    monkeypatch.setenv(lakes.CATALOG_ENV, lake_env[lakes.CATALOG_ENV])
    assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME / "lake"
    monkeypatch.setenv(settings.STORAGE_ENV, "postgres")
    assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME / "lake" / "postgres"
    monkeypatch.delenv(settings.STORAGE_ENV)
    with pytest.raises(ValueError, match="DuckDB file's"):
        settings.set_writer_pool_limit(settings.SHIPPED_DAGSTER_HOME)

    # Recorded in real instances: the lake's home gets 4, a file's home 1 (also after the
    # lake's limit was recorded in it by mistake: every start records its own warehouse's).
    lake_home, file_home = tmp_path / "lake_home", tmp_path / "file_home"
    with instance_storage(lake_home, "sqlite") as storage:
        assert settings.set_writer_pool_limit(storage.home) == 4
        assert _instance_pool_limit(storage.home) == 4
    with instance_storage(file_home, "sqlite") as storage:
        settings.set_writer_pool_limit(storage.home, 4)
        monkeypatch.delenv(lakes.CATALOG_ENV)
        assert settings.set_writer_pool_limit(storage.home) == 1
        assert _instance_pool_limit(storage.home) == 1


def test_maintenance_compacts_and_expires_and_queries_read_the_same(
    seeded: lakes.Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """``python -m backfill_assets.lake maintain`` on the configured lake: after a backfill in
    chunks and a rebuild (many small files, delete files, many snapshots) it merges files,
    expires the snapshots older than ``--keep-days`` and deletes the files only they named
    (and files no commit named) once older than ``--grace-hours``; the model, the published
    view and the evidence read exactly as before, and every file left is one a table names."""
    plan = _plan()
    with closing(lakes.connect(seeded)) as conn:
        for first, last in _chunks(plan, 4):
            for version in plan.version_names:
                build_window(conn, plan, version, first, last, f"chunk-{first}")
        build_window(conn, plan, "v2", plan.window_start, plan.window_end, "rebuild")
        ensure_view(conn, plan)
        tables = (plan.model_table("v2"), plan.view, "backfill.partition_evidence")
        before = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
        snapshots = conn.execute("SELECT count(*) FROM ducklake_snapshots(?)", [lakes.ALIAS])
        snapshots_before = snapshots.fetchone()[0]
    files_before = _data_files(seeded)

    monkeypatch.setenv(lakes.CATALOG_ENV, seeded.catalog)
    monkeypatch.setenv(lakes.DATA_PATH_ENV, seeded.data_path)
    assert lakes.main(["maintain", "--keep-days", "0", "--grace-hours", "0"]) == 0
    said = capsys.readouterr().out
    assert "small files merged" in said and "snapshots expired" in said, said

    files_after = _data_files(seeded)
    with closing(lakes.connect(seeded)) as conn:
        for table, rows in before.items():
            assert conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == rows, table
        snapshots_after = conn.execute(
            "SELECT count(*) FROM ducklake_snapshots(?)", [lakes.ALIAS]
        ).fetchone()[0]
    print(f"\nfiles {len(files_before)} -> {len(files_after)}; {said.strip()}")
    assert snapshots_after < snapshots_before
    assert len(files_after) < len(files_before)
    # What is left is exactly what the lake's tables name: nothing orphaned, nothing missing.
    with closing(lakes.connect(seeded)) as conn:
        named = set()
        for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?",
            [lakes.ALIAS],
        ).fetchall():
            for data, deletes in conn.execute(
                "SELECT data_file, delete_file FROM ducklake_list_files(?, ?, schema => ?)",
                [lakes.ALIAS, table, schema],
            ).fetchall():
                named.update(f for f in (data, deletes) if f)
    assert files_after == named


def test_maintenance_refuses_a_lake_that_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """No lake configured and no embedded one beside the warehouse file: a message naming the
    fix, exit 1, and no server started. Runs everywhere."""
    monkeypatch.delenv(lakes.CATALOG_ENV, raising=False)
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(tmp_path / "w" / "warehouse.duckdb"))
    assert lakes.main(["maintain"]) == 1
    said = capsys.readouterr().err
    assert "no lake to maintain" in said and "demo --lake" in said
    assert not (tmp_path / "w").exists()


def test_demo_lake_without_the_lake_set_names_the_install_command() -> None:
    """``backfill-assets demo --lake`` where the lake set is not installed (the main venv,
    DuckDB 2.x): exit 1 at once, naming the install command; nothing started or written."""
    if not UNAVAILABLE:
        pytest.skip("the lake set is installed here; the refusal runs in the main venv")
    command = Path(sys.executable).parent / "backfill-assets"
    folder = Path(tempfile.mkdtemp(prefix="backfill-no-lake-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "DAGSTER_"))}
    env["BACKFILL_WAREHOUSE"] = str(folder / "warehouse" / "warehouse.duckdb")
    env["DAGSTER_HOME"] = str(folder / "home")
    try:
        done = subprocess.run(
            [str(command), "demo", "--lake"], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 1
        assert "backfill-assets demo --lake: DuckDB" in done.stderr
        assert "pip install -e '.[lake]'" in done.stderr
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


DEMO_PLAN = "monthly_active_customers"  # 24 months: its whole window is backfilled, published
DEMO_DAILY = "daily_revenue"  # beside it, its first 93 days: three chunks of 31
DEMO_DAYS = 93
DEMO_ORDERS_PER_DAY = 20


@pytest.mark.e2e
def test_the_lake_demo_path_writes_in_parallel_and_publishes_what_the_gate_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The building blocks of ``demo --lake`` (a whole demo run takes about 5 minutes here): with
    no lake configured, ``lake_in_use`` starts an embedded PostgreSQL catalog beside the
    warehouse path and puts the lake in the environment; the lake's Dagster home records a
    writer pool of 4; one backfill through ``dagster dev``, as the demo launches it (a monthly
    plan's whole window and a daily plan's first three chunks), runs side by side, never more
    than 4 at once; the demo's window-check and promotion jobs publish the monthly plan; its
    view equals the candidate's table over the window; one evidence row per partition and
    version; the catalog stops with the block; nothing is left to build.
    """
    if UNAVAILABLE:
        pytest.skip(f"no DuckLake here: {UNAVAILABLE}")
    if NO_PGSERVER:
        pytest.skip(f"no embedded PostgreSQL: {NO_PGSERVER}")
    from backfill_assets.component.models import partition_key
    from backfill_assets.example import demo
    from backfill_assets.example.dagster_dev import DagsterDev
    from backfill_assets.instance import instance_storage

    # Outside pytest's tmp_path: the embedded server runs as the user pgserver (see the
    # ``postgres`` fixture).
    folder = Path(tempfile.mkdtemp(prefix="backfill-lake-demo-"))
    warehouse = folder / "warehouse" / "warehouse.duckdb"
    for name in (lakes.CATALOG_ENV, lakes.DATA_PATH_ENV, settings.LAKE_WRITERS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv(settings.STORAGE_ENV, raising=False)
    monkeypatch.delenv(settings.PG_URL_ENV, raising=False)
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(warehouse))
    root = warehouse.parent / "lake"
    assert settings.lake_root() == root
    plans = {p.name: p for p in shipped_plans()}
    plan, daily = plans[DEMO_PLAN], plans[DEMO_DAILY]
    first_days = (dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(days=DEMO_DAYS - 1))
    ranges = [
        (p.asset_path(v), partition_key(p, first), partition_key(p, last))
        for p, (first, last) in (
            (plan, (plan.window_start, plan.window_partitions[-1])),
            (daily, first_days),
        )
        for v in p.version_names
    ]
    # By hand: 24 months in runs of the plan's chunk, and 93 days in runs of 31.
    expected_runs = -(-24 // plan.chunk) + 3
    try:
        with lakes.lake_in_use(settings.lake_root()) as where:
            assert where.data_path == str(root / lakes.DATA_FOLDER)
            assert lakes.from_env() == where  # in the environment every process inherits
            # The lake's own home (the shipped one's ``lake`` folder), here under the folder.
            assert settings.dagster_home() == settings.SHIPPED_DAGSTER_HOME / "lake"
            home = folder / "dagster_home_lake"
            with closing(lakes.connect(where, external_access=True)) as conn:
                generate(conn, plan.window_start, dt.date(2025, 12, 31), DEMO_ORDERS_PER_DAY, 7)
            with (
                instance_storage(home, "sqlite") as storage,
                DagsterDev(storage.home, str(warehouse), env=storage.env) as dev,
            ):
                assert dev.writer_limit == 4
                backfill_id = dev.launch_ranges(ranges, "lake demo path")
                state = dev.wait_backfill(backfill_id, timeout=600, runs_only=True)
                assert [r["status"] for r in state.runs] == ["SUCCESS"] * expected_runs
                jobs = [
                    (f"window_checks_{plan.name}_job", None),
                    (f"promote_{plan.name}_job", demo.promotion_config(plan)),
                ]
                assert demo._run_jobs(dev, jobs)
            assert _instance_pool_limit(home) == 4
            lives, executions = _backfill_run_spans(home)
            assert len(lives) == expected_runs, lives
            in_pool, executing = _most_at_once(lives), _most_at_once(executions)
            print(
                f"\n{expected_runs} backfill runs: at most {in_pool} at once (launched to "
                f"ended), {executing} executing at once"
            )
            assert 2 <= in_pool <= 4

            with closing(lakes.connect(where)) as conn:
                assert published_version(conn, plan) == "v2"
                column = plan.spec.partition_column
                window = (
                    f"(SELECT * FROM models.{plan.name}__v2 WHERE {column} >= DATE '2024-01-01' "
                    f"AND {column} < DATE '2026-01-01')"
                )
                only_view, only_table, rows = conn.execute(
                    _compare_sql(f"analytics.{plan.name}", window)
                ).fetchone()
                assert (only_view, only_table) == (0, 0) and rows > 0
                evidence = (
                    "SELECT model, version, count(*), count(DISTINCT partition_start), "
                    "bool_and(checks_passed), min(partition_start), max(partition_start) "
                    "FROM backfill.partition_evidence GROUP BY ALL ORDER BY ALL"
                )
                january, december = dt.datetime(2024, 1, 1), dt.datetime(2025, 12, 1)
                last_day = dt.datetime.combine(first_days[1], dt.time())
                assert conn.execute(evidence).fetchall() == [
                    (DEMO_DAILY, "legacy", 93, 93, True, january, last_day),
                    (DEMO_DAILY, "v2", 93, 93, True, january, last_day),
                    (DEMO_PLAN, "legacy", 24, 24, True, january, december),
                    (DEMO_PLAN, "v2", 24, 24, True, january, december),
                ]
                assert demo._left_to_build(conn, (plan,)) == []
            pgdata = root / lakes.CATALOG_FOLDER
            assert postgres_running(pgdata) is not None
        assert postgres_running(pgdata) is None  # stopped with the block
        assert lakes.from_env() is None  # and the environment as it was
        assert not warehouse.exists()  # the lake, not the file
    finally:
        deadline = time.monotonic() + 30
        while _postmasters(folder) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
def test_ui_on_the_lake_opens_its_home_with_its_pool_and_stops_the_catalog_with_it() -> None:
    """``backfill-assets ui --lake`` with no lake configured: the embedded catalog beside the
    warehouse path runs as long as the UI does, the lake's Dagster home records a writer pool
    of 4, and Ctrl-C stops ``dagster dev`` and the catalog (exit 130)."""
    if UNAVAILABLE:
        pytest.skip(f"no DuckLake here: {UNAVAILABLE}")
    if NO_PGSERVER:
        pytest.skip(f"no embedded PostgreSQL: {NO_PGSERVER}")
    import signal
    import urllib.request

    from backfill_assets.example.dagster_dev import free_port

    folder = Path(tempfile.mkdtemp(prefix="backfill-lake-ui-"))
    home = folder / "dagster_home_lake"
    pgdata = folder / "warehouse" / "lake" / lakes.CATALOG_FOLDER
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "DAGSTER_"))}
    env.update(
        {
            "BACKFILL_WAREHOUSE": str(folder / "warehouse" / "warehouse.duckdb"),
            "DAGSTER_HOME": str(home),
        }
    )
    port = free_port()
    command = [str(Path(sys.executable).parent / "backfill-assets"), "ui", "--lake"]
    output = folder / "ui.log"
    ui = None
    try:
        with open(output, "wb") as log:
            ui = subprocess.Popen(
                [*command, "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                    break
            except OSError:
                assert ui.poll() is None, output.read_text()[-3000:]
                assert time.monotonic() < deadline, output.read_text()[-3000:]
                time.sleep(1)
        assert postgres_running(pgdata) is not None
        assert _instance_pool_limit(home) == 4
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=90) == 130, output.read_text()[-3000:]
        said = output.read_text()
        assert "warehouse: DuckLake" in said and "on a DuckLake, 4 writer(s) at a time" in said
        assert postgres_running(pgdata) is None
    finally:
        if ui is not None and ui.poll() is None:  # it stops its dagster dev on SIGINT
            ui.send_signal(signal.SIGINT)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _postmasters(folder) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)


def _backfill_run_spans(home: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The backfill runs of the instance in ``home``: from launch (the run's RUN_STARTING
    event: its worker process is being started and it holds its pool slot) to its end, and
    from the start of its execution (RUN_START) to its end."""
    import dagster as dg

    lives, executions = [], []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            if not record.dagster_run.tags.get("dagster/backfill"):
                continue
            starting = instance.all_logs(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING
            )
            lives.append((starting[0].timestamp, record.end_time))
            executions.append((record.start_time, record.end_time))
    return lives, executions


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans holding one moment (a span holds [start, end))."""
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)
