"""Reliability: real processes killed, locked out, starved of disk and racing, on real DuckDB files.

Every fault here happens to a real operating-system process working on a real DuckDB file, and
the file is reopened afterwards the way the next run would open it. Nothing in DuckDB or Dagster
is mocked. The only hooks are in the scripts of the processes under test: a thin wrapper around
the real connection logs each SQL statement before and after it runs and, when asked, sleeps
right after one of them (so a SIGKILL lands while the real DuckDB transaction is open), and a
wrapper around ``evidence.replace_window`` that sleeps before calling the real one.

Build processes are forked from one helper process (the "zygote", started with
``sys.executable -c``) that has imported the project once: a fresh interpreter needs ~1.5-3 s to
import pandas and the project, which would make 20+ kill points take minutes on this 2-core
machine. Each forked child opens its own DuckDB connection after the fork and is killed by PID.

docs/reliability.md lists every case with what was observed; see it for the numbers.
"""

import datetime as dt
import inspect
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets import cli, settings
from backfill_assets.build import BuildError, build_window
from backfill_assets.component.models import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    build_model_asset,
    range_tags,
)
from backfill_assets.component.resources import Warehouse
from backfill_assets.evidence import ensure_evidence
from backfill_assets.example import dagster_dev
from backfill_assets.example.generator import TABLES, generate
from backfill_assets.late import find_repairs
from backfill_assets.publish import ensure_view, evaluate_gate, promote, published_version
from backfill_assets.warehouse import (
    WarehouseBusyError,
    WarehouseNameError,
    connect_waiting,
    ensure_schema,
    open_read_only,
    table_exists,
)
from backfill_assets.window_checks import run_window_checks
from backfill_assets_tests.helpers import load_definitions, plan_named

pytestmark = pytest.mark.reliability

PROJECT_DIR = Path(__file__).resolve().parents[1]
FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
STOP = dt.date(2024, 4, 1)  # build windows are end-exclusive
JAN_STOP = dt.date(2024, 2, 1)
JANUARY = [FIRST + dt.timedelta(days=i) for i in range(31)]
ORDERS_PER_DAY = 300
SEED = 7
INITIAL_RUN = "initial-build"
KILLED_RUN = "killed-run"
V2_TABLE = "models.fct_orders__v2"
LEGACY_TABLE = "models.fct_orders__legacy"
V2_FCT_ORDERS = dg.AssetKey(["models", "fct_orders__v2"])
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# January orders are numbered (day offset + 1) * 1_000_000 + n by the generator (seed.py).
JANUARY_ORDER_IDS = "order_id < 32000000"


# --------------------------------------------------------------------------------------------
# The zygote: imports the project once, forks one real process per job


ZYGOTE = r'''
import datetime as dt
import json
import os
import resource
import signal
import sys
import time

import backfill_assets.build as build
import backfill_assets.evidence as evidence
import backfill_assets.publish as publish
from backfill_assets_tests.helpers import plan_named
from backfill_assets.warehouse import connect_waiting


def day(text):
    return dt.date.fromisoformat(text)


class Child:
    def __init__(self, job, out):
        self.job = job
        self.out = out
        self.pauses_left = 1

    def say(self, name, detail=""):
        self.out.write(f"{time.monotonic():.6f} {name} {detail}\n")
        self.out.flush()

    def pause(self, where):
        self.say("PAUSED", where)
        time.sleep(self.job.get("pause_seconds", 120))
        self.say("RESUMED", where)


class Traced:
    """The real connection: logs every statement, may sleep right after one of them."""

    def __init__(self, conn, child):
        self._conn = conn
        self._child = child

    def execute(self, sql, *args, **kwargs):
        label = " ".join(sql.split())[:80]
        self._child.say("BEFORE", label)
        result = self._conn.execute(sql, *args, **kwargs)
        self._child.say("AFTER", label)
        after = self._child.job.get("pause_after")
        if after and label.startswith(after) and self._child.pauses_left:
            self._child.pauses_left -= 1
            self._child.pause(label)
        return result

    def __getattr__(self, name):
        return getattr(self._conn, name)


def run(job, child):
    if job.get("fsize_limit"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize_limit"], hard))
    if job.get("pause_in_write_evidence"):
        real = evidence.replace_window

        def write_evidence(*args, **kwargs):
            child.say("IN_TRANSACTION")
            child.pause("_write_evidence")
            return real(*args, **kwargs)

        evidence.replace_window = write_evidence
    plans = {step[1]: plan_named(step[1]) for step in job["steps"]}
    if job.get("start_at"):
        time.sleep(max(0.0, job["start_at"] - time.monotonic()))
    child.say("ATTEMPT")
    conn = connect_waiting(job["path"], job.get("lock_wait", 60))
    child.say("READY")
    traced = Traced(conn, child)
    try:
        for kind, name, *args in job["steps"]:
            plan = plans[name]
            if kind == "build":
                version, start, end = args
                result = build.build_window(
                    traced, plan, version, day(start), day(end), job["run_id"]
                )
                child.say("BUILT", f"{name}/{version} rows={result.rows}")
            elif kind == "promote":
                version, first, last = args
                windowed = plan.with_window(day(first), day(last))
                publish.promote(traced, windowed, version, "", "reliability", job["run_id"])
                child.say("PROMOTED", f"{name}/{version}")
            elif kind == "rollback":
                first, last = args
                windowed = plan.with_window(day(first), day(last))
                publish.rollback(
                    traced, windowed, "oncall@example.com", "reliability", job["run_id"]
                )
                child.say("ROLLED_BACK", name)
    finally:
        conn.close()
        child.say("CLOSED")


signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the forked processes
print("ZYGOTE READY", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            with open(job["log"], "w") as out:
                child = Child(job, out)
                try:
                    run(job, child)
                    code = 0
                except BaseException as error:
                    child.say("ERROR", f"{type(error).__name__}: {error}".replace("\n", " "))
                    context = error.__context__
                    while context is not None:
                        text = f"{type(context).__name__}: {context}".replace("\n", " ")
                        child.say("CONTEXT", text)
                        context = context.__context__
                child.say("EXIT", str(code))
        finally:
            os._exit(code)
    print(f"FORKED {pid}", flush=True)
'''


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() in the child: the same clock as in this process (Linux)
    name: str
    detail: str


