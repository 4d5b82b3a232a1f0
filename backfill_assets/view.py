"""The published view's definition, and a rehearsal of it that is always rolled back.

``analytics.<plan>`` is a view over the plan's window of one version's table. ``publish.py`` is
the only module that changes it for good (the swap and its log row, in one transaction). A
*rehearsal* re-points it at another version inside a transaction that always ends in
``ROLLBACK``, so a consumer's query can run word for word, under the name it really reads,
against a version as if that version were published.

Why a rolled-back transaction rather than a scratch schema with the name rewritten in the
query: DuckDB's catalog is transactional, so no other connection ever sees the rehearsed view
(a dashboard reading ``analytics.<plan>`` meanwhile gets the published version), and nothing is
committed: an error, a killed process or a failing query all leave the file as it was, with no
scratch objects to clean up. The query is also run exactly as written; rewriting its text (a
quoted name, an alias, the name inside a string) could make it read the published view while
claiming to test the candidate.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.warehouse import quote


def _literal(value: Partition) -> str:
    """A window bound as SQL. Views cannot take bound parameters, so the bound is written out;
    it is a partition start (``date``, or UTC ``datetime`` for hourly) computed from the
    validated plan, never text from a user."""
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
    return f"DATE '{value.isoformat()}'"


def _span(plan: Plan, version: str) -> str:
    start, end, column = plan.window_start, plan.window_end, plan.partition_column
    return (
        f"SELECT * FROM {plan.model_table(version)} "
        f"WHERE {column} >= {_literal(start)} AND {column} < {_literal(end)}"
    )


def definition(plan: Plan, version: str) -> str:
    """The published view over ``version``: its rows of the plan's window, and only those.

    A forward-only plan publishing another version than its baseline reads two tables split
    on the partition column (``Plan.served_spans``): the baseline before the cutoff, ``version``
    from it, as one ``UNION ALL BY NAME`` (a column only the new version has is NULL before the
    cutoff)."""
    spans = plan.served_spans(version)
    body = " UNION ALL BY NAME ".join(f"({_span(span, v)})" for v, span in spans)
    if len(spans) == 1:
        body = _span(plan, version)
    return f"CREATE OR REPLACE VIEW {plan.view} AS {body}"


@contextmanager
def rehearsal(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> Iterator[None]:
    """Inside the block, ``analytics.<plan>`` on ``conn`` shows ``version`` as a promotion
    would publish it; the block ends in ``ROLLBACK`` however it ends, so the published view is
    unchanged for everyone, and it was never changed for any other connection.

    ``conn`` must not be inside a transaction already. A statement that fails inside the block
    aborts the transaction: run one query per rehearsal.
    """
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote('analytics')}")
        conn.execute(definition(plan, version))
        yield
    finally:
        conn.execute("ROLLBACK")
