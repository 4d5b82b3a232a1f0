"""Changed columns: what the candidate changes in the columns it shares with the baseline.

A reconciliation compares measures summed over groups. A version that rewrites a descriptive
column (a segment, a category, a flag) reconciles exactly and still changes what people see,
so the report leads with this: for every column both versions' tables have (other than the
plan's unique key and its measures), the rows matched on the unique key over the window whose
value differs, the most frequent old → new values, and how often the column is filled before
and after.

All of it is set-based SQL in DuckDB (the two tables joined on the key, within the window);
only the few figures per column and the top value changes come back to Python. Identifiers are
the plan's validated fields and the tables' own column names, quoted; values are bound.
"""

from dataclasses import dataclass

import duckdb
import pandas as pd

from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.spec import IDENTIFIER
from backfill_assets.warehouse import quote

TOP = 10  # old → new value pairs listed per changed column


@dataclass(frozen=True)
class ColumnChange:
    """One compared column: how many matched rows changed, and its coverage before/after."""

    column: str
    rows_changed: int  # of the rows matched on the key
    filled_before: int  # non-NULL values among the baseline's rows in the window
    filled_after: int  # among the candidate's
    top: pd.DataFrame  # before, after (as text; None for NULL), rows: most frequent first
    distinct_changes: int  # distinct (before, after) pairs; ``top`` holds at most TOP

    @property
    def changed(self) -> bool:
        return self.rows_changed > 0


@dataclass(frozen=True)
class ColumnChanges:
    """The candidate's row-level changes to the baseline's columns over a window."""

    plan: str
    baseline: str
    candidate: str
    key: list[str]
    start: Partition  # the first partition compared
    end: Partition  # the partition after the last compared (half-open)
    rows_before: int  # the baseline's rows in the window
    rows_after: int  # the candidate's
    rows_matched: int  # rows of the two matched on the key (both in the window)
    columns: list[ColumnChange]  # every compared column, most changed first
    only_before: list[str]  # columns only the baseline has
    only_after: list[str]  # columns only the candidate has
    not_compared: list[str]  # columns whose names are not plain SQL names

    @property
    def changed(self) -> list[ColumnChange]:
        return [c for c in self.columns if c.changed]

    @property
    def unchanged(self) -> list[str]:
        return [c.column for c in self.columns if not c.changed]

    def share(self, change: ColumnChange) -> float:
        """The share of matched rows whose value of the column changed."""
        return change.rows_changed / self.rows_matched if self.rows_matched else 0.0

    def coverage_before(self, change: ColumnChange) -> float:
        return change.filled_before / self.rows_before if self.rows_before else 0.0

    def coverage_after(self, change: ColumnChange) -> float:
        return change.filled_after / self.rows_after if self.rows_after else 0.0


