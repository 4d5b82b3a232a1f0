"""Building a window of days for one version of a plan: stage, prove, then swap in atomically.

A build of the days ``[start, end)``:

1. runs the version's SQL once over the whole window into a temporary staging table;
2. computes each day's source fingerprint from the plan's source-slice SQL (``fingerprint.py``);
3. computes each day's partition checks on the staged rows (``partition_checks.py``);
4. in ONE transaction deletes the window from ``models.<plan>__<version>``, inserts the staged
   rows and replaces the window's rows in ``backfill.partition_evidence``.

Write-audit-publish: when the version is the one ``analytics.<plan>`` publishes, a day that fails
a partition check is not written; users keep seeing its previous rows, and its evidence records
the rejected build (``applied = false``, ``checks_passed = false``). Other versions are written
whole, failing days included, so they can be inspected; the promotion gate refuses them.

A failure anywhere before the commit leaves every day and its evidence as they were; running the
same window again leaves identical content.
"""

import datetime as dt
import json
import time
from dataclasses import dataclass

import duckdb

from backfill_assets.fingerprint import stage_fingerprints
from backfill_assets.partition_checks import DayChecks, run_partition_checks
from backfill_assets.plan import Plan
from backfill_assets.publish import is_published
from backfill_assets.warehouse import (
    RAW_TABLES,
    UTC_NOW,
    ensure_schema,
    quote,
    table_exists,
    transaction,
)

STAGE = "backfill_stage"


class BuildError(RuntimeError):
    """A window that cannot be built; nothing was written."""


@dataclass(frozen=True)
class BuildResult:
    """What one build wrote, per day."""

    plan: str
    version: str
    start: dt.date
    end: dt.date  # exclusive
    days: list[DayChecks]
    held: list[dt.date]  # failing days not written because the version is published

    @property
    def rows(self) -> int:
        return sum(day.row_count for day in self.days)

    @property
    def failing_days(self) -> list[DayChecks]:
        return [day for day in self.days if not day.passed]


def check_sources(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> None:
    """Refuse sources that would build wrong history quietly: a missing table or column, or a
    column of another type. (Empty required values are a window check, ``sources_are_valid``:
    scanning every source row for them costs more than a one-day repair.)"""
    for table in plan.spec.sources:
        schema, name = table.split(".")
        if not table_exists(conn, schema, name):
            raise BuildError(
                f"{plan.name}/{version}: source table {table} does not exist. Fix: seed or load it "
                "(backfill-assets seed / load)."
            )
        actual = {
            row[0]: row[1]
            for row in conn.execute(f"DESCRIBE {quote(schema)}.{quote(name)}").fetchall()
        }
        for column, expected in RAW_TABLES[table].items():
            if column not in actual:
                raise BuildError(
                    f"{plan.name}/{version}: source {table} has no column {column} "
                    f"({expected}); it has {list(actual)}. Fix: reload it with "
                    "backfill-assets load, which checks files."
                )
            if actual[column] != expected:
                raise BuildError(
                    f"{plan.name}/{version}: source column {table}.{column} is "
                    f"{actual[column]}, expected {expected}. Fix: reload it with "
                    "backfill-assets load, which converts and checks every value."
                )


def _stage(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start, end) -> None:
    sql = plan.version_sql(version)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM ({sql})",
            {"start": start, "end": end},
        )
    except duckdb.Error as error:
        raise BuildError(
            f"{plan.name}/{version}: the version's SQL failed for "
            f"{start}..{end - dt.timedelta(1)}: "
            f"{str(error).splitlines()[0]}. Fix: check that the source tables "
            f"{plan.spec.sources} exist with the columns the SQL reads."
        ) from error
    outside = conn.execute(
        f"SELECT count(*), min({plan.partition_column}) FROM {STAGE} "
        f"WHERE {plan.partition_column} IS NULL "
        f"OR {plan.partition_column} < $start OR {plan.partition_column} >= $end",
        {"start": start, "end": end},
    ).fetchone()
    if outside[0]:
        raise BuildError(
            f"{plan.name}/{version}: the SQL returned {outside[0]} row(s) outside the window "
            f"{start}..{end - dt.timedelta(1)} (e.g. {plan.spec.partition_column}={outside[1]}). "
            "Fix: filter the SQL on $start <= day < $end."
        )


