"""Source fingerprints: what each partition was built from, and whether the sources still say so.

A partition's *source slice* is every source row that can change that partition's output. A
plan either writes it as SQL (``source_slice``: one row per partition of ``[$start, $end)`` and
source row, with ``partition_start, source, loaded_at, row_hash``), which can follow keys
across partitions (an order re-sent on another day), or leaves it to the declarations: an event
source's rows belong to the partition of their ``event_time`` and the ``lookback`` partitions
after it, and a dimension (no ``event_time``) belongs to every partition as a whole.

A partition's fingerprint is the count of its slice's rows and the sum of their hashes: it
changes when any row is added, removed or altered, whatever its ``loaded_at`` says, and it is
computed inside DuckDB for every partition of a window in one statement. (``hash`` is DuckDB's
own; a DuckDB upgrade that changes it makes every partition look changed once, which costs a
rebuild and loses nothing.)
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.partitions import Partition, stamp
from backfill_assets.plan import Plan, window_params
from backfill_assets.sources import Source
from backfill_assets.warehouse import quote

STAGE = "backfill_stage_fingerprints"
_HASH = "CAST(hash(t) AS HUGEINT)"


def _loaded(source: Source) -> str:
    return f"t.{quote(source.loaded_at)}" if source.loaded_at else "CAST(NULL AS TIMESTAMP)"


def placed_sql(plan: Plan, source: Source) -> tuple[str, str, str]:
    """(partition expression, FROM clause, WHERE clause) placing an event source's rows in
    their partition and the ``lookback`` partitions after it."""
    cadence, lookback = plan.cadence, plan.spec.lookback
    column = f"t.{quote(source.event_time or '')}"
    floor = cadence.sql_floor(column)
    if not lookback:
        return (
            f"CAST({floor} AS TIMESTAMP)",
            f"{source.relation} AS t",
            f"{column} >= $start_utc AND {column} < $end_utc",
        )
    earliest = cadence.sql_step("CAST($start_utc AS TIMESTAMP)", f"-{lookback}")
    return (
        f"CAST({cadence.sql_step(floor, 'k')} AS TIMESTAMP)",
        f"{source.relation} AS t, range(0, {lookback + 1}) AS r(k)",
        f"{column} >= {earliest} AND {column} < $end_utc",
    )


def _per_partition_parts(plan: Plan) -> str:
    """Per partition: rows, max loaded_at and hash sum, one SELECT per source, unioned."""
    if plan.source_slice_sql is not None:
        return f"""
            SELECT CAST(partition_start AS TIMESTAMP) AS partition_start, count(*) AS n,
                   max(loaded_at) AS loaded, sum(CAST(row_hash AS HUGEINT)) AS h
            FROM ({plan.source_slice_sql}) GROUP BY ALL
        """
    parts = []
    for source in plan.sources:
        if source.is_dimension:
            parts.append(
                f"SELECT p.partition_start, w.n, w.loaded, w.h FROM partitions AS p, "
                f"(SELECT count(*) AS n, max({_loaded(source)}) AS loaded, sum({_HASH}) AS h "
                f"FROM {source.relation} AS t) AS w"
            )
        else:
            placed, source_from, where = placed_sql(plan, source)
            parts.append(
                f"SELECT {placed} AS partition_start, count(*) AS n, "
                f"max({_loaded(source)}) AS loaded, sum({_HASH}) AS h "
                f"FROM {source_from} WHERE {where} GROUP BY ALL"
            )
    return " UNION ALL ".join(parts)


def fingerprint_query(plan: Plan) -> str:
    """One row per partition of ``$partitions`` (the window's starts, ``[$start, $end)``):
    source_rows, max loaded_at, fingerprint."""
    return f"""
        WITH partitions AS (
            SELECT unnest(CAST($partitions AS TIMESTAMP[])) AS partition_start
        ),
        parts AS ({_per_partition_parts(plan)}),
        per_partition AS (
            SELECT partition_start, sum(n) AS source_rows, max(loaded) AS source_max_loaded_at,
                   sum(h) AS hash_sum
            FROM parts GROUP BY partition_start
        )
        SELECT
            p.partition_start,
            CAST(coalesce(f.source_rows, 0) AS BIGINT) AS source_rows,
            f.source_max_loaded_at,
            CAST(coalesce(f.source_rows, 0) AS VARCHAR) || ':'
                || CAST(coalesce(f.hash_sum, 0) AS VARCHAR) AS source_fingerprint
        FROM partitions AS p
        LEFT JOIN per_partition AS f USING (partition_start)
    """


def query_params(plan: Plan, sql: str, start: Partition, end: Partition) -> dict:
    """Every parameter a fingerprint or slice query over ``[start, end)`` may use."""
    params = window_params(sql, plan.cadence, start, end)
    if "$partitions" in sql:
        params["partitions"] = [stamp(p) for p in plan.cadence.starts(start, end)]
    return params


def partitions_loaded_since_query(plan: Plan, moved: list[Source]) -> str | None:
    """SQL listing the partitions of ``[$start, $end)`` that rows of the ``moved`` sources
    loaded after ``$since`` reach, or None when only a full comparison can tell (a moved
    dimension reaches every partition; a source without ``loaded_at`` cannot say which rows
    are new).

    With the plan's own slice SQL, its rows loaded after ``$since``, whatever source they come
    from: a superset of the new rows, so no changed partition is missed.
    """
    if any(source.is_dimension or not source.loaded_at for source in moved):
        return None
    if plan.source_slice_sql is not None:
        return (
            "SELECT DISTINCT CAST(partition_start AS TIMESTAMP) AS partition_start "
            f"FROM ({plan.source_slice_sql}) WHERE loaded_at > $since ORDER BY 1"
        )
    parts = []
    for source in moved:
        placed, source_from, where = placed_sql(plan, source)
        parts.append(
            f"SELECT {placed} AS partition_start FROM {source_from} "
            f"WHERE {where} AND t.{quote(source.loaded_at or '')} > $since"
        )
    union = " UNION ".join(parts)
    return (
        f"SELECT DISTINCT partition_start FROM ({union}) "
        "WHERE partition_start >= CAST($start AS TIMESTAMP) "
        "AND partition_start < CAST($end AS TIMESTAMP) "
        "ORDER BY 1"
    )


def stage_fingerprints(
    conn: duckdb.DuckDBPyConnection, plan: Plan, start: Partition, end: Partition
):
    """Compute the window's fingerprints into the temporary table ``STAGE``."""
    sql = fingerprint_query(plan)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {sql}", query_params(plan, sql, start, end)
    )


@dataclass(frozen=True)
class ChangedPartition:
    """A built partition whose sources no longer match its evidence."""

    version: str
    partition: Partition
    built_fingerprint: str
    current_fingerprint: str
    source_max_loaded_at: dt.datetime | None


def changed_partitions(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    start: Partition,
    end: Partition,
    versions: list[str] | None = None,
) -> list[ChangedPartition]:
    """Every built partition in ``[start, end)`` whose stored fingerprint differs from the
    sources now.

    One statement for all partitions and versions: the current fingerprints of the window are
    computed once and joined to the evidence. Oldest change first.
    """
    sql = fingerprint_query(plan)
    rows = evidence.fingerprint_mismatches(
        conn, plan, sql, query_params(plan, sql, start, end), versions or plan.version_names
    )
    return [ChangedPartition(*row) for row in rows]
