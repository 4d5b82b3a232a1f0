"""Repair by slice: the partitions whose source slice holds a row matching a predicate.

When only part of history is wrong (one customer's rows, one region after a date, one
carrier's flights), ``backfill-assets affected <plan> --where "<predicate>"`` lists exactly the
partitions that rows matching the predicate can change, folded into ranges, and can launch one
backfill of exactly those. The runbook's main risk here is missing the true affected range, so
the answer comes from the same slice the fingerprints use:

- with the plan's ``source_slice`` SQL, the partitions whose slice holds a matching row (matched
  by ``source`` = the table's name and ``row_hash`` = ``hash`` of the whole row, as the slice
  SQL writes them);
- without it, an event source's matching rows place themselves by ``event_time`` (and
  ``lookback``); a matching row of a dimension reaches every partition of the window.

The predicate is one boolean expression over the source's columns: it is parsed by DuckDB,
must not hold a statement, a subquery or another table, and runs with external access
disabled (no files, no ``ATTACH``), on a read-only connection.
"""

import json

import duckdb

from backfill_assets.fingerprint import placed_sql, query_params
from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.sources import Source


class PredicateError(ValueError):
    """A predicate that is not one read-only boolean expression over the source."""


def _refuse(predicate: str, why: str) -> PredicateError:
    return PredicateError(
        f"--where {predicate!r} {why}. Fix: give one boolean expression over the source's "
        'columns, e.g. "customer_id IN (42, 43)" or "region = \'emea\' AND order_ts >= '
        "'2024-06-01'\"."
    )


def _subqueries(node) -> bool:
    """Whether a serialized statement holds a subquery anywhere below its WHERE clause."""
    if isinstance(node, dict):
        if node.get("class") == "SUBQUERY" or node.get("type") == "SUBQUERY":
            return True
        return any(_subqueries(v) for v in node.values())
    if isinstance(node, list):
        return any(_subqueries(v) for v in node)
    return False


def check_predicate(conn: duckdb.DuckDBPyConnection, source: Source, predicate: str) -> str:
    """``predicate`` if it is one boolean expression over ``source``'s columns; else raise."""
    if not predicate.strip():
        raise _refuse(predicate, "is empty")
    sql = f"SELECT * FROM {source.relation} WHERE ({predicate})"
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise _refuse(predicate, f"does not parse ({str(error).splitlines()[0]})") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise _refuse(predicate, "holds more than one expression or a statement")
    tree = json.loads(conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error") or _subqueries(tree.get("statements", [])[0]["node"]["where_clause"]):
        raise _refuse(predicate, "holds a subquery or reads another table")
    try:
        conn.execute(f"SELECT CAST(({predicate}) AS BOOLEAN) FROM {source.relation} LIMIT 0")
    except duckdb.Error as error:
        raise _refuse(predicate, f"does not bind ({str(error).splitlines()[0]})") from None
    return predicate


def affected_partitions(
    conn: duckdb.DuckDBPyConnection, plan: Plan, source: Source, predicate: str
) -> list[Partition]:
    """The window's partitions whose source slice holds a row of ``source`` matching
    ``predicate``, oldest first. ``conn`` should be read-only; external access is turned off
    on it before the predicate runs."""
    conn.execute("SET enable_external_access = false")
    check_predicate(conn, source, predicate)
    if plan.source_slice_sql is not None:
        sql = f"""
            SELECT DISTINCT CAST(s.partition_start AS TIMESTAMP)
            FROM ({plan.source_slice_sql}) AS s
            JOIN (SELECT hash(t) AS h FROM {source.relation} AS t WHERE ({predicate})) AS m
              ON s.row_hash = m.h
            WHERE s.source = $table
            ORDER BY 1
        """
        params = {**query_params(plan, sql, plan.window_start, plan.window_end)}
        params["table"] = source.table
    elif source.is_dimension:
        matched = conn.execute(
            f"SELECT count(*) FROM {source.relation} WHERE ({predicate})"
        ).fetchone()[0]
        return plan.window_partitions if matched else []
    else:
        placed, source_from, where = placed_sql(plan, source)
        sql = (
            f"SELECT DISTINCT {placed} AS p FROM {source_from} "
            f"WHERE {where} AND ({predicate}) ORDER BY 1"
        )
        params = query_params(plan, sql, plan.window_start, plan.window_end)
    rows = conn.execute(sql, params).fetchall()
    window = set(plan.window_partitions)
    found = [plan.cadence.value(row[0]) for row in rows]
    return [p for p in found if p in window]
