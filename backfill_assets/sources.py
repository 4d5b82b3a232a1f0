"""Source tables as a plan declares them, dbt-style, and what the project reads from them.

A plan lists each table its SQL reads::

    sources:
      - table: raw.flights
        event_time: dep_ts        # optional: places a row in a partition
        loaded_at: ingested_at    # optional: when the row arrived (cheap change probe)
        required: [carrier, dep_ts]
        columns: {flight_id: VARCHAR, carrier: VARCHAR, dep_ts: TIMESTAMP, ...}   # optional
      - table: raw.airlines       # a dimension: no event_time

Nothing here assumes a table, a column or a type. Column names and types come from the
warehouse; ``columns`` is only used to validate the plan's SQL where the warehouse does not
have the table yet (a fresh clone, ``dg check defs`` in CI). At build time the warehouse's own
types are used and every declared column must exist.
"""

import datetime as dt
from collections.abc import Callable

import duckdb

from backfill_assets.spec import Identifier, Strict, TableName, Text
from backfill_assets.warehouse import quote, relation, table_exists


class Source(Strict):
    """One table a plan reads."""

    table: TableName
    description: Text | None = None
    event_time: Identifier | None = None
    loaded_at: Identifier | None = None
    required: list[Identifier] = []
    columns: dict[Identifier, Text] | None = None

    @property
    def relation(self) -> str:
        """The quoted ``"schema"."table"``."""
        return relation(self.table)

    @property
    def is_dimension(self) -> bool:
        """A table without an event time: every partition may depend on all of it."""
        return self.event_time is None

    def declared_names(self) -> list[str]:
        """Every column the declaration names (event time, loaded_at, required, columns)."""
        names = [self.event_time, self.loaded_at, *self.required, *(self.columns or {})]
        return list(dict.fromkeys(n for n in names if n))


def warehouse_columns(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str] | None:
    """The table's columns and types in the warehouse, or None when it does not exist."""
    schema, name = table.split(".")
    if not table_exists(conn, schema, name):
        return None
    return {row[0]: row[1] for row in conn.execute(f"DESCRIBE {relation(table)}").fetchall()}


def source_problems(conn: duckdb.DuckDBPyConnection, sources: list[Source]) -> list[str]:
    """What keeps the sources from being read as declared: a missing table or column."""
    problems = []
    catalog = conn.execute("SELECT current_database()").fetchone()[0]
    for source in sources:
        if source.table.split(".")[0] == catalog:
            problems.append(
                f"source {source.table} is in a schema named like the warehouse file "
                f"({catalog}), which DuckDB finds ambiguous. Fix: rename the warehouse file "
                "(BACKFILL_WAREHOUSE)"
            )
            continue
        actual = warehouse_columns(conn, source.table)
        if actual is None:
            problems.append(
                f"source table {source.table} does not exist. Fix: load it "
                f"(backfill-assets load {source.table} <file>) or correct the plan's sources"
            )
            continue
        missing = [c for c in source.declared_names() if c not in actual]
        if missing:
            problems.append(
                f"source {source.table} has no column(s) {missing}; it has {list(actual)}. "
                "Fix: correct the plan's declaration or reload the table"
            )
    return problems


def probe(conn: duckdb.DuckDBPyConnection, source: Source) -> str:
    """A cheap digest of a source table, to tell whether it changed since the last look.

    With ``loaded_at``: the row count and the newest arrival (milliseconds at any size, and
    what lets a sensor narrow its comparison to the rows that arrived). Without it: the row
    count and a sum of row hashes, which sees any change.
    """
    if source.loaded_at:
        sql = f"SELECT count(*), max({quote(source.loaded_at)}) FROM {source.relation}"
    else:
        sql = f"SELECT count(*), sum(CAST(hash(t) AS HUGEINT)) FROM {source.relation} AS t"
    count, marker = conn.execute(sql).fetchone()
    return f"{count}:{marker}"


def empty_required(
    conn: duckdb.DuckDBPyConnection, source: Source, examples: int = 5
) -> dict[str, tuple[int, list[str]]]:
    """Per required column with empty values: how many rows, and the first few of them named
    by the table's first column (usually its key)."""
    if not source.required:
        return {}
    label = quote(next(iter(warehouse_columns(conn, source.table) or {"rowid": ""})))
    parts = ", ".join(
        f"count(*) FILTER (WHERE {quote(c)} IS NULL), "
        f"list(CAST({label} AS VARCHAR) ORDER BY {label}) FILTER (WHERE {quote(c)} IS NULL)"
        f"[1:{examples}]"
        for c in source.required
    )
    found = conn.execute(f"SELECT {parts} FROM {source.relation}").fetchone()
    return {
        column: (found[2 * i], found[2 * i + 1] or [])
        for i, column in enumerate(source.required)
        if found[2 * i]
    }


def rows_per_partition(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    floor: Callable[[str], str],
    start_utc: dt.datetime,
    end_utc: dt.datetime,
) -> dict:
    """Rows of an event source per partition (``floor`` maps an event time to its partition's
    start in SQL) between two UTC instants; partitions without rows are absent."""
    column = quote(source.event_time or "")
    rows = conn.execute(
        f"SELECT {floor(column)}, count(*) FROM {source.relation} "
        f"WHERE {column} >= $start AND {column} < $end GROUP BY ALL",
        {"start": start_utc, "end": end_utc},
    ).fetchall()
    return dict(rows)


def newest_partition(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    floor: Callable[[str], str],
    before_utc: dt.datetime,
):
    """The newest partition (its start, as ``floor`` maps event times) with a row of an event
    source before a UTC instant: the newest complete one when that instant starts the current
    partition."""
    column = quote(source.event_time or "")
    return conn.execute(
        f"SELECT max({floor(column)}) FROM {source.relation} WHERE {column} < ?", [before_utc]
    ).fetchone()[0]
