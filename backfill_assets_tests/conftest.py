"""Shared fixtures: a real DuckDB file under tmp_path, the shipped plans, real Dagster instances."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.example.generator import generate, load_pilot_fixture
from backfill_assets.plan import Plan
from backfill_assets_tests.helpers import plan_named


@pytest.fixture
def warehouse_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh DuckDB file; BACKFILL_WAREHOUSE points at it for code that reads the setting."""
    path = tmp_path / "warehouse.duckdb"
    monkeypatch.setenv("BACKFILL_WAREHOUSE", str(path))
    return path


@pytest.fixture
def conn(warehouse_file: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(str(warehouse_file))
    yield connection
    connection.close()


@pytest.fixture
def pilot(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A warehouse holding only the hand-written pilot-market rows."""
    load_pilot_fixture(conn)
    return conn


@pytest.fixture
def generated(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A warehouse with three generated months (incl. the pilot rows), 60 orders a day."""
    generate(conn, dt.date(2024, 1, 1), dt.date(2024, 3, 31), orders_per_day=60, seed=7)
    return conn


@pytest.fixture
def daily_revenue() -> Plan:
    return plan_named("daily_revenue")


@pytest.fixture
def fct_orders() -> Plan:
    return plan_named("fct_orders")


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real, SQLite-backed Dagster instance in a temporary folder."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def monthly_active_customers() -> Plan:
    return plan_named("monthly_active_customers")
