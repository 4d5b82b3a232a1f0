"""Partition evidence: what each built day was made from and how it checked out.

``backfill.partition_evidence`` holds one row per (plan, version, day): rows, the source
fingerprint, the newest ``loaded_at`` of the source slice, the ``code_version``, each
per-partition check's verdict and figures, whether the rows were applied, the run and when. It
is written in the same transaction as the day's rows (ARCHITECTURE.md §4.2), so it survives
multi-partition runs where Dagster cannot attach a check result to a partition, and it is what
the promotion gate trusts.

This module is the only one that reads or writes the table; every other module asks it.
"""

import datetime as dt
import json

import duckdb

from backfill_assets.plan import Plan
from backfill_assets.warehouse import UTC_NOW, ensure_schema, table_exists

TABLE = "backfill.partition_evidence"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    day DATE NOT NULL,
    row_count BIGINT NOT NULL,
    source_rows BIGINT NOT NULL,
    source_max_loaded_at TIMESTAMP,
    source_fingerprint VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    checks_passed BOOLEAN NOT NULL,
    checks JSON NOT NULL,
    applied BOOLEAN NOT NULL,
    run_id VARCHAR NOT NULL,
    written_at TIMESTAMP NOT NULL,
    build_seconds DOUBLE
)
"""


def ensure_evidence(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the project's schemas and the evidence table if they do not exist."""
    ensure_schema(conn)
    conn.execute(_DDL)
    columns = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'backfill' AND table_name = 'partition_evidence'"
        ).fetchall()
    }
    # Warehouses written before sources were declared called the column after one source's.
    if "source_max_ingested_at" in columns:
        conn.execute(f"ALTER TABLE {TABLE} RENAME source_max_ingested_at TO source_max_loaded_at")
    if "build_seconds" not in columns:
        conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN build_seconds DOUBLE")


def exists(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether anything was ever built here (read-only readers cannot create the table)."""
    return table_exists(conn, "backfill", "partition_evidence")


def replace_window(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: dt.date,
    end: dt.date,
    stage: str,
    fingerprints: str,
    checks: list[tuple[dt.date, bool, dict]],
    held: list[dt.date],
    run_id: str,
    build_seconds: float,
) -> None:
    """Replace the evidence of the days ``[start, end)`` (call inside the write transaction).

    ``stage`` holds the built rows and ``fingerprints`` one row per day (``day, source_rows,
    source_max_loaded_at, source_fingerprint``); ``checks`` is each day's verdict and figures.
    ``build_seconds`` is spread evenly over the days: what preflight's ETA is made of.
    """
    conn.execute(
        f"DELETE FROM {TABLE} "
        "WHERE model = $model AND version = $version AND day >= $start AND day < $end",
        {"model": plan.name, "version": version, "start": start, "end": end},
    )
    conn.execute("CREATE OR REPLACE TEMP TABLE evidence_checks (day DATE, ok BOOLEAN, c JSON)")
    conn.executemany(
        "INSERT INTO evidence_checks VALUES (?, ?, ?)",
        [(day.isoformat(), ok, json.dumps(figures, default=str)) for day, ok, figures in checks],
    )
    conn.execute(
        f"""
        INSERT INTO {TABLE}
        SELECT
            $model, $version, f.day,
            (SELECT count(*) FROM {stage} AS s WHERE s.{plan.partition_column} = f.day),
            f.source_rows, f.source_max_loaded_at, f.source_fingerprint,
            $code_version, c.ok, c.c, NOT list_contains(CAST($held AS DATE[]), f.day),
            $run_id, {UTC_NOW}, $build_seconds
        FROM {fingerprints} AS f
        JOIN evidence_checks AS c USING (day)
        """,
        {
            "model": plan.name,
            "version": version,
            "code_version": plan.version(version).code_version,
            "run_id": run_id,
            "held": held,
            "build_seconds": build_seconds / max(len(checks), 1),
        },
    )
    conn.execute("DROP TABLE evidence_checks")


def fingerprint_mismatches(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    current_sql: str,
    params: dict,
    versions: list[str],
) -> list[tuple]:
    """Built days whose stored fingerprint differs from ``current_sql``'s (one row per day:
    ``day, source_rows, source_max_loaded_at, source_fingerprint``), oldest first.

    Returns ``(version, day, stored, current, current max loaded_at)`` rows.
    """
    return conn.execute(
        f"""
        WITH current AS ({current_sql})
        SELECT e.version, e.day, e.source_fingerprint, c.source_fingerprint,
               c.source_max_loaded_at
        FROM {TABLE} AS e
        JOIN current AS c USING (day)
        WHERE e.model = $model
          AND list_contains($versions, e.version)
          AND e.source_fingerprint <> c.source_fingerprint
        ORDER BY e.day, e.version
        """,
        {**params, "model": plan.name, "versions": versions},
    ).fetchall()


def built_span(
    conn: duckdb.DuckDBPyConnection, plan: Plan, start: dt.date, end: dt.date
) -> tuple[dt.date | None, dt.date | None]:
    """The first and last built day of any version in ``[start, end)``."""
    if not exists(conn):
        return None, None
    return conn.execute(
        f"SELECT min(day), max(day) FROM {TABLE} WHERE model = ? AND day >= ? AND day < ?",
        [plan.name, start, end],
    ).fetchone()


def days_outside(conn: duckdb.DuckDBPyConnection, plan: Plan, start: dt.date, end: dt.date) -> int:
    """How many distinct built days lie outside ``[start, end)``."""
    if not exists(conn):
        return 0
    return conn.execute(
        f"SELECT count(DISTINCT day) FROM {TABLE} WHERE model = ? AND (day < ? OR day >= ?)",
        [plan.name, start, end],
    ).fetchone()[0]


def missing_or_thin(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: dt.date,
    end: dt.date,
    minimum: int,
) -> list[tuple[dt.date, int | None]]:
    """Days of ``[start, end)`` without evidence (row count None) or with fewer rows."""
    return conn.execute(
        f"""
        WITH days AS (
            SELECT CAST(range AS DATE) AS day
            FROM range(CAST($start AS TIMESTAMP), CAST($end AS TIMESTAMP), INTERVAL 1 DAY)
        )
        SELECT d.day, e.row_count
        FROM days AS d
        LEFT JOIN {TABLE} AS e
            ON e.day = d.day AND e.model = $model AND e.version = $version
        WHERE e.day IS NULL OR e.row_count < $minimum
        ORDER BY d.day
        """,
        {"start": start, "end": end, "model": plan.name, "version": version, "minimum": minimum},
    ).fetchall()


def failing_days(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: dt.date, end: dt.date
) -> list[tuple[dt.date, dict]]:
    """Days whose per-partition checks failed, with each check's verdict and figures."""
    rows = conn.execute(
        f"SELECT day, checks FROM {TABLE} WHERE model = ? AND version = ? AND day >= ? "
        "AND day < ? AND NOT checks_passed ORDER BY day",
        [plan.name, version, start, end],
    ).fetchall()
    return [(day, json.loads(checks)) for day, checks in rows]


