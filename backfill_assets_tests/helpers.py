"""Shared test helpers: the shipped example's plans and the code location's definitions."""

import dagster as dg

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
