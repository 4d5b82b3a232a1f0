"""The example's source data through the generic loader, with BIGINT and with VARCHAR keys.

``backfill-assets load <table> <file>`` fills a declared source: types come from the table when
it exists, else from the plans' declared columns. The example plans are written without any
assumption on key types, so text keys build the same history as integer keys.
"""

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from backfill_assets import cli
from backfill_assets.build import build_window
from backfill_assets.example.generator import TABLES, generate
from backfill_assets.window_checks import run_window_checks
from backfill_assets_tests.helpers import raw_checksums as table_checksums
from backfill_assets_tests.helpers import shipped_plans

PILOT_COUNTS = {"raw.orders": 10, "raw.refunds": 4, "raw.customers": 4}  # rows in the pilot CSVs
FIRST, LAST = dt.date(2024, 1, 1), dt.date(2024, 3, 31)


def raw_checksums(conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every raw table's rows, in a fixed order."""
    return table_checksums(conn, TABLES)


def export(conn: duckdb.DuckDBPyConnection, folder: Path, fmt: str, select: dict) -> dict:
    files = {}
    for table in TABLES:
        path = folder / f"{table.split('.')[1]}.{fmt}"
        option = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
        conn.execute(f"COPY ({select.get(table, f'SELECT * FROM {table}')}) TO '{path}' ({option})")
        files[table] = path
    return files


def load_all(files: dict[str, Path]) -> None:
    for table, path in files.items():
        assert cli.main(["load", table, str(path)]) == 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_round_trips_the_example_into_a_new_warehouse(pilot, tmp_path, monkeypatch, fmt):
    files = export(pilot, tmp_path, fmt, {})
    expected = raw_checksums(pilot)
    pilot.close()
    target = tmp_path / "loaded.duckdb"
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(target))
    load_all(files)
    with duckdb.connect(str(target)) as conn:
        assert raw_checksums(conn) == expected
        # Types come from the plans' declarations: the tables did not exist before.
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = 'orders'"
            ).fetchall()
        )
        assert types["order_id"] == "BIGINT" and types["amount"] == "DECIMAL(12,2)"
        assert conn.execute("SELECT count(*) FROM raw.orders WHERE region IS NULL").fetchone() == (
            2,
        )


def test_a_refused_file_leaves_the_table_as_it_was(pilot, tmp_path, warehouse_file, capsys):
    before = raw_checksums(pilot)
    pilot.close()
    bad = tmp_path / "orders.csv"
    bad.write_text(
        "order_id,customer_id,region,order_ts,amount,status,ingested_at\n"
        "1,7,north,2024-01-02 10:00:00,12.50,placed,2024-01-02 10:01:00\n"
        "2,7,north,2024-01-02 11:00:00,12.345,placed,2024-01-02 11:01:00\n"
    )
    assert cli.main(["load", "raw.orders", str(bad)]) == 1
    message = capsys.readouterr().err
    assert str(bad) in message and "data row 2" in message and "amount" in message
    assert "Fix:" in message
    with duckdb.connect(str(warehouse_file)) as conn:
        assert raw_checksums(conn) == before


TEXT_KEYS = {
    "raw.orders": "SELECT * REPLACE (CAST(order_id AS VARCHAR) AS order_id, "
    "'C' || customer_id AS customer_id) FROM raw.orders",
    "raw.refunds": "SELECT * REPLACE ('R' || refund_id AS refund_id, "
    "CAST(order_id AS VARCHAR) AS order_id) FROM raw.refunds",
    "raw.customers": "SELECT * REPLACE ('C' || customer_id AS customer_id) FROM raw.customers",
}


def build_everything(conn: duckdb.DuckDBPyConnection) -> None:
    for plan in shipped_plans():
        window = plan.with_window(FIRST, LAST)
        for version in plan.version_names:
            build_window(conn, window, version, FIRST, LAST + dt.timedelta(days=1), "keys")


