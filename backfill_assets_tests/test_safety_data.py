"""Safety of the data itself (issue 15): deterministic versions, damaged and missing warehouses.

Everything runs on real DuckDB files under ``tmp_path``: the example's generated data, model
tables built with ``build_window``, files damaged by writing bytes into them, and the command
line through ``cli.main`` (plus one run of the installed ``backfill-assets`` script). Expected
values come from SQL written here over the raw rows, or from the bytes of the files themselves.

1. Tied re-sends: an order's versions that tie on every sort key (ingested_at, order_ts, amount,
   status) but differ elsewhere must rank the same way however the rows are stored, so a rebuild
   gives identical tables and legacy, v2 and the explained-difference rules pick the same row.
2. A damaged warehouse (truncated, random bytes, empty, one model-table block overwritten) is
   reported by every command, naming the file and the fix, and its bytes are left as they were.
3. A missing warehouse is created only by the commands that write one.
"""

import datetime as dt
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from backfill_assets import cli, warehouse
from backfill_assets.build import build_window
from backfill_assets.component.resources import session
from backfill_assets.example.generator import generate
from backfill_assets.reconcile import reconcile
from backfill_assets.warehouse import (
    WarehouseDamagedError,
    connect_waiting,
    open_checked,
    open_read_only,
)
from backfill_assets_tests.helpers import plan_named

pytestmark = pytest.mark.reliability

FEB = dt.date(2024, 2, 1)
MAR = dt.date(2024, 3, 1)
FIRST = dt.date(2024, 1, 1)
END = dt.date(2024, 4, 1)  # exclusive
VERSIONS = ("legacy", "v2")
PLANS = ("daily_revenue", "fct_orders")