class Child:
    """A forked build/promote process; its log is one line per event."""

    def __init__(self, pid: int, log: Path) -> None:
        self.pid = pid
        self.log = log

    def events(self) -> list[Event]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        events = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line being written
            at, name, *detail = line.rstrip("\n").split(" ", 2)
            events.append(Event(float(at), name, detail[0] if detail else ""))
        return events

    def find(self, name: str) -> list[Event]:
        return [e for e in self.events() if e.name == name]

    def wait_for(
        self, name: str, detail: str = "", timeout: float = 60, spin: bool = False
    ) -> Event:
        """The first event ``name`` whose detail starts with ``detail``; ``spin`` polls the
        log without sleeping (to kill within a fraction of a millisecond of it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events()
            for event in events:
                if event.name == name and event.detail.startswith(detail):
                    return event
            if any(e.name == "EXIT" for e in events):
                break
            if not spin:
                time.sleep(0.001)
        raise AssertionError(f"no {name} {detail} from PID {self.pid}; log:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_gone(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.alive():
            assert time.monotonic() < deadline, f"PID {self.pid} did not go away"
            time.sleep(0.005)

    def kill(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
        self.wait_gone()

    def exit_code(self, timeout: float = 180) -> int:
        code = int(self.wait_for("EXIT", timeout=timeout).detail)
        self.wait_gone()
        return code


class Zygote:
    """``sys.executable -c ZYGOTE``: forks a process per job and reports its PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[Child] = []
        self.count = 0
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=PROJECT_DIR,
            env=env,
        )
        assert self._readline(120) == "ZYGOTE READY"

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, "the zygote did not answer"
        return self.process.stdout.readline().strip()

    def fork(self, path: Path, steps: list, run_id: str = KILLED_RUN, **options) -> Child:
        self.count += 1
        log = self.folder / f"child-{self.count}.log"
        job = {"path": str(path), "steps": steps, "run_id": run_id, "log": str(log), **options}
        self.process.stdin.write(json.dumps(job, default=str) + "\n")
        self.process.stdin.flush()
        line = self._readline(60)
        assert line.startswith("FORKED "), line
        child = Child(int(line.split()[1]), log)
        self.children.append(child)
        return child

    def close(self) -> None:
        try:
            for child in self.children:
                child.kill()
        finally:
            self.process.kill()
            self.process.wait(timeout=30)
            self.process.stdin.close()
            self.process.stdout.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    process = Zygote(tmp_path_factory.mktemp("zygote"))
    try:
        yield process
    finally:
        process.close()


@contextmanager
def analyst_session(path: Path, release_after: float | None = None) -> Iterator[subprocess.Popen]:
    """Another process with the warehouse open read-write, as an analyst's DuckDB shell has it."""
    script = (
        "import duckdb, sys, time\n"
        "conn = duckdb.connect(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "if sys.argv[2] != 'never':\n"
        "    time.sleep(float(sys.argv[2]))\n"
        "    conn.close()\n"
        "    print('released', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(release_after or "never")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready and holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


# --------------------------------------------------------------------------------------------
# What a warehouse holds


def day_checksums(conn, table: str, start: dt.date, stop: dt.date) -> dict[dt.date, tuple]:
    """Per order_date: row count and md5 of the rows rendered as text, in a fixed order."""
    rows = conn.execute(
        "SELECT order_date, count(*), md5(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR))) FROM {table} AS t "
        "WHERE order_date >= $start AND order_date < $stop GROUP BY order_date",
        {"start": start, "stop": stop},
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def table_checksum(conn, table: str) -> tuple:
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
    ).fetchone()


EVIDENCE_CONTENT = (
    "model, version, partition_start, row_count, source_rows, source_max_loaded_at, "
    "source_fingerprint, "
    "code_version, checks_passed, checks, applied"
)  # every column but run_id and written_at


def day_evidence(conn, version: str, start: dt.date, stop: dt.date) -> list[tuple]:
    """(day, row_count, source_fingerprint, run_id, md5 of the content) per evidence row."""
    return conn.execute(
        "SELECT partition_start::DATE AS day, row_count, source_fingerprint, run_id, "
        f"md5(CAST(ROW({EVIDENCE_CONTENT}) AS VARCHAR)) FROM backfill.partition_evidence "
        "WHERE model = 'fct_orders' AND version = $version AND partition_start "
        ">= $start AND partition_start < $stop "
        "ORDER BY day",
        {"version": version, "start": start, "stop": stop},
    ).fetchall()


def evidence_checksum(conn, *, all_columns: bool) -> tuple:
    columns = "*" if all_columns else EVIDENCE_CONTENT
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM (SELECT {columns} "
        "FROM backfill.partition_evidence) AS t"
    ).fetchone()


def view_definition(conn, name: str = "fct_orders") -> str | None:
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
        [name],
    ).fetchone()
    return row[0] if row else None


def log_rows(conn) -> int:
    return conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0]


@dataclass(frozen=True)
class Snapshot:
    """Everything a user could see change: model tables, evidence, the view, the log."""

    tables: tuple
    evidence: tuple
    view_sql: str | None
    view_rows: tuple | None
    promotions: int


def snapshot(path: Path) -> Snapshot:
    with duckdb.connect(str(path)) as conn:
        view = view_definition(conn)
        return Snapshot(
            tuple(table_checksum(conn, t) for t in (LEGACY_TABLE, V2_TABLE)),
            evidence_checksum(conn, all_columns=True),
            view,
            table_checksum(conn, "analytics.fct_orders") if view else None,
            log_rows(conn),
        )


@dataclass(frozen=True)
class WindowState:
    """January of fct_orders v2: rows per day and evidence per day, plus what is around it."""

    table: dict
    evidence: dict
    run_ids: dict
    evidence_rows_per_day: dict
    duplicate_keys: int
    outside: tuple  # every other row and evidence row of the warehouse


def window_state(path: Path) -> WindowState:
    with duckdb.connect(str(path)) as conn:
        evidence = day_evidence(conn, "v2", FIRST, JAN_STOP)
        per_day: dict = {}
        for row in evidence:
            per_day[row[0]] = per_day.get(row[0], 0) + 1
        outside = (
            conn.execute(
                "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
                "ORDER BY CAST(t AS VARCHAR)), '')) FROM models.fct_orders__v2 AS t "
                "WHERE order_date >= $stop",
                {"stop": JAN_STOP},
            ).fetchone(),
            table_checksum(conn, LEGACY_TABLE),
            conn.execute(
                "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
                "ORDER BY CAST(t AS VARCHAR)), '')) FROM backfill.partition_evidence AS t "
                "WHERE version <> 'v2' OR partition_start >= $stop",
                {"stop": JAN_STOP},
            ).fetchone(),
        )
        return WindowState(
            table=day_checksums(conn, V2_TABLE, FIRST, JAN_STOP),
            evidence={r[0]: (r[1], r[2], r[4]) for r in evidence},
            run_ids={r[0]: r[3] for r in evidence},
            evidence_rows_per_day=per_day,
            duplicate_keys=conn.execute(
                f"SELECT count(*) - count(DISTINCT order_id) FROM {V2_TABLE}"
            ).fetchone()[0],
            outside=outside,
        )


