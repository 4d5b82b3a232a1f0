"""Building a window of days for one version of a plan: stage, prove, then swap in atomically.

A build of the days ``[start, end)``:

1. runs the version's SQL once over the whole window into a temporary staging table;
2. computes each day's source fingerprint from the plan's source-slice SQL (``fingerprint.py``);
3. computes each day's partition checks on the staged rows (``partition_checks.py``);
4. in ONE transaction deletes the window from ``models.<plan>__<version>``, inserts the staged
   rows and replaces the window's evidence (``evidence.py``).

Write-audit-publish: when the version is the one ``analytics.<plan>`` publishes, a day that fails
a partition check is not written; users keep seeing its previous rows, and its evidence records
the rejected build (``applied = false``, ``checks_passed = false``). Other versions are written
whole, failing days included, so they can be inspected; the promotion gate refuses them.

A failure anywhere before the commit leaves every day and its evidence as they were; running the
same window again leaves identical content.
"""

import datetime as dt
import time
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import STAGE as FINGERPRINTS
from backfill_assets.fingerprint import stage_fingerprints
from backfill_assets.partition_checks import DayChecks, run_partition_checks
from backfill_assets.plan import Plan, output_type_problems
from backfill_assets.sources import source_problems
from backfill_assets.warehouse import quote, table_exists, transaction

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
    """Refuse sources that would build wrong history quietly: a missing table, or a declared
    column the table lacks. (Types are the warehouse's own; empty required values are a window
    check, ``sources_are_valid``: scanning every source row costs more than a one-day repair.)"""
    problems = source_problems(conn, plan.sources)
    if problems:
        raise BuildError(f"{plan.name}/{version}: " + "; ".join(problems) + ".")


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
            f"{[s.table for s in plan.sources]} exist with the columns the SQL reads."
        ) from error
    types = {row[0]: row[1] for row in conn.execute(f"DESCRIBE {STAGE}").fetchall()}
    problems = output_type_problems(plan.spec, types)
    if problems:
        raise BuildError(
            f"{plan.name}/{version}: the SQL's output cannot be checked: "
            + "; ".join(f"{field}: {problem}" for field, problem in problems)
            + ". Fix: correct the types in the SQL or the source table."
        )
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


def build_window(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: dt.date,
    end: dt.date,
    run_id: str,
    published: bool = False,
) -> BuildResult:
    """Build the days ``[start, end)`` of one version and write them atomically.

    ``published``: users see this version now, so a day failing its checks keeps its rows.
    """
    if end <= start:
        raise BuildError(
            f"{plan.name}/{version}: empty window {start}..{end}; end must be after start"
        )
    if start < plan.spec.partitions.start:
        raise BuildError(
            f"{plan.name}/{version}: {start} is before the first partition "
            f"{plan.spec.partitions.start}. Fix: choose days inside the partitions."
        )
    evidence.ensure_evidence(conn)
    started = time.perf_counter()
    check_sources(conn, plan, version)
    _stage(conn, plan, version, start, end)
    stage_fingerprints(conn, plan, start, end)
    days = run_partition_checks(conn, plan, version, STAGE, start, end)
    _ensure_model_table(conn, plan, version)
    held = [d.day for d in days if not d.passed] if published else []
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
            verdicts = [(d.day, d.passed, d.checks) for d in days]
            evidence.replace_window(
                conn,
                plan,
                version,
                start,
                end,
                STAGE,
                FINGERPRINTS,
                verdicts,
                held,
                run_id,
                seconds,
            )
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {quote(STAGE)}")
    return BuildResult(plan.name, version, start, end, days, held)
