"""Source fingerprints: what each day was built from, and whether the sources still say that.

A plan's ``source_slice`` SQL lists, for every day of ``[$start, $end)``, the raw rows that can
change that day's output (``day, source, ingested_at, row_hash``). A day's fingerprint is the
count of those rows and the sum of their hashes: it changes when any row of the slice is added,
removed or altered, whatever its ``ingested_at`` says, and it is computed inside DuckDB for
every day of a window in one statement. (``hash`` is DuckDB's own; a DuckDB upgrade that changes
it makes every day look changed once, which costs a rebuild and loses nothing.)
"""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets.plan import Plan


def fingerprint_query(plan: Plan) -> str:
    """One row per day of ``[$start, $end)``: source_rows, max ingested_at, fingerprint."""
    return f"""
        WITH days AS (
            SELECT CAST(range AS DATE) AS day
            FROM range(CAST($start AS TIMESTAMP), CAST($end AS TIMESTAMP), INTERVAL 1 DAY)
        ),
        slice AS ({plan.source_slice_sql}),
        per_day AS (
            SELECT
                day,
                count(*) AS source_rows,
                max(ingested_at) AS source_max_ingested_at,
                sum(CAST(row_hash AS HUGEINT)) AS hash_sum
            FROM slice
            GROUP BY day
        )
        SELECT
            d.day,
            coalesce(p.source_rows, 0) AS source_rows,
            p.source_max_ingested_at,
            CAST(coalesce(p.source_rows, 0) AS VARCHAR) || ':'
                || CAST(coalesce(p.hash_sum, 0) AS VARCHAR) AS source_fingerprint
        FROM days AS d
        LEFT JOIN per_day AS p USING (day)
    """


def stage_fingerprints(conn: duckdb.DuckDBPyConnection, plan: Plan, start: dt.date, end: dt.date):
    """Compute the window's fingerprints into ``backfill_stage_fingerprints``."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE backfill_stage_fingerprints AS {fingerprint_query(plan)}",
        {"start": start, "end": end},
    )


@dataclass(frozen=True)
class ChangedDay:
    """A built day whose sources no longer match its evidence."""

    version: str
    day: dt.date
    built_fingerprint: str
    current_fingerprint: str
    source_max_ingested_at: dt.datetime | None


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
    versions = versions or plan.version_names
    rows = conn.execute(
        f"""
        WITH current AS ({fingerprint_query(plan)})
        SELECT e.version, e.day, e.source_fingerprint, c.source_fingerprint,
               c.source_max_ingested_at
        FROM backfill.partition_evidence AS e
        JOIN current AS c USING (day)
        WHERE e.model = $model
          AND list_contains($versions, e.version)
          AND e.source_fingerprint <> c.source_fingerprint
        ORDER BY e.day, e.version
        """,
        {"start": start, "end": end, "model": plan.name, "versions": versions},
    ).fetchall()
    return [ChangedDay(*row) for row in rows]