def _ensure_model_table(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> None:
    table = plan.table_name(version)
    if not table_exists(conn, "models", table):
        conn.execute(f"CREATE TABLE {plan.model_table(version)} AS FROM {STAGE} LIMIT 0")
        return
    staged = conn.execute(f"DESCRIBE {STAGE}").fetchall()
    stored = conn.execute(f"DESCRIBE {plan.model_table(version)}").fetchall()
    if [r[:2] for r in staged] != [r[:2] for r in stored]:
        raise BuildError(
            f"{plan.name}/{version}: the SQL now returns columns "
            f"{[r[:2] for r in staged]} but models.{table} has {[r[:2] for r in stored]}. "
            "Fix: give the new logic its own version in the plan (a new table), "
            "or drop the old table and rebuild the whole window."
        )


def _write_evidence(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: dt.date,
    end: dt.date,
    days: list[DayChecks],
    held: list[dt.date],
    run_id: str,
    build_seconds: float,
) -> None:
    """Replace the window's evidence rows (called inside the write transaction).

    ``build_seconds`` is the window's time to stage, fingerprint and check, spread evenly over
    its days: what preflight's ETA is made of.
    """
    conn.execute(
        "DELETE FROM backfill.partition_evidence "
        "WHERE model = $model AND version = $version AND day >= $start AND day < $end",
        {"model": plan.name, "version": version, "start": start, "end": end},
    )
    checks = [(d.day.isoformat(), d.passed, json.dumps(d.checks, default=str)) for d in days]
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE backfill_stage_checks (day DATE, ok BOOLEAN, c JSON)"
    )
    conn.executemany("INSERT INTO backfill_stage_checks VALUES (?, ?, ?)", checks)
    conn.execute(
        f"""
        INSERT INTO backfill.partition_evidence
        SELECT
            $model, $version, f.day,
            (SELECT count(*) FROM {STAGE} AS s WHERE s.{plan.partition_column} = f.day),
            f.source_rows, f.source_max_ingested_at, f.source_fingerprint,
            $code_version, c.ok, c.c, NOT list_contains(CAST($held AS DATE[]), f.day),
            $run_id, {UTC_NOW}, $build_seconds
        FROM backfill_stage_fingerprints AS f
        JOIN backfill_stage_checks AS c USING (day)
        """,
        {
            "model": plan.name,
            "version": version,
            "code_version": plan.version(version).code_version,
            "run_id": run_id,
            "held": held,
            "build_seconds": build_seconds / max(len(days), 1),
        },
    )


def build_window(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: dt.date,
    end: dt.date,
    run_id: str,
) -> BuildResult:
    """Build the days ``[start, end)`` of one version and write them atomically."""
    if end <= start:
        raise BuildError(
            f"{plan.name}/{version}: empty window {start}..{end}; end must be after start"
        )
    if start < plan.spec.partitions.start:
        raise BuildError(
            f"{plan.name}/{version}: {start} is before the first partition "
            f"{plan.spec.partitions.start}. Fix: choose days inside the partitions."
        )
    ensure_schema(conn)
    started = time.perf_counter()
    check_sources(conn, plan, version)
    _stage(conn, plan, version, start, end)
    stage_fingerprints(conn, plan, start, end)
    days = run_partition_checks(conn, plan, version, STAGE, start, end)
    _ensure_model_table(conn, plan, version)
    held = [d.day for d in days if not d.passed] if is_published(conn, plan, version) else []
    pc = plan.partition_column
    keep = f"NOT list_contains(CAST($held AS DATE[]), {pc})"
    try:
        with transaction(conn):
            conn.execute(
                f"DELETE FROM {plan.model_table(version)} "
                f"WHERE {pc} >= $start AND {pc} < $end AND {keep}",
                {"start": start, "end": end, "held": held},
            )
            conn.execute(
                f"INSERT INTO {plan.model_table(version)} SELECT * FROM {STAGE} WHERE {keep}",
                {"held": held},
            )
            seconds = time.perf_counter() - started
            _write_evidence(conn, plan, version, start, end, days, held, run_id, seconds)
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {quote(STAGE)}")
    return BuildResult(plan.name, version, start, end, days, held)
