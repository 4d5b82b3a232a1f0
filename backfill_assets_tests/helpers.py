"""Shared test helpers: the shipped example's plans, the code location's definitions, copies of a
shipped plan to edit, and a small events plan the example knows nothing of."""

import datetime as dt
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import dagster as dg
import duckdb
import yaml

from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.definitions import defs as location_defs
from backfill_assets.plan import Plan, load_plan


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


# --------------------------------------------------------------------------------------------
# a copy of the shipped daily_revenue plan, edited by a test


def copy_shipped_plan(tmp_path: Path) -> Path:
    """A copy of the shipped daily_revenue plan folder under ``tmp_path/plans``, so a test can
    edit it without touching the shipped one; returns its plan.yaml."""
    folder = tmp_path / "plans" / "daily_revenue"
    shutil.copytree(SHIPPED_DEFS / "daily_revenue", folder)
    return folder / "plan.yaml"


def edit_plan(path: Path, change: Callable[[dict], None]) -> None:
    """Rewrite a plan.yaml with ``change`` applied to its parsed content."""
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def stop_checking(data: dict, column: str) -> None:
    """Take ``column`` out of a parsed plan's null rates, reconciliation measures and known
    records, for a version that no longer returns it."""
    checks = data["checks"]
    del checks["null_rates"][column]
    checks["reconciliation"]["measures"].remove(column)
    for record in checks["known_records"]:
        record["expect"].pop(column)


def replace_once(path: Path, old: str, new: str) -> None:
    """Replace ``old`` in a file, where it must stand exactly once (so an edit cannot miss)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))


# --------------------------------------------------------------------------------------------
# an events plan: events per period and category from ops.events, where v2 leaves test events
# out and one rule (tests_removed) explains exactly that

EVENTS_PLAN = """\
name: {name}
description: Events per {period} and category, read by the operations dashboard.
grain: One row per {period} and category.
unique_key: [{period}, category]
partition_column: {period}
partitions: {{{partitions}}}
window: {{start: {start}, end: {last}}}
sources:
  - table: ops.events
    event_time: event_ts
    loaded_at: loaded_at
    required: [event_id, event_ts, category]
    columns: {{{columns}}}
versions:
  - {{name: legacy, sql: legacy.sql, code_version: l1,
      change: "Every event counts, test events included."}}
  - {{name: v2, sql: v2.sql, code_version: v1, change: "Test events are left out of the counts."}}
baseline: legacy
candidate: v2
checks:
  null_rates: {{{null_rates}}}
  reconciliation:
    by: [partition, category]
    measures: [{measures}]
    tolerance: 0
    explained_differences:
      - {{name: tests_removed, description: Test events leave v2., sql: rule.sql}}
  trend: {{measure: events, window_partitions: 6, max_deviations: 50}}
owner: ops@example.com
risk: low
downstream: []
rollback: Run the rollback job with a reason; the view points back at the previous version.
strategy: {strategy}
"""
EVENT_COLUMNS = {
    "event_id": "UUID",
    "category": "VARCHAR",
    "event_ts": "TIMESTAMP",
    "loaded_at": "TIMESTAMP",
}
EVENT_MEASURES = {"events": "count(*)"}


def events_sql(
    *,
    where: str = "",
    period: str = "day",
    period_sql: str = "CAST(event_ts AS DATE)",
    measures: Mapping[str, str] = EVENT_MEASURES,
    negated: bool = False,
) -> str:
    """The query of an events plan's version (or, ``negated``, of a rule): each measure's
    aggregate per period and category over ``[$start, $end)`` of ops.events, rows filtered by
    ``where``."""
    sign = "-" if negated else ""
    totals = ", ".join(f"{sign}{aggregate} AS {name}" for name, aggregate in measures.items())
    condition = f" AND {where}" if where else ""
    return (
        f"SELECT {period_sql} AS {period}, category, {totals}\n"
        f"FROM ops.events WHERE event_ts >= $start AND event_ts < $end{condition}\n"
        "GROUP BY ALL\n"
    )


def write_events_plan(
    folder: Path,
    *,
    name: str,
    start: dt.date,
    last: dt.date,
    cadence: str = "daily",
    end: dt.date | None = None,
    timezone: str | None = None,
    period: str = "day",
    period_sql: str = "CAST(event_ts AS DATE)",
    columns: Mapping[str, str] = EVENT_COLUMNS,
    measures: Mapping[str, str] = EVENT_MEASURES,
    v2_where: str = "category <> 'test'",
    strategy: str = "full_rebuild",
    shadow_partitions: int | None = None,
    cutoff: dt.date | None = None,
) -> Plan:
    """Write and load an events plan in ``folder``: plan.yaml, legacy.sql, v2.sql and rule.sql.

    The plan counts ops.events (declared with ``columns``) per ``period`` column and category,
    partitioned by ``cadence`` from ``start`` (up to ``end`` and in ``timezone`` when given) over
    the window ``start``..``last``. Legacy counts every event, v2 only those matching
    ``v2_where``, and the rule ``tests_removed`` predicts the difference: the negated measures of
    the events of category 'test'. Reconciliation and null rates cover ``measures`` (name:
    aggregate); ``shadow_partitions`` and ``cutoff`` are written only when given.
    """
    partitions = [f"cadence: {cadence}", f"start: {start}"]
    if end is not None:
        partitions.append(f"end: {end}")
    if timezone is not None:
        partitions.append(f"timezone: {timezone}")
    text = EVENTS_PLAN.format(
        name=name,
        period=period,
        partitions=", ".join(partitions),
        start=start,
        last=last,
        columns=", ".join(f'{column}: "{kind}"' for column, kind in columns.items()),
        null_rates=", ".join(f"{column}: 0" for column in [period, "category", *measures]),
        measures=", ".join(measures),
        strategy=strategy,
    )
    if shadow_partitions is not None:
        text += f"shadow_partitions: {shadow_partitions}\n"
    if cutoff is not None:
        text += f"cutoff: {cutoff}\n"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.yaml").write_text(text)
    query = {"period": period, "period_sql": period_sql, "measures": measures}
    (folder / "legacy.sql").write_text(events_sql(**query))
    (folder / "v2.sql").write_text(events_sql(where=v2_where, **query))
    (folder / "rule.sql").write_text(events_sql(where="category = 'test'", negated=True, **query))
    return load_plan(folder / "plan.yaml")