def checksum(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[int, str]:
    """Row count and md5 of every row as text, in a fixed order: equal iff the contents are."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
    ).fetchone()


# --------------------------------------------------------------------------------------------
# 1. Tied re-sends rank the same way whatever the storage order

# Two extra copies of the first and of the latest version of a third of February's orders (and
# of every refunded one, whose first version places legacy's refund): same order_id,
# ingested_at, order_ts, amount and status, another region and customer. Ranked on those keys
# alone, the three rows of a tie are interchangeable and the scan order picks one.
TIE_RESENDS = """
INSERT INTO raw.orders
WITH feb AS (
    SELECT DISTINCT order_id FROM raw.orders
    WHERE order_ts >= $feb AND order_ts < $mar
      AND (order_id % 3 = 0 OR order_id IN (SELECT order_id FROM raw.refunds))
),
ends AS (
    SELECT o.*,
           ingested_at = max(ingested_at) OVER (PARTITION BY order_id) AS is_latest,
           ingested_at = min(ingested_at) OVER (PARTITION BY order_id) AS is_first
    FROM raw.orders AS o JOIN feb USING (order_id)
)
SELECT order_id, customer_id + copy, 'tie_' || copy, order_ts, amount, status, ingested_at
FROM ends, range(1, 3) AS copies(copy)
WHERE is_latest OR is_first
"""

# The same rows stored in another order, as a reload or a compaction leaves them.
RESTORE_SHUFFLED = """
CREATE OR REPLACE TABLE raw.orders AS
SELECT * FROM raw.orders ORDER BY hash(order_id, region, customer_id, ingested_at, $round)
"""


def add_tied_resends(conn: duckdb.DuckDBPyConnection) -> int:
    """Insert the ties; return how many orders now have a tie on every sort key."""
    conn.execute(TIE_RESENDS, {"feb": FEB, "mar": MAR})
    return conn.execute(
        "SELECT count(DISTINCT order_id) FROM (SELECT order_id FROM raw.orders "
        "GROUP BY order_id, ingested_at, order_ts, amount, status "
        "HAVING count(DISTINCT (region, customer_id)) > 1)"
    ).fetchone()[0]


def shuffle_orders(conn: duckdb.DuckDBPyConnection, round_: int) -> None:
    before = checksum(conn, "raw.orders")
    conn.execute(RESTORE_SHUFFLED, {"round": round_})
    assert checksum(conn, "raw.orders") == before  # the same rows, only stored differently


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("plan_name", PLANS)
def test_six_rebuilds_of_a_month_with_tied_resends_are_identical(generated, plan_name, version):
    conn = generated
    plan = plan_named(plan_name)
    assert add_tied_resends(conn) > 100
    sums = []
    for round_ in range(6):
        shuffle_orders(conn, round_)
        build_window(conn, plan, version, FEB, MAR, f"run-{round_}")
        sums.append(checksum(conn, plan.model_table(version)))
    print(plan_name, version, sums)
    assert sums[0][0] > 0
    assert sums == [sums[0]] * 6
    if plan_name == "fct_orders":
        # One row per order, and a tied order shows one of its tied rows.
        per_order = conn.execute(
            f"SELECT count(*), count(DISTINCT order_id), "
            f"count(*) FILTER (WHERE region LIKE 'tie_%') FROM {plan.model_table(version)}"
        ).fetchone()
        assert per_order[0] == per_order[1] and per_order[2] > 0


def test_tied_resends_leave_the_reconciliation_fully_explained(generated):
    """v2 and the rules each pick an order's latest (and first) version; stored in another order
    between the build and the reconciliation, the ties must still be picked the same way."""
    conn = generated
    add_tied_resends(conn)
    plan = plan_named("daily_revenue").with_window(FIRST, END - dt.timedelta(days=1))
    for version in VERSIONS:
        shuffle_orders(conn, 10 + len(version))
        build_window(conn, plan, version, FIRST, END, "run-1")
    shuffle_orders(conn, 99)
    recon = reconcile(conn, plan)
    unexplained = recon.table[recon.table["residual"].abs() > 1e-6]
    print(unexplained.to_string())
    assert recon.passed
    assert unexplained.empty


# --------------------------------------------------------------------------------------------
# 2. A damaged warehouse is reported by every command and left as it was

BLOCK_START = 3 * 4096  # DuckDB's file header and its two database headers precede block 0


@pytest.fixture(scope="module")
def built_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[int]]:
    """A warehouse with three generated months and February of every plan and version built;
    its bytes, and the file offsets of blocks that hold only model-table data."""
    path = tmp_path_factory.mktemp("built") / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        generate(conn, FIRST, END - dt.timedelta(days=1), orders_per_day=60, seed=7)
        for name in PLANS:
            plan = plan_named(name)
            for version in VERSIONS:
                build_window(conn, plan, version, FEB, MAR, "run-1")
    with duckdb.connect(str(path), read_only=True) as conn:  # every block written by now
        block_size = conn.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]
        tables = conn.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE NOT temporary"
        ).fetchall()
        owners: dict[int, set[str]] = {}
        for (table,) in tables:
            for (block,) in conn.execute(
                f"SELECT DISTINCT block_id FROM pragma_storage_info('{table}') "
                "WHERE persistent AND block_id >= 0"
            ).fetchall():
                owners.setdefault(block, set()).add(table.split(".")[0])
    model_only = [b for b, schemas in sorted(owners.items()) if schemas == {"models"}]
    assert model_only, owners
    return path.read_bytes(), [BLOCK_START + b * block_size for b in model_only]


def truncated(data: bytes, _: list[int]) -> bytes:
    return data[: len(data) // 2]


def random_bytes(data: bytes, _: list[int]) -> bytes:
    return random.Random(15).randbytes(len(data))


def empty(data: bytes, _: list[int]) -> bytes:
    return b""


def model_block_overwritten(data: bytes, model_blocks: list[int]) -> bytes:
    """16 bytes in the middle of a block only a model table uses; the rest untouched."""
    at = model_blocks[len(model_blocks) // 2] + 1000
    return data[:at] + bytes(b ^ 0xFF for b in data[at : at + 16]) + data[at + 16 :]


DAMAGES: dict[str, Callable[[bytes, list[int]], bytes]] = {
    "truncated": truncated,
    "random_bytes": random_bytes,
    "empty": empty,
    "model_block_overwritten": model_block_overwritten,
}


@pytest.fixture(params=list(DAMAGES))
def damaged(request, built_bytes, tmp_path, monkeypatch) -> Path:
    """A damaged copy of the built warehouse, alone in its folder; BACKFILL_WAREHOUSE names it."""
    data, model_blocks = built_bytes
    path = tmp_path / "wh" / "warehouse.duckdb"
    path.parent.mkdir()
    path.write_bytes(DAMAGES[request.param](data, model_blocks))
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    return path


def test_an_overwritten_model_block_breaks_only_that_table(built_bytes, tmp_path):
    """What DuckDB does with a damaged data block: the file opens, tables elsewhere read fine,
    and only a read of the damaged block fails, on its checksum. A command that does not read
    the model tables would answer from the rest as if nothing were wrong."""
    data, model_blocks = built_bytes
    path = tmp_path / "w.duckdb"
    path.write_bytes(model_block_overwritten(data, model_blocks))
    broken = []
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM backfill.partition_evidence").fetchone()[0] > 0
        for (table,) in conn.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1"
        ).fetchall():
            try:
                conn.execute(f"SELECT bit_xor(hash(t)) FROM {table} AS t").fetchone()
            except duckdb.Error as error:
                assert "checksum" in str(error)
                broken.append(table)
    assert broken and all(t.startswith("models.") for t in broken)


def command_args(name: str, tmp_path: Path) -> list[str]:
    """One invocation of each command that opens the warehouse."""
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_id,segment,region,valid_from,valid_to\n1,consumer,north,2024-01-01 00:00:00,\n"
    )
    return {
        "seed": ["seed", "--start", "2024-01-01", "--end", "2024-01-03", "--orders-per-day", "5"],
        "load": ["load", "raw.customers", str(customers)],
        "status": ["status"],
        "plan": ["plan", "fct_orders"],
        "reconcile": ["reconcile", "fct_orders", "--html", str(tmp_path / "report.html")],
        "check": ["check"],
        "arrive": ["arrive", "--days", "1", "--rows", "1"],
    }[name]


COMMANDS = ("seed", "load", "status", "plan", "reconcile", "check", "arrive")
FIXES = ("restore", "backfill-assets seed", "backfill-assets load")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_damaged_warehouse_and_leaves_its_bytes(
    command, damaged, tmp_path, capsys
):
    before = damaged.read_bytes()
    code = cli.main(command_args(command, tmp_path))
    captured = capsys.readouterr()
    said = captured.out + captured.err
    print(said)
    assert code != 0
    assert str(damaged) in said
    assert "not a readable DuckDB database" in said
    for fix in FIXES:
        assert fix in said
    assert damaged.read_bytes() == before
    assert sorted(p.name for p in damaged.parent.iterdir()) == [damaged.name]
    assert not (tmp_path / "report.html").exists()


def test_a_run_refuses_to_write_into_a_damaged_warehouse(damaged):
    """The run-time guard: a writer's connection (``connect_waiting``) reads the file through
    before the run writes anything, and a reader (``open_read_only``) names the damage."""
    before = damaged.read_bytes()
    with pytest.raises(duckdb.Error) as error:
        connect_waiting(str(damaged), 1).close()
    assert str(damaged) in str(error.value)
    assert "not a readable DuckDB database" in str(error.value)
    assert damaged.read_bytes() == before
    try:
        open_read_only(str(damaged)).close()
    except duckdb.Error as error:  # damage DuckDB meets while opening: named the same way
        assert "not a readable DuckDB database" in str(error)
    assert damaged.read_bytes() == before


def test_a_run_writes_as_before_into_a_sound_warehouse(built_bytes, tmp_path):
    """Positive control for the guards above: the built warehouse opens and takes a write."""
    path = tmp_path / "w.duckdb"
    path.write_bytes(built_bytes[0])
    conn = connect_waiting(str(path), 1)
    try:
        conn.execute("CREATE TABLE main.probe AS SELECT 1 AS x")
    finally:
        conn.close()
    with open_read_only(str(path)) as conn:
        assert conn.execute("SELECT x FROM main.probe").fetchone() == (1,)


def counted_read_throughs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files read through from now on, in order (each still read through)."""
    reads: list[str] = []
    read_through = warehouse.read_through

    def counted(conn: duckdb.DuckDBPyConnection, path: str) -> None:
        reads.append(path)
        read_through(conn, path)

    monkeypatch.setattr(warehouse, "read_through", counted)
    return reads


def test_a_writer_reads_the_file_through_again_once_anything_else_wrote_it(
    built_bytes, tmp_path, monkeypatch
):
    """A run's writer skips the read-through of a file nothing has written since a sound
    session closed it; after a session that failed, or a write by anyone else, it reads the
    file through again."""
    path = tmp_path / "w.duckdb"
    path.write_bytes(built_bytes[0])
    reads = counted_read_throughs(monkeypatch)
    resource = DuckDBResource(database=str(path))
    with session(resource) as conn:
        conn.execute("CREATE TABLE main.probe AS SELECT 1 AS x")
    with session(resource) as conn:
        conn.execute("INSERT INTO main.probe VALUES (2)")
    assert len(reads) == 1  # the second found the file as the first left it
    with pytest.raises(RuntimeError), session(resource) as conn:
        conn.execute("INSERT INTO main.probe VALUES (3)")
        raise RuntimeError("the step failed")
    with session(resource) as conn:
        conn.execute("INSERT INTO main.probe VALUES (4)")
    assert len(reads) == 2  # after the failed session
    with duckdb.connect(str(path)) as analyst:  # another writer, outside the project
        analyst.execute("INSERT INTO main.probe VALUES (5)")
    with session(resource) as conn:
        assert conn.execute("SELECT sum(x) FROM main.probe").fetchone() == (15,)
    assert len(reads) == 3


OPENERS: dict[str, Callable[[str], duckdb.DuckDBPyConnection]] = {
    "run writer": lambda path: connect_waiting(path, 1),
    "command line": open_checked,
}


@pytest.mark.parametrize("opener", list(OPENERS))
def test_damage_written_after_a_sound_session_is_still_refused(opener, built_bytes, tmp_path):
    """The record of a sound close does not outlive a write: 16 bytes of a model-table block
    overwritten in place (same size, modification time put back) are found and refused, by a
    run's writer and by the command line alike."""
    data, model_blocks = built_bytes
    path = tmp_path / "w.duckdb"
    path.write_bytes(data)
    with session(DuckDBResource(database=str(path))) as conn:  # reads, writes nothing
        assert conn.execute("SELECT count(*) FROM raw.orders").fetchone()[0] > 0
    assert (tmp_path / "w.duckdb.read-through").exists()
    assert path.read_bytes() == data  # the blocks are where built_bytes says
    time.sleep(0.05)  # past the file system clock's tick (known_sound says why)
    before = path.stat()
    at = model_blocks[len(model_blocks) // 2] + 1000
    with path.open("r+b") as file:
        file.seek(at)
        file.write(bytes(b ^ 0xFF for b in data[at : at + 16]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(WarehouseDamagedError) as error:
        OPENERS[opener](str(path)).close()
    assert "not a readable DuckDB database" in str(error.value)


def test_a_write_ahead_log_left_behind_makes_the_next_writer_read_through(
    built_bytes, tmp_path, monkeypatch
):
    """A writer that died without closing leaves DuckDB's write-ahead log beside a file that
    may still look as recorded: the next writer reads the file through."""
    path = tmp_path / "w.duckdb"
    path.write_bytes(built_bytes[0])
    resource = DuckDBResource(database=str(path))
    with session(resource) as conn:
        conn.execute("CREATE TABLE main.probe AS SELECT 1 AS x")
    recorded = (tmp_path / "w.duckdb.read-through").read_text()
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            "import duckdb, os, sys\n"
            "c = duckdb.connect(sys.argv[1])\n"
            "c.execute('INSERT INTO main.probe VALUES (2)')\n"
            "os._exit(0)  # no close, no checkpoint\n",
            str(path),
        ],
        check=True,
    )
    assert died.returncode == 0
    assert (tmp_path / "w.duckdb.wal").exists()
    assert (tmp_path / "w.duckdb.read-through").read_text() == recorded
    reads = counted_read_throughs(monkeypatch)
    with session(resource) as conn:
        assert conn.execute("SELECT sum(x) FROM main.probe").fetchone() == (3,)
    assert reads == [str(path)]


def test_status_on_a_sound_copy_of_the_same_warehouse_succeeds(
    built_bytes, tmp_path, monkeypatch, capsys
):
    """Positive control: the damage, not the warehouse, makes the commands above fail."""
    path = tmp_path / "warehouse.duckdb"
    path.write_bytes(built_bytes[0])
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    assert cli.main(["status"]) == 0
    assert "fct_orders" in capsys.readouterr().out
    assert cli.main(["check"]) == 0


def test_a_command_waits_for_a_run_holding_the_warehouse(built_bytes, tmp_path, monkeypatch):
    """With dagster dev beside it, a run or sensor may hold the file: the command waits for it
    instead of failing at once on DuckDB's lock (here a writer holding it for 3 s)."""
    path = tmp_path / "warehouse.duckdb"
    path.write_bytes(built_bytes[0])
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "c = duckdb.connect(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "time.sleep(3)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        assert cli.main(["status"]) == 0
        assert time.monotonic() - started >= 1.0  # it waited for the holder to let go
    finally:
        holder.wait(timeout=30)
        holder.stdout.close()


# --------------------------------------------------------------------------------------------
# 3. Read-only commands never create a warehouse


@pytest.fixture
def mistyped(tmp_path, monkeypatch) -> Path:
    """BACKFILL_WAREHOUSE names a file (in a folder) that does not exist."""
    path = tmp_path / "wherehouse" / "warehouse.duckdb"
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    return path


@pytest.mark.parametrize("command", ["status", "plan", "reconcile", "arrive"])
def test_a_command_that_needs_data_refuses_a_missing_warehouse_and_creates_nothing(
    command, mistyped, tmp_path, capsys
):
    code = cli.main(command_args(command, tmp_path))
    captured = capsys.readouterr()
    said = captured.out + captured.err
    print(said)
    assert code != 0
    assert str(mistyped) in said
    assert "backfill-assets seed" in said and "backfill-assets load" in said
    assert not mistyped.exists()
    assert not mistyped.parent.exists()


def test_check_without_a_warehouse_checks_the_plans_and_creates_nothing(mistyped, capsys):
    assert cli.main(["check"]) == 0
    assert "ok      fct_orders" in capsys.readouterr().out
    assert not mistyped.parent.exists()


def test_a_reader_connection_never_creates_the_file(mistyped):
    with pytest.raises(duckdb.Error) as error:
        open_read_only(str(mistyped))
    assert str(mistyped) in str(error.value) and "backfill-assets seed" in str(error.value)
    assert not mistyped.parent.exists()


def test_seed_creates_a_missing_warehouse(mistyped, tmp_path):
    """Positive control: the commands that write a warehouse still create it."""
    assert cli.main(command_args("seed", tmp_path)) == 0
    with duckdb.connect(str(mistyped), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.orders").fetchone()[0] > 0


def test_the_installed_command_refuses_a_missing_warehouse(mistyped):
    script = Path(sys.executable).parent / "backfill-assets"
    assert script.exists()
    done = subprocess.run(
        [str(script), "status"], capture_output=True, text=True, timeout=300, check=False
    )
    print(done.stdout, done.stderr)
    assert done.returncode != 0
    assert str(mistyped) in done.stderr and "backfill-assets seed" in done.stderr
    assert not mistyped.parent.exists()