def _columns(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> dict[str, str]:
    """A version's table's columns and their types, in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'models' "
        "AND table_name = ? ORDER BY ordinal_position",
        [plan.table_name(version)],
    ).fetchall()
    if not rows:
        raise ValueError(
            f"{plan.name}: models.{plan.table_name(version)} does not exist. Fix: build "
            f"{version} over the window first."
        )
    return dict(rows)


def changed_columns(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    baseline: str | None = None,
    candidate: str | None = None,
    start: Partition | None = None,
    end: Partition | None = None,
    top: int = TOP,
) -> ColumnChanges:
    """Compare ``candidate`` (default: the plan's) with ``baseline`` (default: the plan's) row
    by row, matched on the plan's unique key, over the partitions ``[start, end)`` (default:
    the plan's window). A key value that is NULL matches NULL, as in the plan's grain."""
    spec = plan.spec
    baseline = baseline or spec.baseline
    candidate = candidate or spec.candidate
    start = plan.window_start if start is None else start
    end = plan.window_end if end is None else end
    before, after = _columns(conn, plan, baseline), _columns(conn, plan, candidate)
    skip = {*spec.unique_key, *spec.checks.reconciliation.measures}
    shared = [c for c in after if c in before and c not in skip]
    not_compared = [c for c in shared if not IDENTIFIER.fullmatch(c)]
    compared = [c for c in shared if c not in not_compared]

    def value(side: str, column: str) -> str:
        # Columns whose type differs between the versions are compared as text.
        if before[column] == after[column]:
            return f"{side}.{quote(column)}"
        return f"CAST({side}.{quote(column)} AS VARCHAR)"

    pc = plan.partition_column
    on = " AND ".join(f"b.{quote(k)} IS NOT DISTINCT FROM c.{quote(k)}" for k in spec.unique_key)
    pairs = ", ".join(
        f"{value('b', c)} AS b{i}, {value('c', c)} AS c{i}" for i, c in enumerate(compared)
    )
    windowed = f"WHERE {pc} >= $start AND {pc} < $end"
    common = f"""
        WITH b AS (SELECT * FROM {plan.model_table(baseline)} {windowed}),
        c AS (SELECT * FROM {plan.model_table(candidate)} {windowed}),
        matched AS (SELECT {pairs or "1 AS one"} FROM b JOIN c ON {on})
    """
    filled_b = "".join(f", count({quote(c)})" for c in compared)
    changed = "".join(
        f", count(*) FILTER (WHERE b{i} IS DISTINCT FROM c{i})" for i in range(len(compared))
    )
    counts = conn.execute(
        f"""{common}
        SELECT *
        FROM (SELECT count(*) {filled_b} FROM b),
             (SELECT count(*) {filled_b} FROM c),
             (SELECT count(*) {changed} FROM matched)
        """,
        {"start": start, "end": end},
    ).fetchone()
    n = len(compared)
    rows_before, filled_before = counts[0], counts[1 : 1 + n]
    rows_after, filled_after = counts[1 + n], counts[2 + n : 2 + 2 * n]
    rows_matched, rows_changed = counts[2 + 2 * n], counts[3 + 2 * n :]

    changing = [i for i in range(n) if rows_changed[i]]
    top_pairs = pd.DataFrame(columns=["i", "before", "after", "rows", "pairs"])
    if changing:
        union = " UNION ALL ".join(
            f"SELECT {i} AS i, CAST(b{i} AS VARCHAR) AS before, CAST(c{i} AS VARCHAR) AS after "
            f"FROM matched WHERE b{i} IS DISTINCT FROM c{i}"
            for i in changing
        )
        top_pairs = conn.execute(
            f"""{common}, changes AS ({union})
            SELECT i, before, after, count(*) AS rows,
                   count(*) OVER (PARTITION BY i) AS pairs
            FROM changes
            GROUP BY i, before, after
            QUALIFY row_number() OVER (
                PARTITION BY i ORDER BY count(*) DESC, before NULLS FIRST, after NULLS FIRST
            ) <= $top
            ORDER BY i, rows DESC, before NULLS FIRST, after NULLS FIRST
            """,
            {"start": start, "end": end, "top": top},
        ).df()

    columns = []
    for i, column in enumerate(compared):
        mine = top_pairs[top_pairs["i"] == i]
        listed = mine[["before", "after", "rows"]].reset_index(drop=True)
        listed = listed.astype(object).where(listed.notna(), None)
        columns.append(
            ColumnChange(
                column=column,
                rows_changed=int(rows_changed[i]),
                filled_before=int(filled_before[i]),
                filled_after=int(filled_after[i]),
                top=listed,
                distinct_changes=int(mine["pairs"].iloc[0]) if len(mine) else 0,
            )
        )
    columns.sort(key=lambda c: -c.rows_changed)  # stable: table order among equals
    return ColumnChanges(
        plan=plan.name,
        baseline=baseline,
        candidate=candidate,
        key=list(spec.unique_key),
        start=start,
        end=end,
        rows_before=int(rows_before),
        rows_after=int(rows_after),
        rows_matched=int(rows_matched),
        columns=columns,
        only_before=[c for c in before if c not in after],
        only_after=[c for c in after if c not in before],
        not_compared=not_compared,
    )
