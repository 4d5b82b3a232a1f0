"""Source fingerprints: what each day was built from, and whether the sources still say that.

A day's *source slice* is every source row that can change that day's output. A plan either
writes it as SQL (``source_slice``: one row per day of ``[$start, $end)`` and source row, with
``day, source, loaded_at, row_hash``), which can follow keys across days (an order re-sent on
another day), or leaves it to the declarations: an event source's rows belong to the day of
their ``event_time`` and the ``lookback`` days after it, and a dimension (no ``event_time``)
belongs to every day as a whole.

A day's fingerprint is the count of its slice's rows and the sum of their hashes: it changes
when any row is added, removed or altered, whatever its ``loaded_at`` says, and it is computed
inside DuckDB for every day of a window in one statement. (``hash`` is DuckDB's own; a DuckDB
upgrade that changes it makes every day look changed once, which costs a rebuild and loses
nothing.)
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.plan import Plan
from backfill_assets.sources import Source
from backfill_assets.warehouse import quote

STAGE = "backfill_stage_fingerprints"
_HASH = "CAST(hash(t) AS HUGEINT)"


def _loaded(source: Source) -> str:
    return f"t.{quote(source.loaded_at)}" if source.loaded_at else "CAST(NULL AS TIMESTAMP)"


def _event_day(source: Source, lookback: int) -> tuple[str, str, str]:
    """(day expression, FROM clause, WHERE clause) placing an event source's rows on days."""
    column = f"t.{quote(source.event_time or '')}"
    if not lookback:
        return (
            f"CAST({column} AS DATE)",
            f"{source.relation} AS t",
            (f"{column} >= $start AND {column} < $end"),
        )
    return (
        f"CAST({column} AS DATE) + CAST(k AS INTEGER)",
        f"{source.relation} AS t, range(0, {lookback + 1}) AS r(k)",
        f"{column} >= CAST($start AS DATE) - {lookback} AND {column} < $end",
    )


def _per_day_parts(plan: Plan) -> str:
    """Per day: source_rows, max loaded_at and hash sum, one SELECT per source, unioned."""
    if plan.source_slice_sql is not None:
        return f"""
            SELECT day, count(*) AS n, max(loaded_at) AS loaded, sum(CAST(row_hash AS HUGEINT)) AS h
            FROM ({plan.source_slice_sql}) GROUP BY day
        """
    parts = []
    for source in plan.sources:
        if source.is_dimension:
            parts.append(
                f"SELECT d.day, w.n, w.loaded, w.h FROM days AS d, "
                f"(SELECT count(*) AS n, max({_loaded(source)}) AS loaded, sum({_HASH}) AS h "
                f"FROM {source.relation} AS t) AS w"
            )
        else:
            day, source_from, where = _event_day(source, plan.spec.lookback)
            parts.append(
                f"SELECT {day} AS day, count(*) AS n, max({_loaded(source)}) AS loaded, "
                f"sum({_HASH}) AS h FROM {source_from} WHERE {where} GROUP BY ALL"
            )
    return " UNION ALL ".join(parts)


def fingerprint_query(plan: Plan) -> str:
    """One row per day of ``[$start, $end)``: source_rows, max loaded_at, fingerprint."""
    return f"""
        WITH days AS (
            SELECT CAST(range AS DATE) AS day
            FROM range(CAST($start AS TIMESTAMP), CAST($end AS TIMESTAMP), INTERVAL 1 DAY)
        ),
        parts AS ({_per_day_parts(plan)}),
        per_day AS (
            SELECT day, sum(n) AS source_rows, max(loaded) AS source_max_loaded_at,
                   sum(h) AS hash_sum
            FROM parts GROUP BY day
        )
        SELECT
            d.day,
            CAST(coalesce(p.source_rows, 0) AS BIGINT) AS source_rows,
            p.source_max_loaded_at,
            CAST(coalesce(p.source_rows, 0) AS VARCHAR) || ':'
                || CAST(coalesce(p.hash_sum, 0) AS VARCHAR) AS source_fingerprint
        FROM days AS d
        LEFT JOIN per_day AS p USING (day)
    """


def days_loaded_since_query(plan: Plan, moved: list[Source]) -> str | None:
    """SQL listing the days of ``[$start, $end)`` that rows of the ``moved`` sources loaded
    after ``$since`` reach, or None when only a full comparison can tell (a moved dimension
    reaches every day; a source without ``loaded_at`` cannot say which rows are new).

    With the plan's own slice SQL, its rows loaded after ``$since``, whatever source they come
    from: a superset of the new rows, so no changed day is missed.
    """
    if any(source.is_dimension or not source.loaded_at for source in moved):
        return None
    if plan.source_slice_sql is not None:
        return (
            f"SELECT DISTINCT day FROM ({plan.source_slice_sql}) WHERE loaded_at > $since "
            "ORDER BY day"
        )
    parts = []
    for source in moved:
        day, source_from, where = _event_day(source, plan.spec.lookback)
        parts.append(
            f"SELECT {day} AS day FROM {source_from} "
            f"WHERE {where} AND t.{quote(source.loaded_at or '')} > $since"
        )
    union = " UNION ".join(parts)
    return f"SELECT DISTINCT day FROM ({union}) WHERE day >= $start AND day < $end ORDER BY day"


def stage_fingerprints(conn: duckdb.DuckDBPyConnection, plan: Plan, start: dt.date, end: dt.date):
    """Compute the window's fingerprints into the temporary table ``STAGE``."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {STAGE} AS {fingerprint_query(plan)}",
        {"start": start, "end": end},
    )


@dataclass(frozen=True)
class ChangedDay:
    """A built day whose sources no longer match its evidence."""

    version: str
    day: dt.date
    built_fingerprint: str
    current_fingerprint: str
    source_max_loaded_at: dt.datetime | None


def changed_days(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    start: dt.date,
    end: dt.date,
    versions: list[str] | None = None,
) -> list[ChangedDay]:
    """Every built day in ``[start, end)`` whose stored fingerprint differs from the sources now.

    One statement for all days and versions: the current fingerprints of the window are computed
    once and joined to the evidence. Oldest change first.
    """
    rows = evidence.fingerprint_mismatches(
        conn,
        plan,
        fingerprint_query(plan),
        {"start": start, "end": end},
        versions or plan.version_names,
    )
    return [ChangedDay(*row) for row in rows]
