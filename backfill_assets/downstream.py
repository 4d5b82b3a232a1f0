"""Downstream consumers' queries, run against a version as if it were published.

A plan's ``downstream`` entries may carry the query a consumer runs over ``analytics.<plan>``
(a dashboard's tiles, an export). Before a version is published, each query runs word for word
inside a rehearsal of the view (``view.rehearsal``: re-pointed at the version in a transaction
that is always rolled back), and again on the version users see now. On the version it must
run, return at least ``min_rows`` rows and keep its columns: the declared ``columns`` and every
column it returns on the published version. Its totals per numeric column, published ->
version, are what the cutover summary tells the consumer's owner (``summary_lines``).

Each query is summed in DuckDB (``count(*)`` and ``sum`` per numeric column of its result), so
an export of millions of rows never comes back to Python.
"""

from dataclasses import dataclass, field

import duckdb

from backfill_assets.plan import NUMERIC, Consumer, Plan, PlanError
from backfill_assets.view import rehearsal
from backfill_assets.warehouse import table_exists

DOWNSTREAM_QUERIES_WORK = "downstream_queries_work"


@dataclass(frozen=True)
class QueryRun:
    """One consumer query on one version: what came back, or why nothing did."""

    version: str
    columns: dict[str, str] = field(default_factory=dict)  # result column -> type
    rows: int = 0
    totals: dict[str, float | None] = field(default_factory=dict)  # numeric column -> sum
    error: str | None = None


def _column(name: str) -> str:
    """A result column of a team's query as SQL: its name as DuckDB reported it, quoted (a
    result column need not be a plain name: ``sum(amount)``)."""
    return '"' + name.replace('"', '""') + '"'


def run_query(
    conn: duckdb.DuckDBPyConnection, plan: Plan, consumer: Consumer, version: str
) -> QueryRun:
    """Run the consumer's query with ``analytics.<plan>`` showing ``version``; the published
    view is the same afterwards whatever happened (see ``view.rehearsal``)."""
    try:
        sql = plan.consumer_sql(consumer)
    except PlanError as error:  # the file changed since the plan loaded
        return QueryRun(version, error=" ".join(str(error).split()))
    try:
        with rehearsal(conn, plan, version):
            described = conn.execute(f"DESCRIBE ({sql})").fetchall()
            columns = {row[0]: row[1] for row in described}
            numeric = [c for c, kind in columns.items() if NUMERIC.fullmatch(kind)]
            sums = "".join(f", CAST(sum({_column(c)}) AS DOUBLE)" for c in numeric)
            rows, *totals = conn.execute(f"SELECT count(*){sums} FROM ({sql})").fetchone()
    except duckdb.Error as error:
        return QueryRun(version, error=str(error).strip().splitlines()[0])
    return QueryRun(version, columns, rows, dict(zip(numeric, totals, strict=True)))


@dataclass(frozen=True)
class ConsumerResult:
    """A consumer's query on ``version``, compared with the version users see now."""

    consumer: Consumer
    on_version: QueryRun
    on_published: QueryRun | None  # None: ``version`` is the published one, or not built

    @property
    def problems(self) -> list[str]:
        """Why the consumer would break if ``version`` were published ([] when it would not)."""
        run, before = self.on_version, self.on_published
        if run.error:
            return [f"fails on {run.version}: {run.error}"]
        problems = []
        if run.rows < self.consumer.min_rows:
            problems.append(
                f"returns {run.rows} row(s) on {run.version}, fewer than min_rows "
                f"{self.consumer.min_rows}"
            )
        returned = {c.casefold() for c in run.columns}
        declared = [c for c in self.consumer.columns if c.casefold() not in returned]
        if declared:
            problems.append(f"does not return {declared} on {run.version} (its columns)")
        if before is not None and not before.error:
            lost = [c for c in before.columns if c.casefold() not in returned]
            lost = [c for c in lost if c not in declared]
            if lost:
                problems.append(f"returns {lost} on {before.version} but not on {run.version}")
        return problems

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def differences(self) -> dict[str, dict]:
        """Per numeric column both runs return: its total on each and the change in percent
        (None when the published total is 0)."""
        before = self.on_published
        if before is None or before.error or self.on_version.error:
            return {}
        out = {}
        for column, after in self.on_version.totals.items():
            if column not in before.totals:
                continue
            was = before.totals[column]
            change = None
            if was not in (None, 0) and after is not None:
                change = round((after - was) / abs(was) * 100, 4)
            out[column] = {"published": was, "version": after, "change_pct": change}
        return out

    def figures(self) -> dict:
        """JSON-plain: what the window check's metadata, the log row and
        ``summary_lines`` keep of this consumer."""
        before = self.on_published
        return {
            "kind": self.consumer.kind,
            "owner": self.consumer.owner,
            "passed": self.passed,
            "problems": self.problems,
            "version": self.on_version.version,
            "published": before.version if before else None,
            "published_error": before.error if before else None,
            "rows": {
                "version": self.on_version.rows,
                "published": before.rows if before and not before.error else None,
            },
            "columns": list(self.on_version.columns),
            "totals": self.differences,
        }


def check_consumers(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, published: str
) -> list[ConsumerResult]:
    """Every consumer query of the plan on ``version`` and, when it is another version whose
    table exists, on ``published``."""
    compare = published != version and table_exists(conn, "models", plan.table_name(published))
    return [
        ConsumerResult(
            consumer,
            run_query(conn, plan, consumer, version),
            run_query(conn, plan, consumer, published) if compare else None,
        )
        for consumer in plan.consumer_queries
    ]


def _number(value: float | None) -> str:
    return "NULL" if value is None else f"{value:,.2f}"


def _change(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:+.1f}%"


def consumer_line(name: str, figures: dict) -> str:
    """One consumer in words: who, and what moves for it (or why it breaks)."""
    who = ", ".join(str(x) for x in (figures.get("kind"), figures.get("owner")) if x)
    head = f"{name} ({who})" if who else name
    if not figures["passed"]:
        return f"{head}: " + "; ".join(figures["problems"])
    rows = figures["rows"]
    text = f"{head}: {rows['version']} row(s) on {figures['version']}"
    if figures.get("published") and rows.get("published") is not None:
        text += f" ({rows['published']} on {figures['published']})"
        moves = [
            f"{column} total {_number(t['published'])} -> {_number(t['version'])} "
            f"({_change(t['change_pct'])})"
            for column, t in figures["totals"].items()
        ]
        if moves:
            text += "; " + "; ".join(moves)
    elif figures.get("published_error"):
        text += f" (it fails on {figures['published']}: {figures['published_error']})"
    return text


def summary_lines(evidence: dict) -> list[str]:
    """Markdown for the cutover summary: a "What consumers will see" section with each
    consumer query's totals, published -> new version; [] when the plan declares no consumer
    query (or the log row predates the check). No blank line at either end.

    ``evidence``: a promotion's log row evidence (``LogEntry.evidence``), so the text is the
    same at promotion time and when the summary is written again from the log.
    """
    check = evidence.get("checks", {}).get(DOWNSTREAM_QUERIES_WORK, {})
    consumers = (check.get("figures") or {}).get("consumers") or {}
    if not consumers:
        return []
    window = f" ({evidence['window']})" if evidence.get("window") else ""
    lines = [
        "## What consumers will see",
        "",
        "Each consumer's own query ran against the new version as if it were published, and "
        f"against the version published before, over the view's window{window}:",
        "",
    ]
    return lines + [f"- {consumer_line(name, figures)}" for name, figures in consumers.items()]
