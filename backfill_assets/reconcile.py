"""Reconciliation: the candidate against the baseline, with every difference explained or not.

For each group of the plan's ``by`` (``partition``, ``day`` and ``month`` mean the partition
column itself, its day or its month; other names are output columns) and each measure
(``rows`` counts output rows):

    delta      = candidate - baseline
    rule_<r>   = what explained-difference rule r predicts (its SQL, aggregated the same way)
    residual   = delta - sum(rule_<r>)

The candidate reconciles when every |residual| is within the plan's tolerance. A forward-only
plan's candidate is compared from its cutoff only: before it the view serves the baseline, so
there is nothing to reconcile there; the report names the discontinuity. All of it is one
SQL statement over the window, in exact DECIMAL arithmetic, and the verdict (``unexplained``)
is decided there; the result is one row per group and measure (a few hundred rows for two years
by month and region), small enough to report with pandas, where figures become floats for
display only.
"""

import decimal
import re
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from backfill_assets.partitions import Partition
from backfill_assets.plan import ROWS, Plan, window_params
from backfill_assets.warehouse import quote

EXACT = "DECIMAL(38, 6)"  # sums of cents (and counts) stay exact across two years


@dataclass(frozen=True)
class Reconciliation:
    """The reconciliation table of one plan over a window, worst residual first."""

    plan: str
    baseline: str
    candidate: str
    start: Partition  # the first partition compared
    end: Partition  # the last partition compared (inclusive)
    tolerance: float
    rules: list[str]
    by: list[str]
    table: pd.DataFrame
    # What people read about it, from the plan: each rule's description by rule name, the
    # plan's description and the versions' ``change`` texts.
    descriptions: dict[str, str] = field(default_factory=dict)
    description: str = ""
    baseline_change: str = ""
    candidate_change: str = ""
    # A measure's unit where the tables tell it: ``rows``, or ``count`` for whole-number
    # columns; absent for other numbers (the warehouse does not know a currency).
    units: dict[str, str] = field(default_factory=dict)
    measures: list[str] = field(default_factory=list)  # the plan's, in its order
    # A forward-only plan's break in history when the candidate is published (``Plan.
    # discontinuity``): the reports name it. Empty otherwise.
    discontinuity: str = ""

    @property
    def failing(self) -> pd.DataFrame:
        return self.table[self.table["unexplained"]]

    @property
    def passed(self) -> bool:
        return self.failing.empty

    @property
    def total_delta(self) -> float:
        return float(self.table["delta"].abs().sum())

    def measure_totals(self) -> dict[str, dict]:
        """Per measure, over all groups: baseline, candidate, what each rule predicts (signed),
        the residual and the unit; JSON-plain, so a promotion's log row can keep it."""
        out = {}
        for measure in self.measures or dict.fromkeys(self.table["measure"]):
            rows = self.table[self.table["measure"] == measure]
            out[measure] = {
                "baseline": round(float(rows["baseline"].sum()), 6),
                "candidate": round(float(rows["candidate"].sum()), 6),
                "rules": {r: round(float(rows[f"rule_{r}"].sum()), 6) for r in self.rules},
                "residual": round(float(rows["residual"].sum()), 6),
                "unit": self.units.get(measure, ""),
            }
        return out


def _by_select(plan: Plan) -> list[str]:
    out = []
    for item in plan.spec.checks.reconciliation.by:
        if item == "month":
            out.append(f"CAST(date_trunc('month', {plan.partition_column}) AS DATE) AS month")
        elif item == "day":
            out.append(f"CAST({plan.partition_column} AS DATE) AS day")
        elif item == "partition":
            out.append(f"{plan.partition_column} AS {quote(item)}")
        else:
            out.append(quote(item))
    return out


def _part(plan: Plan, label: str, relation: str, measures_are_columns: bool) -> str:
    measures = plan.spec.checks.reconciliation.measures
    values = ", ".join(
        (
            f"CAST({quote(m)} AS {EXACT})"
            if (m != ROWS or measures_are_columns)
            else f"CAST(1 AS {EXACT})"
        )
        + f" AS {quote(m)}"
        for m in measures
    )
    return (
        f"SELECT '{label}' AS part, {', '.join(_by_select(plan))}, {values} "
        f"FROM {relation} WHERE {plan.partition_column} >= $start "
        f"AND {plan.partition_column} < $end"
    )