def copy_warehouse(source: Path, target: Path) -> Path:
    assert not Path(f"{source}.wal").exists(), "copy a closed, checkpointed file only"
    shutil.copyfile(source, target)
    return target


# --------------------------------------------------------------------------------------------
# Shared warehouses


@pytest.fixture(scope="module")
def built_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated months at 300 orders a day, fct_orders legacy and v2 built over them,
    analytics.fct_orders on legacy; closed (checkpointed) so it can be copied."""
    path = tmp_path_factory.mktemp("built") / "warehouse.duckdb"
    plan = plan_named("fct_orders").with_window(FIRST, LAST)
    with duckdb.connect(str(path)) as conn:
        generate(conn, FIRST, LAST, orders_per_day=ORDERS_PER_DAY, seed=SEED)
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, FIRST, STOP, INITIAL_RUN)
        assert ensure_view(conn, plan) == "legacy"
    return path


@dataclass(frozen=True)
class RebuildCase:
    path: Path  # sources changed after the build: a January rebuild changes every day
    old: WindowState  # what the file holds now
    new: WindowState  # what a clean rebuild of January gives


@pytest.fixture(scope="module")
def rebuild_case(built_base: Path, tmp_path_factory: pytest.TempPathFactory) -> RebuildCase:
    folder = tmp_path_factory.mktemp("rebuild")
    path = copy_warehouse(built_base, folder / "changed.duckdb")
    old = window_state(path)
    with duckdb.connect(str(path)) as conn:
        # A corrected upstream load: six orders a day of January get a new amount.
        changed = conn.execute(
            f"UPDATE raw.orders SET amount = amount + 1 WHERE order_id % 50 = 0 "
            f"AND {JANUARY_ORDER_IDS}"
        ).fetchone()[0]
        assert changed >= 6 * 31
    clean = copy_warehouse(path, folder / "clean.duckdb")
    with duckdb.connect(str(clean)) as conn:
        build_window(conn, plan_named("fct_orders"), "v2", FIRST, JAN_STOP, KILLED_RUN)
    new = window_state(clean)
    # Positive control: every day of the window differs between old and new, in rows and
    # evidence, so each day's state after a kill can be told apart.
    assert set(old.table) == set(new.table) == set(JANUARY)
    assert all(old.table[d] != new.table[d] for d in JANUARY)
    assert all(old.evidence[d][1] != new.evidence[d][1] for d in JANUARY)  # fingerprints
    assert old.outside == new.outside
    return RebuildCase(path, old, new)


# --------------------------------------------------------------------------------------------
# 1. SIGKILL of a build process while it writes a 31-day chunk

# Deterministic points: the process sleeps right after this statement (or inside the hook) and
# is killed there. Expected: "old" until COMMIT has returned, "new" after.
PAUSE_POINTS = {
    "after_staging": ("CREATE OR REPLACE TEMP TABLE backfill_stage AS", "old"),
    "after_begin": ("BEGIN TRANSACTION", "old"),
    "after_delete_of_window": ('DELETE FROM "models"', "old"),
    "after_insert_of_window": ('INSERT INTO "models"', "old"),
    "in_write_evidence_hook": (None, "old"),
    "after_evidence_delete": ("DELETE FROM backfill.partition_evidence", "old"),
    "after_evidence_insert": ("INSERT INTO backfill.partition_evidence", "old"),
    "after_commit": ("COMMIT", "new"),
    "after_stage_dropped": ('DROP TABLE IF EXISTS "backfill_stage"', "new"),
}
# Timed points: milliseconds after the process reported READY (connected, about to build).
TIMED_MS = [0, 25, 50, 75, 100, 150, 200]
# Race points: killed the moment the log shows the process reaching this statement, without
# pausing it, so the kill lands while the statement (or the next one) runs.
RACE_POINTS = {
    "at_delete_of_window": ("BEFORE", 'DELETE FROM "models"'),
    "at_insert_of_window": ("BEFORE", 'INSERT INTO "models"'),
    "at_evidence_insert": ("BEFORE", "INSERT INTO backfill.partition_evidence"),
    "at_commit": ("BEFORE", "COMMIT"),
    "just_after_commit": ("AFTER", "COMMIT"),
    "at_close_checkpoint": ("BUILT", ""),  # close() checkpoints the WAL into the file
}
REBUILD_STEPS = [["build", "fct_orders", "v2", FIRST, JAN_STOP]]


def test_an_uninterrupted_rebuild_process_writes_the_clean_content(zygote, rebuild_case, tmp_path):
    """Positive control for the kill tests: the same process, not killed, gives "new"."""
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    child = zygote.fork(path, REBUILD_STEPS)
    assert child.exit_code() == 0, child.log_text()
    assert window_state(path) == rebuild_case.new
    ready = child.find("READY")[0].at
    commit = [e.at for e in child.events() if e.detail == "COMMIT"]
    print(
        f"UNINTERRUPTED: {(child.find('BUILT')[0].at - ready) * 1000:.0f} ms from READY to "
        f"BUILT, COMMIT took {(commit[1] - commit[0]) * 1000:.1f} ms"
    )


def classify(state: WindowState, case: RebuildCase) -> dict[dt.date, str]:
    """Per day: 'old' or 'new' when rows and evidence agree on one of them, else what is off."""
    verdicts = {}
    for day in JANUARY:
        rows = state.table.get(day)
        evidence = state.evidence.get(day)
        rows_are = (
            "old" if rows == case.old.table[day] else "new" if rows == case.new.table[day] else "?"
        )
        evidence_is = (
            "old"
            if evidence == case.old.evidence[day]
            else "new"
            if evidence == case.new.evidence[day]
            else "?"
        )
        verdicts[day] = rows_are if rows_are == evidence_is else f"rows {rows_are}/ev {evidence_is}"
    return verdicts


def landed(child: Child) -> str:
    """Where the process was when it died: its last logged event."""
    events = [e for e in child.events() if e.name in {"BEFORE", "AFTER", "PAUSED", "BUILT"}]
    events += [e for e in child.events() if e.name in {"IN_TRANSACTION", "CLOSED", "EXIT"}]
    events.sort(key=lambda e: e.at)
    if not events:
        return "before the build started"
    last = events[-1]
    return f"{last.name} {last.detail[:48]}".strip()


def wal_size(path: Path) -> int:
    """Bytes in the write-ahead log the killed process left (0: none or checkpointed)."""
    wal = Path(f"{path}.wal")
    return wal.stat().st_size if wal.exists() else 0


def assert_consistent_after_kill(path: Path, case: RebuildCase, child: Child | None) -> str:
    """The checks of ARCHITECTURE.md §4.1 after a kill; returns 'old' or 'new'."""
    state = window_state(path)
    verdicts = classify(state, case)
    assert set(verdicts.values()) <= {"old", "new"}, verdicts
    assert len(set(verdicts.values())) == 1, f"the window is mixed: {verdicts}"
    (observed,) = set(verdicts.values())
    assert state.evidence_rows_per_day == dict.fromkeys(JANUARY, 1)
    for day in JANUARY:
        assert state.evidence[day][0] == state.table[day][0]  # evidence row_count = rows
        assert state.run_ids[day] == (INITIAL_RUN if observed == "old" else KILLED_RUN)
    assert state.duplicate_keys == 0
    assert state.outside == case.old.outside  # nothing outside the window moved
    # The log says whether COMMIT had returned: then the rows must be new; before it started,
    # they must be old.
    if child is not None:
        committed = any(e.name == "AFTER" and e.detail == "COMMIT" for e in child.events())
        committing = any(e.name == "BEFORE" and e.detail == "COMMIT" for e in child.events())
        if committed:
            assert observed == "new", child.log_text()
        elif not committing:
            assert observed == "old", child.log_text()
    # The next run completes and leaves the new content.
    with duckdb.connect(str(path)) as conn:
        build_window(conn, plan_named("fct_orders"), "v2", FIRST, JAN_STOP, KILLED_RUN)
    assert window_state(path) == case.new
    return observed


@pytest.mark.parametrize("point", list(PAUSE_POINTS))
def test_sigkill_at_a_statement_of_a_31_day_rebuild_leaves_every_day_old_or_new(
    zygote, rebuild_case, tmp_path, point
):
    statement, expected = PAUSE_POINTS[point]
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    options = {"pause_after": statement} if statement else {"pause_in_write_evidence": True}
    child = zygote.fork(path, REBUILD_STEPS, **options)
    try:
        child.wait_for("PAUSED")
    finally:
        child.kill()
    where, wal = landed(child), wal_size(path)
    observed = assert_consistent_after_kill(path, rebuild_case, child)
    print(f"KILL {point}: last event '{where}', WAL {wal} B: every day {observed}")
    assert observed == expected


@pytest.mark.parametrize("ms", TIMED_MS)
def test_sigkill_at_a_moment_of_a_31_day_rebuild_leaves_every_day_old_or_new(
    zygote, rebuild_case, tmp_path, ms
):
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    child = zygote.fork(path, REBUILD_STEPS)
    try:
        ready = child.wait_for("READY")
        while time.monotonic() < ready.at + ms / 1000:
            pass  # busy-wait: sleep() overshoots by more than a statement takes
    finally:
        child.kill()
    where, wal = landed(child), wal_size(path)
    observed = assert_consistent_after_kill(path, rebuild_case, child)
    print(f"KILL +{ms} ms after READY: last event '{where}', WAL {wal} B: every day {observed}")


@pytest.mark.parametrize("point", list(RACE_POINTS))
def test_sigkill_racing_a_statement_of_a_31_day_rebuild_leaves_every_day_old_or_new(
    zygote, rebuild_case, tmp_path, point
):
    name, statement = RACE_POINTS[point]
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    child = zygote.fork(path, REBUILD_STEPS)
    try:
        child.wait_for(name, statement, spin=True)
    finally:
        child.kill()
    where, wal = landed(child), wal_size(path)
    observed = assert_consistent_after_kill(path, rebuild_case, child)
    print(f"KILL {point}: last event '{where}', WAL {wal} B: every day {observed}")


@pytest.fixture(scope="module")
def committed_wal(zygote, rebuild_case, tmp_path_factory) -> tuple[Path, bytes]:
    """The file and the write-ahead log a process left when killed right after COMMIT."""
    path = copy_warehouse(rebuild_case.path, tmp_path_factory.mktemp("wal") / "w.duckdb")
    child = zygote.fork(path, REBUILD_STEPS, pause_after="COMMIT")
    try:
        child.wait_for("PAUSED")
    finally:
        child.kill()
    wal = Path(f"{path}.wal").read_bytes()
    assert len(wal) > 100_000  # the window's rows are in the log, not yet in the file
    return path, wal


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99, 0.9999, 1.0])
def test_a_write_ahead_log_cut_short_mid_write_replays_none_of_the_window(
    committed_wal, rebuild_case, tmp_path, fraction
):
    """A process killed while writing its COMMIT to the WAL leaves a prefix of it: replaying
    any proper prefix must give the old window, the whole log the new one."""
    source, wal = committed_wal
    path = tmp_path / "w.duckdb"
    shutil.copyfile(source, path)  # the file as the killed process left it, without its WAL
    Path(f"{path}.wal").write_bytes(wal[: int(len(wal) * fraction)])
    observed = assert_consistent_after_kill(path, rebuild_case, None)
    print(f"WAL cut at {fraction:.2%} of {len(wal)} B: every day {observed}")
    assert observed == ("new" if fraction == 1.0 else "old")


# --------------------------------------------------------------------------------------------
# 2. SIGKILL during promotion and rollback

PROMOTE_STEPS = [["promote", "fct_orders", "v2", FIRST, LAST]]
ROLLBACK_STEPS = [["rollback", "fct_orders", FIRST, LAST]]
PROMOTION_POINTS = {
    # name: (steps, promoted in this process first, pause after, expected version, log rows)
    "promote_after_view_swap": (PROMOTE_STEPS, False, "CREATE OR REPLACE VIEW", "legacy", 0),
    "promote_after_log_insert": (
        PROMOTE_STEPS,
        False,
        "INSERT INTO backfill.promotions",
        "legacy",
        0,
    ),
    "promote_after_commit": (PROMOTE_STEPS, False, "COMMIT", "v2", 1),
    "rollback_after_view_swap": (ROLLBACK_STEPS, True, "CREATE OR REPLACE VIEW", "v2", 1),
    "rollback_after_commit": (ROLLBACK_STEPS, True, "COMMIT", "legacy", 2),
}


def published_state(path: Path) -> tuple[str, str, int]:
    """(version the view selects from, version the log says, log rows); view rows = table."""
    plan = plan_named("fct_orders")
    with duckdb.connect(str(path)) as conn:
        definition = view_definition(conn)
        shown = [v for v in ("legacy", "v2") if f"fct_orders__{v}" in definition]
        assert len(shown) == 1, definition
        assert table_checksum(conn, "analytics.fct_orders") == table_checksum(
            conn, plan.model_table(shown[0])
        )
        return shown[0], published_version(conn, plan), log_rows(conn)


@pytest.mark.parametrize("point", list(PROMOTION_POINTS))
def test_sigkill_during_promotion_leaves_view_and_log_on_one_version(
    zygote, built_base, tmp_path, point
):
    steps, promoted_first, statement, expected, rows = PROMOTION_POINTS[point]
    path = copy_warehouse(built_base, tmp_path / "w.duckdb")
    plan = plan_named("fct_orders").with_window(FIRST, LAST)
    if promoted_first:
        with duckdb.connect(str(path)) as conn:
            promote(conn, plan, "v2", "", "before the rollback", "run-p")
    before = published_state(path)
    child = zygote.fork(path, steps, pause_after=statement)
    try:
        child.wait_for("PAUSED", timeout=120)
    finally:
        child.kill()
    view, logged, log_count = published_state(path)
    print(f"KILL {point}: view on {view}, log says {logged}, {log_count} log row(s)")
    assert view == logged == expected
    assert log_count == rows
    if expected == before[0]:
        assert (view, logged, log_count) == before
    # The next move works after the crash: the same promotion or rollback, run again.
    with duckdb.connect(str(path)) as conn:
        if expected == "legacy":
            promote(conn, plan, "v2", "", "after the crash", "run-again")
    assert published_state(path)[:2] == ("v2", "v2")


# --------------------------------------------------------------------------------------------
# 3. The warehouse held by another process


@pytest.mark.parametrize("name", ["backfill.duckdb", "raw.duckdb", "analytics.db"])
def test_a_warehouse_file_named_like_a_schema_is_refused_before_anything_is_written(
    name, tmp_path, monkeypatch, capsys
):
    """DuckDB names the catalog after the file; ``backfill.duckdb`` would make every
    ``backfill.<table>`` ambiguous and fail half-way. Refused up front, naming the fix."""
    path = tmp_path / name
    with pytest.raises(WarehouseNameError) as error:
        connect_waiting(str(path), 1)
    assert "rename the file" in str(error.value) and str(path) in str(error.value)
    with pytest.raises(WarehouseNameError):
        open_read_only(str(path))
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    code = cli.main(["seed", "--start", "2024-01-01", "--end", "2024-01-02"])
    assert code == 1
    assert "BACKFILL_WAREHOUSE" in capsys.readouterr().err
    assert not path.exists()
    # Positive control: the same folder with the default file name takes the seed.
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    assert cli.main(["seed", "--start", "2024-01-01", "--end", "2024-01-02"]) == 0


def test_the_default_warehouse_file_name_works_with_the_projects_schemas(tmp_path, monkeypatch):
    """What the quick start opens: the default file name must not clash with a schema."""
    monkeypatch.delenv("BACKFILL_WAREHOUSE", raising=False)
    name = Path(settings.warehouse_path()).name
    with closing(connect_waiting(str(tmp_path / name), 1)) as conn:
        ensure_evidence(conn)
        assert conn.execute("SELECT count(*) FROM backfill.partition_evidence").fetchone() == (0,)


def test_connect_waiting_names_the_process_holding_the_warehouse(built_base, tmp_path):
    path = copy_warehouse(built_base, tmp_path / "w.duckdb")
    with analyst_session(path) as holder:
        started = time.monotonic()
        with pytest.raises(WarehouseBusyError) as error:
            connect_waiting(str(path), 3)
        waited = time.monotonic() - started
    message = str(error.value)
    print(f"LOCK connect_waiting: {waited:.1f} s: {message}")
    assert 2.9 <= waited <= 6, waited
    assert f"PID {holder.pid}" in message
    assert str(path) in message
    assert "close that DuckDB session" in message and "re-execute this run" in message
    # Positive control: with the holder gone the same call connects at once.
    started = time.monotonic()
    connect_waiting(str(path), 3).close()
    assert time.monotonic() - started < 2


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message of every step failure, with its causes and contexts."""
    parts = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        errors = [event.step_failure_data.error]
        while errors:
            error = errors.pop()
            if error is not None:
                parts.append(error.message)
                errors += [error.cause, error.context]
    return "\n".join(parts)


