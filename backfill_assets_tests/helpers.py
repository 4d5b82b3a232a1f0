"""Shared test helpers: the shipped example's plans and the code location's definitions."""

import dagster as dg
import duckdb

from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.definitions import defs as location_defs
from backfill_assets.plan import Plan


def shipped_plans() -> list[Plan]:
    """The example plans of the shipped code location (all must load)."""
    found = load_catalog(SHIPPED_DEFS)
    assert not found.errors, found.errors
    return found.plans


def plan_named(name: str) -> Plan:
    return load_catalog(SHIPPED_DEFS).named(name)


def load_definitions() -> dg.Definitions:
    """The code location's definitions, as ``dagster dev`` would load them."""
    return location_defs()


def raw_checksums(conn: duckdb.DuckDBPyConnection, tables) -> dict[str, tuple[int, str]]:
    """Row count and md5 of every given table's rows, in a fixed order."""
    return {
        table: conn.execute(
            "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
            f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
        ).fetchone()
        for table in tables
    }