def test_the_example_builds_the_same_history_with_varchar_keys(
    generated, warehouse_file, tmp_path, monkeypatch
):
    """The same data with text keys (order '1000001', customer 'C7', refund 'R3'): every model
    row equals the integer-key build once keys are mapped, and every window check passes."""
    files = export(generated, tmp_path, "csv", TEXT_KEYS)
    build_everything(generated)
    generated.close()
    text_file = tmp_path / "text_keys.duckdb"
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(text_file))
    with duckdb.connect(str(text_file)) as conn:
        # The team's tables exist with text keys; `load` keeps the table's own types.
        conn.execute("CREATE SCHEMA raw")
        for table, columns in TABLES.items():
            typed = ", ".join(
                f"{c} {'VARCHAR' if c.endswith('_id') else t}" for c, t in columns.items()
            )
            conn.execute(f"CREATE TABLE {table} ({typed})")
    load_all(files)
    with duckdb.connect(str(text_file)) as conn:
        key_types = conn.execute(
            "SELECT DISTINCT data_type FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND column_name LIKE '%_id'"
        ).fetchall()
        assert key_types == [("VARCHAR",)]
        assert conn.execute("SELECT min(refund_id) FROM raw.refunds").fetchone()[0][0] == "R"
        build_everything(conn)
        conn.execute(f"ATTACH '{warehouse_file}' AS i (READ_ONLY)")
        for version in ("legacy", "v2"):
            table = f"models.daily_revenue__{version}"
            assert conn.execute(f"SELECT count(*) FROM i.{table}").fetchone()[0] > 0
            diff = conn.execute(
                f"(SELECT * FROM {table} EXCEPT ALL SELECT * FROM i.{table}) UNION ALL "
                f"(SELECT * FROM i.{table} EXCEPT ALL SELECT * FROM {table})"
            ).fetchall()
            assert diff == [], version
            mapped = (
                "SELECT * REPLACE (CAST(order_id AS VARCHAR) AS order_id, "
                f"'C' || customer_id AS customer_id) FROM i.models.fct_orders__{version}"
            )
            text_rows = f"SELECT * FROM models.fct_orders__{version}"
            assert conn.execute(f"SELECT count(*) FROM ({text_rows})").fetchone()[0] > 0
            diff = conn.execute(
                f"({text_rows} EXCEPT ALL {mapped}) UNION ALL ({mapped} EXCEPT ALL {text_rows})"
            ).fetchall()
            assert diff == [], version
        conn.execute("DETACH i")
        for plan in shipped_plans():
            window = plan.with_window(FIRST, LAST)
            verdicts = {c.name: c.passed for c in run_window_checks(conn, window) if c.blocking}
            assert all(verdicts.values()), (plan.name, verdicts)


def test_the_monthly_plan_over_two_years_reconciles_and_promotes(conn, monthly_active_customers):
    """24 monthly partitions over 2024-2025, one evidence row per month and version, every
    difference explained by the two rules, and the promotion through the gate with approval."""
    from backfill_assets.partitions import chunks
    from backfill_assets.publish import promote, published_version

    plan = monthly_active_customers
    generate(conn, dt.date(2024, 1, 1), dt.date(2025, 12, 31), orders_per_day=15, seed=3)
    assert len(plan.window_partitions) == 24
    for version in plan.version_names:
        for start, end in chunks(plan.cadence, plan.window_partitions, plan.chunk):
            build_window(conn, plan, version, start, end, "two-years")
    per_version = dict(
        conn.execute(
            "SELECT version, count(*) FROM backfill.partition_evidence "
            "WHERE model = 'monthly_active_customers' GROUP BY 1"
        ).fetchall()
    )
    assert per_version == {"legacy": 24, "v2": 24}
    checks = {c.name: c for c in run_window_checks(conn, plan)}
    assert all(c.passed for c in checks.values() if c.blocking), {
        n: c.summary for n, c in checks.items() if not c.passed
    }
    recon = checks["reconciles_with_baseline"]
    assert recon.figures["total_abs_delta"] > 0  # v2 really differs, and rules explain it all
    assert recon.figures["groups_unexplained"] == 0
    # Independently: legacy minus v2 active customers over everything, by a plain query.
    gap = conn.execute(
        "SELECT (SELECT sum(active_customers) FROM models.monthly_active_customers__legacy) "
        "- (SELECT sum(active_customers) FROM models.monthly_active_customers__v2)"
    ).fetchone()[0]
    # Both rules only take customers away, so their sizes (absolute sums) add up to the gap.
    assert gap == sum(recon.figures["explained_by_rule"].values())
    promote(conn, plan, "v2", plan.spec.approvers[0], "two years, monthly", "run-monthly")
    assert published_version(conn, plan) == "v2"
