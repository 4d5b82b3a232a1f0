"""Building a window of partitions for one version of a plan: stage, prove, swap in atomically.

A build of the partitions ``[start, end)``:

1. runs the version's SQL once over the whole window into a temporary staging table;
2. computes each partition's source fingerprint (``fingerprint.py``);
3. computes each partition's checks on the staged rows (``partition_checks.py``);
4. in ONE transaction deletes the window from ``models.<plan>__<version>``, inserts the staged
   rows and replaces the window's evidence (``evidence.py``).

Write-audit-publish: when the version is the one ``analytics.<plan>`` publishes, a partition that
fails a check is not written; users keep seeing its previous rows, and its evidence records the
rejected build (``applied = false``, ``checks_passed = false``). Other versions are written
whole, failing partitions included, so they can be inspected; the promotion gate refuses them.

A failure anywhere before the commit leaves every partition and its evidence as they were;
running the same window again leaves identical content.
"""

import time
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import STAGE as FINGERPRINTS
from backfill_assets.fingerprint import stage_fingerprints
from backfill_assets.partition_checks import PartitionChecks, run_partition_checks
from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan, output_type_problems, window_params
from backfill_assets.sources import source_problems
from backfill_assets.warehouse import committed, quote, retrying, table_exists

STAGE = "backfill_stage"


class BuildError(RuntimeError):
    """A window that cannot be built; nothing was written."""


@dataclass(frozen=True)
class BuildResult:
    """What one build wrote, per partition."""

    plan: str
    version: str
    start: Partition
    end: Partition  # exclusive
    partitions: list[PartitionChecks]
    held: list[Partition]  # failing partitions not written because the version is published

    @property
    def rows(self) -> int:
        return sum(p.row_count for p in self.partitions)

    @property
    def failing(self) -> list[PartitionChecks]:
        return [p for p in self.partitions if not p.passed]


def check_sources(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> None:
    """Refuse sources that would build wrong history quietly: a missing table, or a declared
    column the table lacks. (Types are the warehouse's own; empty required values are a window
    check, ``sources_are_valid``: scanning every source row costs more than a one-day repair.)"""
    problems = source_problems(conn, plan.sources)
    if problems:
        raise BuildError(f"{plan.name}/{version}: " + "; ".join(problems) + ".")


def _window_text(plan: Plan, start: Partition, end: Partition) -> str:
    """``2024-01-01..2024-01-31``: a window's first and last partition."""
    last = plan.cadence.starts(start, end)[-1]
    return f"{plan.cadence.label(start)}..{plan.cadence.label(last)}"


def _stage(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> None:
    sql = plan.version_sql(version)
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM ({sql})",
            window_params(sql, plan.cadence, start, end),
        )
    except duckdb.Error as error:
        raise BuildError(
            f"{plan.name}/{version}: the version's SQL failed for "
            f"{_window_text(plan, start, end)}: "
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
    pc, cadence = plan.partition_column, plan.cadence
    misplaced = conn.execute(
        f"SELECT count(*), min({pc}) FROM {STAGE} "
        f"WHERE {pc} IS NULL OR {pc} < $start OR {pc} >= $end "
        f"OR {pc} <> {cadence.sql_start_of(pc)}",
        {"start": start, "end": end},
    ).fetchone()
    if misplaced[0]:
        raise BuildError(
            f"{plan.name}/{version}: the SQL returned {misplaced[0]} row(s) whose "
            f"{plan.spec.partition_column} is not the start of a {cadence.word} of the window "
            f"{_window_text(plan, start, end)} (e.g. {misplaced[1]}). Fix: filter the SQL on "
            f"$start <= {plan.spec.partition_column} < $end and give each row the first "
            f"{'hour (UTC)' if cadence.is_hourly else 'day'} of its {cadence.word}."
        )


def _ensure_model_table(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> None:
    table = plan.table_name(version)
    if not table_exists(conn, "models", table):
        # IF NOT EXISTS: on a DuckLake another writer may create it in between (its columns
        # are compared below, as any existing table's are).
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {plan.model_table(version)} AS FROM {STAGE} LIMIT 0"
        )
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
    start: Partition,
    end: Partition,
    run_id: str,
    published: bool = False,
) -> BuildResult:
    """Build the partitions ``[start, end)`` of one version and write them atomically.

    ``published``: users see this version now, so a partition failing its checks keeps its
    rows (write-audit-publish).
    """
    cadence = plan.cadence
    start, end = cadence.value(start), cadence.value(end)
    if end <= start or not cadence.starts(start, end):
        raise BuildError(
            f"{plan.name}/{version}: empty window {start}..{end}; end must be after start"
        )
    for bound, which in ((start, "first"), (end, "one after the last")):
        if cadence.floor(bound) != bound:
            raise BuildError(
                f"{plan.name}/{version}: {bound} is not the start of a {cadence.word} "
                f"({cadence.floor(bound)} is). Fix: give the {which} partition of the window "
                "(windows are [start, end) of partition starts)."
            )
    if start < plan.first_partition:
        raise BuildError(
            f"{plan.name}/{version}: {cadence.label(start)} is before the first partition "
            f"{cadence.label(plan.first_partition)}. Fix: choose partitions inside the plan's."
        )
    evidence.ensure_evidence(conn)
    started = time.perf_counter()
    check_sources(conn, plan, version)
    _stage(conn, plan, version, start, end)
    stage_fingerprints(conn, plan, start, end)
    partitions = run_partition_checks(conn, plan, version, STAGE, start, end)
    what = f"{plan.name}/{version} {_window_text(plan, start, end)}"
    # On a DuckLake another writer may create the table first; then this one compares with it.
    retrying(conn, lambda: _ensure_model_table(conn, plan, version), what)
    held = [p.partition for p in partitions if not p.passed] if published else []
    pc = plan.partition_column
    keep = f"NOT list_contains(CAST($held AS {cadence.column_type}[]), {pc})"

    def write() -> None:
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
        evidence.replace_window(
            conn,
            plan,
            version,
            start,
            end,
            FINGERPRINTS,
            partitions,
            held,
            run_id,
            seconds,
        )

    try:
        # One transaction; on a DuckLake, run again when its commit conflicts with another
        # writer's (on the DuckDB file it runs once, as a plain transaction).
        committed(conn, write, what)
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {quote(STAGE)}")
    return BuildResult(plan.name, version, start, end, partitions, held)
