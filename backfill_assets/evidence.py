"""Partition evidence: what each built day was made from and how it checked out.

``backfill.partition_evidence`` holds one row per (plan, version, partition): its start and
end (``partition_start``, ``partition_end``; a partition is named as ``partitions.py`` says: a
local date, or a UTC hour), rows, the source
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

from backfill_assets.partition_checks import PartitionChecks
from backfill_assets.partitions import Partition, stamp
from backfill_assets.plan import Plan
from backfill_assets.warehouse import (
    SCHEMAS,
    UTC_NOW,
    ensure_schema,
    execute_ddl,
    table_exists,
)

TABLE = "backfill.partition_evidence"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    partition_start TIMESTAMP NOT NULL,
    partition_end TIMESTAMP NOT NULL,
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


# The state ``ensure_evidence`` needs, in one catalog query: how many of the project's schemas
# exist, and the evidence table's columns (NULL when it does not exist).
_STATE = """
SELECT
    (SELECT count(*) FROM duckdb_schemas()
     WHERE database_name = current_database() AND list_contains($schemas, schema_name)),
    (SELECT list(column_name) FROM duckdb_columns()
     WHERE database_name = current_database()
       AND schema_name = 'backfill' AND table_name = 'partition_evidence')
"""


def _state(conn: duckdb.DuckDBPyConnection) -> tuple[int, set[str]]:
    schemas, columns = conn.execute(_STATE, {"schemas": list(SCHEMAS)}).fetchone()
    return schemas, set(columns or [])


def ensure_evidence(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the project's schemas and the evidence table if they do not exist, and bring a
    table written by an older release up to date. Every build calls it: when all is in place,
    which is nearly always, it is one catalog query."""
    schemas, columns = _state(conn)
    if schemas < len(SCHEMAS) or not columns:
        ensure_schema(conn)
        execute_ddl(conn, _DDL)  # on a DuckLake, two first writers may both create it
        _, columns = _state(conn)
    # Warehouses written before sources were declared called the column after one source's.
    if "source_max_ingested_at" in columns:
        conn.execute(f"ALTER TABLE {TABLE} RENAME source_max_ingested_at TO source_max_loaded_at")
    if "build_seconds" not in columns:
        conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN build_seconds DOUBLE")
    # ...and keyed partitions by day, when every plan was daily.
    if "day" in columns:
        conn.execute(f"ALTER TABLE {TABLE} RENAME day TO partition_start")
        conn.execute(f"ALTER TABLE {TABLE} ALTER partition_start TYPE TIMESTAMP")
        conn.execute(
            f"ALTER TABLE {TABLE} ADD COLUMN partition_end TIMESTAMP DEFAULT TIMESTAMP '1970-01-01'"
        )
        conn.execute(f"UPDATE {TABLE} SET partition_end = partition_start + INTERVAL 1 DAY")