def reconcile(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    start: Partition | None = None,
    end: Partition | None = None,
    candidate: str | None = None,
) -> Reconciliation:
    """Reconcile ``candidate`` (default: the plan's) with the baseline over the partitions
    ``[start, end)`` (default: the plan's window; from the cutoff for a forward-only plan)."""
    spec = plan.spec
    candidate = candidate or spec.candidate
    # By default what the candidate would serve: the window, or from a forward-only cutoff.
    own = plan.served_spans(candidate)[-1][1]
    start = own.window_start if start is None else start
    end = own.window_end if end is None else end
    recon = spec.checks.reconciliation
    rules = [r.name for r in recon.explained_differences]
    parts = [
        _part(plan, "baseline", plan.model_table(spec.baseline), False),
        _part(plan, "candidate", plan.model_table(candidate), False),
    ]
    for rule in recon.explained_differences:
        parts.append(_part(plan, f"rule:{rule.name}", f"({plan.read_sql(rule.sql)})", True))
    by_names = [quote(b) for b in recon.by]
    measures = recon.measures
    long_parts = " UNION ALL ".join(
        f"SELECT part, {', '.join(by_names)}, '{m}' AS measure, {quote(m)} AS value FROM parts"
        for m in measures
    )
    rule_columns = "".join(
        f", coalesce(sum(value) FILTER (WHERE part = 'rule:{r}'), 0) AS {quote('rule_' + r)}"
        for r in rules
    )
    rule_sum = " + ".join(quote("rule_" + r) for r in rules) or "0"
    sql = f"""
        WITH parts AS ({" UNION ALL ".join(parts)}),
        long AS ({long_parts}),
        wide AS (
            SELECT {", ".join(by_names)}, measure,
                coalesce(sum(value) FILTER (WHERE part = 'baseline'), 0) AS baseline,
                coalesce(sum(value) FILTER (WHERE part = 'candidate'), 0) AS candidate
                {rule_columns}
            FROM long
            GROUP BY ALL
        )
        SELECT *, candidate - baseline AS delta,
               candidate - baseline - ({rule_sum}) AS residual,
               abs(candidate - baseline - ({rule_sum})) > $tolerance AS unexplained
        FROM wide
        ORDER BY abs(residual) DESC, abs(delta) DESC, {", ".join(by_names)}, measure
    """
    params = window_params(sql, plan.cadence, start, end)
    table = conn.execute(sql, {**params, "tolerance": decimal.Decimal(str(recon.tolerance))}).df()
    figures = ["baseline", "candidate", "delta", *(f"rule_{r}" for r in rules), "residual"]
    table[figures] = table[figures].astype(float)
    for column in ("month", "day"):
        if column in table:
            table[column] = pd.to_datetime(table[column]).dt.date
    if "partition" in table:
        table["partition"] = [
            plan.cadence.value(moment.to_pydatetime())
            for moment in pd.to_datetime(table["partition"])
        ]
    return Reconciliation(
        plan=plan.name,
        baseline=spec.baseline,
        candidate=candidate,
        start=start,
        end=plan.cadence.starts(start, end)[-1],
        tolerance=recon.tolerance,
        rules=rules,
        by=list(recon.by),
        table=table,
        descriptions={r.name: r.description for r in recon.explained_differences},
        description=spec.description,
        baseline_change=plan.version(spec.baseline).change,
        candidate_change=plan.version(candidate).change,
        units=_units(conn, plan, candidate),
        measures=list(recon.measures),
        discontinuity=plan.discontinuity(candidate) or "",
    )


_WHOLE = re.compile(r"U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?")  # use with fullmatch


def _units(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> dict[str, str]:
    """``rows`` for the row count, ``count`` for measures stored as whole numbers."""
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = 'models' "
            "AND table_name = ?",
            [plan.table_name(version)],
        ).fetchall()
    )
    units = {}
    for measure in plan.spec.checks.reconciliation.measures:
        if measure == ROWS:  # counted, whatever columns the table has
            units[measure] = ROWS
        elif _WHOLE.fullmatch(types.get(measure, "")):
            units[measure] = "count"
    return units