def materialize_day(path: Path, instance, day: str, lock_wait: int):
    asset = build_model_asset(plan_named("fct_orders"), "v2")
    return dg.materialize(
        [asset],
        instance=instance,
        partition_key=day,
        resources={"warehouse": Warehouse(database=str(path), lock_wait_seconds=lock_wait)},
        run_config=QUIET,
        raise_on_error=False,
    )


def test_run_against_a_held_warehouse_fails_naming_the_holder_and_writes_nothing(
    built_base, tmp_path, instance
):
    path = copy_warehouse(built_base, tmp_path / "w.duckdb")
    before = snapshot(path)
    with analyst_session(path) as holder:
        started = time.monotonic()
        result = materialize_day(path, instance, "2024-01-15", lock_wait=3)
        waited = time.monotonic() - started
    assert not result.success
    text = failure_text(result)
    print(f"LOCK run failed after {waited:.1f} s")
    assert "WarehouseBusyError" in text
    assert f"PID {holder.pid}" in text
    assert "Nothing was written" in text and "close that DuckDB session" in text
    assert 2.9 <= waited <= 20, waited
    assert snapshot(path) == before
    assert instance.get_materialized_partitions(V2_FCT_ORDERS) == set()


def test_run_waits_for_a_holder_that_lets_go_and_succeeds(built_base, tmp_path, instance):
    path = copy_warehouse(built_base, tmp_path / "w.duckdb")
    with analyst_session(path, release_after=2):
        started = time.monotonic()
        result = materialize_day(path, instance, "2024-01-15", lock_wait=30)
        waited = time.monotonic() - started
    assert result.success
    print(f"LOCK run succeeded after {waited:.1f} s")
    assert waited >= 1.5, "the run did not have to wait: the test proves nothing"
    with duckdb.connect(str(path)) as conn:
        run_ids = dict(day_evidence_run_ids(conn))
    assert run_ids[dt.date(2024, 1, 15)] == result.run_id
    assert {d for d, r in run_ids.items() if r == result.run_id} == {dt.date(2024, 1, 15)}
    assert instance.get_materialized_partitions(V2_FCT_ORDERS) == {"2024-01-15"}