def stale_code_days(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: dt.date, end: dt.date
) -> list[tuple[dt.date, str]]:
    """Days built with another ``code_version`` than the plan's current one."""
    return conn.execute(
        f"SELECT day, code_version FROM {TABLE} WHERE model = ? AND version = ? AND day >= ? "
        "AND day < ? AND code_version <> ? ORDER BY day",
        [plan.name, version, start, end, plan.version(version).code_version],
    ).fetchall()


def current_code_days(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: dt.date, end: dt.date
) -> set[dt.date]:
    """Days applied with the current ``code_version`` (sources not compared)."""
    rows = conn.execute(
        f"SELECT day FROM {TABLE} WHERE model = ? AND version = ? AND day >= ? AND day < ? "
        "AND code_version = ? AND applied",
        [plan.name, version, start, end, plan.version(version).code_version],
    ).fetchall()
    return {day for (day,) in rows}


def newest_applied_day(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> dt.date | None:
    """The newest day whose rows users of this version see."""
    return conn.execute(
        f"SELECT max(day) FROM {TABLE} WHERE model = ? AND version = ? AND applied",
        [plan.name, version],
    ).fetchone()[0]


def build_sizes(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> list[tuple]:
    """Per recorded build of the version: (days, seconds)."""
    return conn.execute(
        f"""
        SELECT count(*) AS days, sum(build_seconds) AS seconds
        FROM {TABLE}
        WHERE model = ? AND version = ? AND build_seconds IS NOT NULL
        GROUP BY run_id, written_at
        """,
        [plan.name, version],
    ).fetchall()


def counts(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: dt.date, end: dt.date
) -> tuple[int, int]:
    """Days built and days failing their checks in ``[start, end)``."""
    return conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE NOT checks_passed) FROM {TABLE} "
        "WHERE model = ? AND version = ? AND day >= ? AND day < ?",
        [plan.name, version, start, end],
    ).fetchone()


def summary(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Per plan and version: days with evidence, rows, days failing a partition check."""
    return conn.execute(
        f"""
        SELECT model, version, count(*) AS days, sum(row_count) AS rows,
               count(*) FILTER (WHERE NOT checks_passed) AS failing_days
        FROM {TABLE}
        GROUP BY model, version
        ORDER BY model, version
        """
    ).fetchall()


def last_write(
    conn: duckdb.DuckDBPyConnection, plan: Plan, settle_seconds: int
) -> tuple[dt.datetime | None, bool | None]:
    """When the plan's evidence was last written, and whether that is ``settle_seconds`` ago."""
    if not exists(conn):
        return None, None
    return conn.execute(
        f"SELECT max(written_at), max(written_at) < {UTC_NOW} - INTERVAL (?) SECOND "
        f"FROM {TABLE} WHERE model = ?",
        [settle_seconds, plan.name],
    ).fetchone()