def exists(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether anything was ever built here (read-only readers cannot create the table)."""
    return table_exists(conn, "backfill", "partition_evidence")


def replace_window(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    start: Partition,
    end: Partition,
    fingerprints: str,
    checks: list[PartitionChecks],
    held: list[Partition],
    run_id: str,
    build_seconds: float,
) -> None:
    """Replace the evidence of the partitions ``[start, end)`` (call inside the write
    transaction).

    ``fingerprints`` is a table of one row per partition (``partition_start, source_rows,
    source_max_loaded_at, source_fingerprint``); ``checks`` is each partition's staged row
    count, verdict and figures. ``build_seconds`` is spread evenly over the partitions: what
    preflight's ETA is made of.
    """
    cadence = plan.cadence
    conn.execute(
        f"DELETE FROM {TABLE} WHERE model = $model AND version = $version "
        "AND partition_start >= $start AND partition_start < $end",
        {"model": plan.name, "version": version, "start": start, "end": end},
    )
    # The verdicts travel as bound lists, unnested side by side into one row per partition: no
    # temporary table to create, fill and drop inside the write transaction. BY NAME: a table
    # an older release created and ``ensure_evidence`` brought up to date has its columns in
    # another order.
    conn.execute(
        f"""
        INSERT INTO {TABLE} BY NAME
        SELECT
            $model AS model, $version AS version, f.partition_start, c.partition_end,
            c.row_count, f.source_rows, f.source_max_loaded_at, f.source_fingerprint,
            $code_version AS code_version, c.checks_passed, c.checks,
            NOT list_contains(CAST($held AS TIMESTAMP[]), f.partition_start) AS applied,
            $run_id AS run_id, {UTC_NOW} AS written_at, $build_seconds AS build_seconds
        FROM {fingerprints} AS f
        JOIN (
            SELECT unnest(CAST($starts AS TIMESTAMP[])) AS partition_start,
                   unnest(CAST($ends AS TIMESTAMP[])) AS partition_end,
                   unnest(CAST($rows AS BIGINT[])) AS row_count,
                   unnest(CAST($oks AS BOOLEAN[])) AS checks_passed,
                   unnest(CAST($figures AS JSON[])) AS checks
        ) AS c USING (partition_start)
        """,
        {
            "model": plan.name,
            "version": version,
            "code_version": plan.version(version).code_version,
            "run_id": run_id,
            "held": [stamp(h) for h in held],
            "build_seconds": build_seconds / max(len(checks), 1),
            "starts": [stamp(p.partition) for p in checks],
            "ends": [stamp(cadence.next(p.partition)) for p in checks],
            "rows": [p.row_count for p in checks],
            "oks": [p.passed for p in checks],
            "figures": [json.dumps(p.checks, default=str) for p in checks],
        },
    )


def fingerprint_mismatches(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    current_sql: str,
    params: dict,
    versions: list[str],
) -> list[tuple]:
    """Built partitions whose stored fingerprint differs from ``current_sql``'s (one row per
    partition: ``partition_start, source_rows, source_max_loaded_at, source_fingerprint``),
    oldest first. Returns ``(version, partition, stored, current, current max loaded_at)``."""
    rows = conn.execute(
        f"""
        WITH current AS ({current_sql})
        SELECT e.version, e.partition_start, e.source_fingerprint, c.source_fingerprint,
               c.source_max_loaded_at
        FROM {TABLE} AS e
        JOIN current AS c ON c.partition_start = e.partition_start
        WHERE e.model = $model
          AND list_contains($versions, e.version)
          AND e.source_fingerprint <> c.source_fingerprint
        ORDER BY e.partition_start, e.version
        """,
        {**params, "model": plan.name, "versions": versions},
    ).fetchall()
    return [(v, plan.cadence.value(p), *rest) for v, p, *rest in rows]


def _where(plan: Plan, version: str | None, start: Partition, end: Partition) -> tuple[str, list]:
    """The WHERE clause and parameters of one plan's (and version's) partitions in a window."""
    clause = "model = ? AND partition_start >= ? AND partition_start < ?"
    params = [plan.name, start, end]
    if version is not None:
        clause += " AND version = ?"
        params.append(version)
    return clause, params


def built_span(
    conn: duckdb.DuckDBPyConnection, plan: Plan, start: Partition, end: Partition
) -> tuple[Partition | None, Partition | None]:
    """The first and last built partition of any version in ``[start, end)``."""
    if not exists(conn):
        return None, None
    where, params = _where(plan, None, start, end)
    first, last = conn.execute(
        f"SELECT min(partition_start), max(partition_start) FROM {TABLE} WHERE {where}", params
    ).fetchone()
    if first is None:
        return None, None
    return plan.cadence.value(first), plan.cadence.value(last)


def outside(conn: duckdb.DuckDBPyConnection, plan: Plan, start: Partition, end: Partition) -> int:
    """How many distinct built partitions lie outside ``[start, end)``."""
    if not exists(conn):
        return 0
    return conn.execute(
        f"SELECT count(DISTINCT partition_start) FROM {TABLE} "
        "WHERE model = ? AND (partition_start < ? OR partition_start >= ?)",
        [plan.name, start, end],
    ).fetchone()[0]


def row_counts(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> dict[Partition, int]:
    """Rows per built partition of ``[start, end)``."""
    where, params = _where(plan, version, start, end)
    rows = conn.execute(
        f"SELECT partition_start, row_count FROM {TABLE} WHERE {where}", params
    ).fetchall()
    return {plan.cadence.value(p): n for p, n in rows}


def failing(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> list[tuple[Partition, dict]]:
    """Partitions whose per-partition checks failed, with each check's verdict and figures."""
    where, params = _where(plan, version, start, end)
    rows = conn.execute(
        f"SELECT partition_start, checks FROM {TABLE} WHERE {where} AND NOT checks_passed "
        "ORDER BY partition_start",
        params,
    ).fetchall()
    return [(plan.cadence.value(p), json.loads(checks)) for p, checks in rows]


def stale_code(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> list[tuple[Partition, str]]:
    """Partitions built with another ``code_version`` than the plan's current one."""
    where, params = _where(plan, version, start, end)
    rows = conn.execute(
        f"SELECT partition_start, code_version FROM {TABLE} WHERE {where} "
        "AND code_version <> ? ORDER BY partition_start",
        [*params, plan.version(version).code_version],
    ).fetchall()
    return [(plan.cadence.value(p), code) for p, code in rows]


def current_code(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> set[Partition]:
    """Partitions applied with the current ``code_version`` (sources not compared)."""
    where, params = _where(plan, version, start, end)
    rows = conn.execute(
        f"SELECT partition_start FROM {TABLE} WHERE {where} AND code_version = ? AND applied",
        [*params, plan.version(version).code_version],
    ).fetchall()
    return {plan.cadence.value(p) for (p,) in rows}


def newest_applied(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> Partition | None:
    """The newest partition whose rows users of this version see."""
    found = conn.execute(
        f"SELECT max(partition_start) FROM {TABLE} WHERE model = ? AND version = ? AND applied",
        [plan.name, version],
    ).fetchone()[0]
    return None if found is None else plan.cadence.value(found)


def build_sizes(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> list[tuple]:
    """Per recorded build of the version: (partitions, seconds)."""
    return conn.execute(
        f"""
        SELECT count(*) AS partitions, sum(build_seconds) AS seconds
        FROM {TABLE}
        WHERE model = ? AND version = ? AND build_seconds IS NOT NULL
        GROUP BY run_id, written_at
        """,
        [plan.name, version],
    ).fetchall()


def counts(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> tuple[int, int]:
    """Partitions built and partitions failing their checks in ``[start, end)``."""
    where, params = _where(plan, version, start, end)
    return conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE NOT checks_passed) FROM {TABLE} WHERE {where}",
        params,
    ).fetchone()


def summary(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Per plan and version: partitions with evidence, rows, partitions failing a check."""
    return conn.execute(
        f"""
        SELECT model, version, count(*) AS partitions, sum(row_count) AS rows,
               count(*) FILTER (WHERE NOT checks_passed) AS failing
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