def day_evidence_run_ids(conn) -> list[tuple]:
    return conn.execute(
        "SELECT partition_start::DATE AS day, run_id FROM backfill.partition_evidence "
        "WHERE model = 'fct_orders' AND version = 'v2'"
    ).fetchall()


# --------------------------------------------------------------------------------------------
# 4. Disk full and a read-only warehouse


@pytest.fixture
def year_warehouse(tmp_path: Path) -> Path:
    """2024 at 400 orders a day (146k orders: more than one DuckDB row group per build),
    both versions built, the view on legacy, and then every 50th order's amount corrected."""
    path = tmp_path / "year.duckdb"
    plan = plan_named("fct_orders")
    with duckdb.connect(str(path)) as conn:
        generate(conn, FIRST, dt.date(2024, 12, 31), orders_per_day=400, seed=SEED)
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, FIRST, dt.date(2025, 1, 1), INITIAL_RUN)
        ensure_view(conn, plan)
        conn.execute("UPDATE raw.orders SET amount = amount + 1 WHERE order_id % 50 = 0")
    return path


def test_disk_full_while_a_large_window_is_written_raises_and_changes_nothing(
    zygote, year_warehouse
):
    """RLIMIT_FSIZE at the file's size + 64 KiB: the 366-day rebuild (146k rows) is written to
    the database file during the INSERT, which fails; nothing may change."""
    path = year_warehouse
    before = snapshot(path)
    limit = path.stat().st_size + 64 * 1024
    steps = [["build", "fct_orders", "v2", FIRST, dt.date(2025, 1, 1)]]
    child = zygote.fork(path, steps, fsize_limit=limit)
    assert child.exit_code() == 1, child.log_text()
    (error,) = child.find("ERROR")
    print(f"DISK FULL (large window): {error.detail[:200]}")
    assert error.detail.startswith("IOException")
    assert "File too large" in error.detail
    # It was the INSERT of the window's rows (written straight to the file) that failed.
    started = {e.detail for e in child.events() if e.name == "BEFORE"}
    finished = {e.detail for e in child.events() if e.name == "AFTER"}
    (failed,) = started - finished
    assert failed.startswith('INSERT INTO "models"."fct_orders__v2"'), failed
    assert "COMMIT" not in started
    assert not child.find("BUILT")
    assert snapshot(path) == before
    # Positive control: without the limit the same rebuild changes the table.
    with duckdb.connect(str(path)) as conn:
        build_window(conn, plan_named("fct_orders"), "v2", FIRST, dt.date(2025, 1, 1), "r2")
    after = snapshot(path)
    assert after.tables[1] != before.tables[1]
    assert after.view_sql == before.view_sql and after.view_rows == before.view_rows


@dataclass(frozen=True)
class FailedCommit:
    child: Child
    before: WindowState
    after: WindowState


@pytest.fixture(scope="module")
def failed_commit(zygote, rebuild_case, tmp_path_factory) -> FailedCommit:
    """A 31-day rebuild whose WAL cannot grow past 64 KiB: the rows stay in memory until COMMIT,
    and COMMIT's write to the WAL fails."""
    path = copy_warehouse(rebuild_case.path, tmp_path_factory.mktemp("commit") / "w.duckdb")
    child = zygote.fork(path, REBUILD_STEPS, fsize_limit=64 * 1024)
    assert child.exit_code() == 1, child.log_text()
    return FailedCommit(child, rebuild_case.old, window_state(path))


def test_disk_full_at_commit_leaves_the_previous_content(failed_commit):
    child = failed_commit.child
    details = " | ".join(e.detail for e in child.events() if e.name in {"ERROR", "CONTEXT"})
    print(f"DISK FULL (at COMMIT): {details[:400]}")
    assert any(e.name == "BEFORE" and e.detail == "COMMIT" for e in child.events())
    assert not any(e.name == "AFTER" and e.detail == "COMMIT" for e in child.events())
    assert "File too large" in details  # the WAL write failed ...
    assert failed_commit.after == failed_commit.before  # ... and nothing changed


def test_disk_full_at_commit_reports_the_write_failure(failed_commit):
    (error,) = failed_commit.child.find("ERROR")
    assert "File too large" in error.detail, error.detail


def test_disk_full_after_commit_keeps_the_committed_window(zygote, rebuild_case, tmp_path):
    """The limit lets the WAL take the commit but not the checkpoint that closing starts."""
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    limit = path.stat().st_size + 64 * 1024
    child = zygote.fork(path, REBUILD_STEPS, fsize_limit=limit)
    code = child.exit_code()
    wal = Path(f"{path}.wal")
    print(
        f"DISK FULL (after COMMIT): exit {code}, "
        f"WAL left: {wal.stat().st_size if wal.exists() else 0} bytes"
    )
    assert code == 0, child.log_text()
    assert window_state(path) == rebuild_case.new


def test_read_only_warehouse_refuses_build_and_promotion_and_changes_nothing(built_base, tmp_path):
    path = copy_warehouse(built_base, tmp_path / "w.duckdb")
    before = path.read_bytes()
    plan = plan_named("fct_orders").with_window(FIRST, LAST)
    conn = duckdb.connect(str(path), read_only=True)
    try:
        with pytest.raises(duckdb.Error, match="read-only mode") as build_error:
            build_window(conn, plan, "v2", FIRST, JAN_STOP, "read-only")
        with pytest.raises(duckdb.Error, match="read-only mode"):
            promote(conn, plan, "v2", "", "read-only", "read-only")
    finally:
        conn.close()
    print(f"READ ONLY: {type(build_error.value).__name__}: {build_error.value}")
    assert path.read_bytes() == before
    # Positive control: a read-write connection to the same file promotes.
    with duckdb.connect(str(path)) as conn:
        promote(conn, plan, "v2", "", "read-write", "read-write")
        assert published_version(conn, plan) == "v2"


# --------------------------------------------------------------------------------------------
# 5. The same window backfilled twice at once


def test_two_backfills_of_the_same_window_at_once_are_serialized_and_equal_one(
    zygote, rebuild_case, tmp_path
):
    path = copy_warehouse(rebuild_case.path, tmp_path / "w.duckdb")
    clean = copy_warehouse(rebuild_case.path, tmp_path / "clean.duckdb")
    plan = plan_named("fct_orders")
    with duckdb.connect(str(clean)) as conn:
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, FIRST, JAN_STOP, "clean")
    steps = [["build", "fct_orders", v, FIRST, JAN_STOP] for v in ("legacy", "v2")]
    start_at = time.monotonic() + 1.0
    # Each writer holds its transaction open 1.5 s (a slow chunk), so the other must wait.
    options = {"start_at": start_at, "lock_wait": 60, "pause_after": "BEGIN", "pause_seconds": 1.5}
    twins = [zygote.fork(path, steps, run_id=f"twin-{n}", **options) for n in ("a", "b")]
    try:
        codes = [twin.exit_code() for twin in twins]
    finally:
        for twin in twins:
            twin.kill()
    assert codes == [0, 0], [t.log_text() for t in twins]
    first, second = sorted(twins, key=lambda t: t.find("READY")[0].at)
    attempts = [t.find("ATTEMPT")[0].at for t in twins]
    waited = second.find("READY")[0].at - second.find("ATTEMPT")[0].at
    print(
        f"TWINS: attempts {abs(attempts[0] - attempts[1]) * 1000:.0f} ms apart; first held "
        f"{first.find('CLOSED')[0].at - first.find('READY')[0].at:.1f} s; second waited "
        f"{waited:.1f} s"
    )
    assert abs(attempts[0] - attempts[1]) < 0.5  # they really started together
    assert first.find("CLOSED")[0].at <= second.find("READY")[0].at  # never both writing
    assert waited >= 1.0  # the second one waited for the first
    with duckdb.connect(str(path)) as conn, duckdb.connect(str(clean)) as reference:
        for table in (LEGACY_TABLE, V2_TABLE):
            assert day_checksums(conn, table, FIRST, JAN_STOP) == day_checksums(
                reference, table, FIRST, JAN_STOP
            )
        assert evidence_checksum(conn, all_columns=False) == evidence_checksum(
            reference, all_columns=False
        )
        writers = conn.execute(
            "SELECT DISTINCT run_id FROM backfill.partition_evidence WHERE partition_start < ?",
            [JAN_STOP],
        ).fetchall()
    # The second writer replaced the whole window: its run id is on every day of both versions.
    assert writers == [("twin-a" if second is twins[0] else "twin-b",)]


# --------------------------------------------------------------------------------------------
# Bad input not covered elsewhere


def test_text_amounts_under_an_existing_model_are_refused_and_change_nothing(generated, fct_orders):
    build_window(generated, fct_orders, "v2", FIRST, JAN_STOP, "good")
    before = (table_checksum(generated, V2_TABLE), evidence_checksum(generated, all_columns=True))
    generated.execute("ALTER TABLE raw.orders ALTER amount TYPE VARCHAR")
    with pytest.raises(BuildError) as error:
        build_window(generated, fct_orders, "v2", FIRST, JAN_STOP, "bad")
    message = str(error.value)
    assert "amount is VARCHAR" in message and "a measure must be a number" in message
    assert "Fix:" in message
    assert (
        table_checksum(generated, V2_TABLE),
        evidence_checksum(generated, all_columns=True),
    ) == before


@pytest.fixture
def text_amounts(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A warehouse whose raw.orders was created by hand with ``amount VARCHAR``, then filled
    with generated data (January to March, 60 orders a day); nothing built yet."""
    ensure_schema(conn)
    columns = {**TABLES["raw.orders"], "amount": "VARCHAR"}
    conn.execute("CREATE SCHEMA raw")
    conn.execute(
        "CREATE TABLE raw.orders (" + ", ".join(f"{c} {t}" for c, t in columns.items()) + ")"
    )
    generate(conn, FIRST, LAST, orders_per_day=60, seed=SEED)
    assert conn.execute(
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'orders' AND column_name = 'amount'"
    ).fetchone() == ("VARCHAR",)
    return conn


def test_text_amounts_fail_the_daily_revenue_build_and_write_nothing(text_amounts, daily_revenue):
    with pytest.raises(BuildError) as error:
        build_window(text_amounts, daily_revenue, "v2", FIRST, JAN_STOP, "text")
    message = str(error.value)
    assert "sum(VARCHAR)" in message
    assert "Fix:" in message
    assert not table_exists(text_amounts, "models", "daily_revenue__v2")
    assert evidence_checksum(text_amounts, all_columns=True)[0] == 0


def test_text_amounts_are_refused_on_the_first_fct_orders_build(text_amounts, fct_orders):
    try:
        with pytest.raises(BuildError, match="amount"):
            build_window(text_amounts, fct_orders, "v2", FIRST, JAN_STOP, "text")
    finally:
        print(
            "TEXT AMOUNTS first build: models.fct_orders__v2 exists:",
            table_exists(text_amounts, "models", "fct_orders__v2"),
        )
    assert not table_exists(text_amounts, "models", "fct_orders__v2")


def build_all(conn, run_id: str) -> None:
    for name in ("daily_revenue", "fct_orders"):
        for version in ("legacy", "v2"):
            build_window(conn, plan_named(name), version, FIRST, STOP, run_id)


def model_checksums(conn) -> tuple:
    return tuple(
        table_checksum(conn, plan_named(name).model_table(version))
        for name in ("daily_revenue", "fct_orders")
        for version in ("legacy", "v2")
    )


def repairs(conn) -> list[tuple[str, dt.date]]:
    scan = find_repairs(conn, [plan_named("daily_revenue"), plan_named("fct_orders")])
    return [(r.plan, r.partition) for r in scan.repairs]


def add_order(conn, order_id: int, order_ts: str | None) -> None:
    conn.execute(
        "INSERT INTO raw.orders VALUES (?, 1, 'north', CAST(? AS TIMESTAMP), 42.00, 'placed', "
        "TIMESTAMP '2024-04-02 09:00:00')",
        [order_id, order_ts],
    )


def test_order_without_order_ts_lands_in_no_day_and_triggers_no_repair(generated):
    build_all(generated, "before")
    before = model_checksums(generated)
    add_order(generated, 990000001, None)
    assert repairs(generated) == []
    build_all(generated, "after")
    assert model_checksums(generated) == before
    # Positive control: the same order with a time lands on its day and is a repair.
    generated.execute("UPDATE raw.orders SET order_ts = TIMESTAMP '2024-01-15 10:00:00' "
                      "WHERE order_id = 990000001")  # fmt: skip
    assert repairs(generated) == [
        ("daily_revenue", dt.date(2024, 1, 15)),
        ("fct_orders", dt.date(2024, 1, 15)),
    ]
    build_all(generated, "after")
    assert model_checksums(generated) != before


def test_resend_with_null_order_ts_does_not_silently_drop_the_order(generated, fct_orders):
    day = dt.date(2024, 1, 10)
    order_id = generated.execute(
        "SELECT order_id FROM raw.orders WHERE CAST(order_ts AS DATE) = ? GROUP BY order_id "
        "HAVING count(*) = 1 AND any_value(status) = 'placed' ORDER BY order_id LIMIT 1",
        [day],
    ).fetchone()[0]
    build_window(generated, fct_orders, "v2", FIRST, JAN_STOP, "before")
    generated.execute(
        "INSERT INTO raw.orders SELECT order_id, customer_id, region, NULL, amount, 'shipped', "
        "TIMESTAMP '2024-04-02 09:00:00' FROM raw.orders WHERE order_id = ?",
        [order_id],
    )
    assert ("fct_orders", day) in repairs(generated)  # the day is seen to change ...
    build_window(generated, fct_orders, "v2", FIRST, JAN_STOP, "repair")
    # ... and the empty order_ts is a failed, blocking window check naming the row, so the
    # version cannot be published with the order missing.
    checks = {c.name: c for c in run_window_checks(generated, fct_orders, "v2")}
    invalid = checks["sources_are_valid"]
    assert not invalid.passed and invalid.blocking
    assert "raw.orders.order_ts empty in 1 row(s)" in invalid.summary
    assert str(order_id) in invalid.summary
    gate = evaluate_gate(generated, fct_orders, "v2")
    assert any(p.startswith("sources_are_valid") for p in gate.problems)


@pytest.mark.parametrize("order_ts", ["2023-06-01 12:00:00", "2030-01-01 12:00:00"])
def test_orders_outside_the_partitions_land_in_no_day_and_trigger_no_repair(generated, order_ts):
    build_all(generated, "before")
    before = model_checksums(generated)
    add_order(generated, 990000002, order_ts)
    assert repairs(generated) == []
    build_all(generated, "after")
    assert model_checksums(generated) == before
    with pytest.raises(BuildError, match="before the first partition"):
        build_window(generated, plan_named("fct_orders"), "v2", dt.date(2023, 6, 1), FIRST, "early")
    # Positive control: an order on a built day is a repair and changes the models.
    add_order(generated, 990000003, "2024-01-15 10:00:00")
    assert repairs(generated) == [
        ("daily_revenue", dt.date(2024, 1, 15)),
        ("fct_orders", dt.date(2024, 1, 15)),
    ]


@pytest.fixture
def dagster_warehouse(built_base: Path, warehouse_file: Path) -> Path:
    """The built warehouse at the path the code location reads (BACKFILL_WAREHOUSE)."""
    return copy_warehouse(built_base, warehouse_file)


def v2_job():
    return load_definitions().resolve_implicit_global_asset_job_def()


@pytest.mark.parametrize("key", ["2024-13-01", "2024-02-30", "20240115", "2023-12-31"])
def test_partition_key_that_is_not_a_partition_is_refused_before_any_run(
    dagster_warehouse, instance, key
):
    before = snapshot(dagster_warehouse)
    with pytest.raises(dg.DagsterUnknownPartitionError, match=key):
        v2_job().execute_in_process(
            instance=instance, asset_selection=[V2_FCT_ORDERS], partition_key=key, run_config=QUIET
        )
    assert instance.get_runs() == []
    assert snapshot(dagster_warehouse) == before


def test_a_real_partition_key_runs_positive_control(dagster_warehouse, instance):
    result = v2_job().execute_in_process(
        instance=instance,
        asset_selection=[V2_FCT_ORDERS],
        partition_key="2024-01-15",
        run_config=QUIET,
    )
    assert result.success
    with duckdb.connect(str(dagster_warehouse)) as conn:
        run_ids = dict(day_evidence_run_ids(conn))
    assert run_ids[dt.date(2024, 1, 15)] == result.run_id


def test_reversed_or_unreadable_range_tags_fail_and_write_nothing(dagster_warehouse, instance):
    before = snapshot(dagster_warehouse)
    reversed_tags = {RANGE_START_TAG: "2024-01-20", RANGE_END_TAG: "2024-01-10"}
    with pytest.raises(ValueError, match="reversed"):
        range_tags(dt.date(2024, 1, 20), dt.date(2024, 1, 10))  # the helper refuses ...
    result = v2_job().execute_in_process(  # ... and hand-written tags fail the run
        instance=instance,
        asset_selection=[V2_FCT_ORDERS],
        tags=reversed_tags,
        run_config=QUIET,
        raise_on_error=False,
    )
    assert not result.success
    text = failure_text(result)
    print(f"REVERSED RANGE: {text.splitlines()[-1]}")
    assert "BuildError" in text and "end must be after start" in text
    with pytest.raises(ValueError, match="does not match format"):
        v2_job().execute_in_process(
            instance=instance,
            asset_selection=[V2_FCT_ORDERS],
            tags={RANGE_START_TAG: "2024-01-10", RANGE_END_TAG: "soon"},
            run_config=QUIET,
        )
    assert snapshot(dagster_warehouse) == before
    assert instance.get_materialized_partitions(V2_FCT_ORDERS) == set()
    # Positive control: the same range in order builds its 11 days.
    result = v2_job().execute_in_process(
        instance=instance,
        asset_selection=[V2_FCT_ORDERS],
        tags=range_tags(dt.date(2024, 1, 10), dt.date(2024, 1, 20)),
        run_config=QUIET,
    )
    assert result.success
    assert len(instance.get_materialized_partitions(V2_FCT_ORDERS)) == 11


# --------------------------------------------------------------------------------------------
# Safety


def test_the_webserver_binds_to_localhost_only():
    assert cli.parser().parse_args(["ui"]).host == "127.0.0.1"
    source = inspect.getsource(dagster_dev.DagsterDev)
    assert re.search(r'"-h",\s*"127\.0\.0\.1"', source)
    assert "0.0.0.0" not in source
    assert "0.0.0.0" not in inspect.getsource(cli)


# DELETE / UPDATE / TRUNCATE / DROP / ALTER / CREATE OR REPLACE / INSERT OR REPLACE on the log.
REWRITES_LOG = re.compile(
    r"\b(DELETE\s+FROM|UPDATE|TRUNCATE(\s+TABLE)?|DROP\s+TABLE(\s+IF\s+EXISTS)?|ALTER\s+TABLE|"
    r"CREATE\s+OR\s+REPLACE\s+TABLE|INSERT\s+OR\s+REPLACE\s+INTO)\s+"
    r'"?backfill"?\s*\.\s*"?promotions\b',
    re.IGNORECASE,
)


def test_nothing_in_the_package_rewrites_the_promotions_log():
    for sample in (
        "DELETE FROM backfill.promotions WHERE model = ?",
        'update "backfill"."promotions" set actor = 1',
        "TRUNCATE backfill.promotions",
        "DROP TABLE IF EXISTS backfill.promotions",
    ):
        assert REWRITES_LOG.search(sample), sample  # the pattern finds what it should
    assert not REWRITES_LOG.search("INSERT INTO backfill.promotions VALUES (?)")
    package = PROJECT_DIR / "backfill_assets"
    files = sorted([*package.rglob("*.py"), *package.rglob("*.sql")])
    texts = {path: path.read_text() for path in files}
    assert any("INSERT INTO backfill.promotions" in t for t in texts.values())  # files were read
    offenders = [
        f"{path.relative_to(PROJECT_DIR)}: {match.group(0)}"
        for path, text in texts.items()
        for match in REWRITES_LOG.finditer(text)
    ]
    assert offenders == []
