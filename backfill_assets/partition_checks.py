"""Per-partition checks, computed on a staged window before it is written.

Each check runs as one set-based statement over the whole window and yields a verdict per
partition (an hour, day, week or month, as the plan's cadence says),
with the figures that explain it:

- ``grain_is_unique``: no ``unique_key`` value repeats within a partition;
- ``null_rates_within_limits``: each column's share of NULLs within the plan's limit;
- ``known_records_match``: the plan's hand-verified rows have exactly the expected values
  (candidate version only: they describe what the rebuilt history must say).

The verdicts travel in the evidence table (``evidence.py``; written in the same transaction as the
rows) and are emitted to Dagster as per-partition asset check evaluations.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb

from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.warehouse import quote

GRAIN_IS_UNIQUE = "grain_is_unique"
NULL_RATES_WITHIN_LIMITS = "null_rates_within_limits"
KNOWN_RECORDS_MATCH = "known_records_match"
EXAMPLES = 5


def partition_check_names(plan: Plan, version: str) -> list[str]:
    """The per-partition checks that apply to a version of a plan."""
    names = [GRAIN_IS_UNIQUE, NULL_RATES_WITHIN_LIMITS]
    if version == plan.spec.candidate and plan.spec.checks.known_records:
        names.append(KNOWN_RECORDS_MATCH)
    return names


@dataclass
class PartitionChecks:
    """One partition's row count and check verdicts."""

    partition: Partition
    row_count: int = 0
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(result["passed"] for result in self.checks.values())

    def failed_checks(self) -> list[str]:
        return [name for name, result in self.checks.items() if not result["passed"]]


def _grain(conn, plan: Plan, stage: str) -> dict[dt.date, tuple[int, list[str]]]:
    keys = ", ".join(quote(k) for k in plan.spec.unique_key)
    key_text = " || '|' || ".join(
        f"coalesce(CAST({quote(k)} AS VARCHAR), 'NULL')" for k in plan.spec.unique_key
    )
    rows = conn.execute(
        f"""
        SELECT p, CAST(sum(n - 1) AS BIGINT), list(key_text ORDER BY key_text)[1:{EXAMPLES}]
        FROM (
            SELECT {plan.partition_column} AS p, {key_text} AS key_text, count(*) AS n
            FROM {stage}
            GROUP BY {plan.partition_column}, {keys}
            HAVING count(*) > 1
        )
        GROUP BY p
        """
    ).fetchall()
    return {p: (extra, examples) for p, extra, examples in rows}


def _nulls(conn, plan: Plan, stage: str) -> dict[dt.date, tuple[int, dict[str, int]]]:
    limits = plan.spec.checks.null_rates
    counts = ", ".join(f"count(*) FILTER (WHERE {quote(col)} IS NULL)" for col in limits)
    rows = conn.execute(
        f"SELECT {plan.partition_column}, count(*), {counts} FROM {stage} "
        f"GROUP BY {plan.partition_column}"
    ).fetchall()
    return {row[0]: (row[1], dict(zip(limits, row[2:], strict=True))) for row in rows}


def _known_records(conn, plan: Plan, stage: str, start, end) -> dict[dt.date, list[dict]]:
    """Per day, one entry per known record of that day: matched or not, expected vs actual."""
    types = {r[0]: r[1] for r in conn.execute(f"DESCRIBE {stage}").fetchall()}
    pc = plan.spec.partition_column
    found: dict[dt.date, list[dict]] = {}
    for record in plan.spec.checks.known_records:
        values = {**record.key, **record.expect}
        day = values[pc]
        if isinstance(day, str):
            day = (dt.datetime if plan.cadence.is_hourly else dt.date).fromisoformat(day)
        day = plan.cadence.value(day)
        if not start <= day < end:
            continue
        params = [day if col == pc else value for col, value in record.key.items()]
        where = " AND ".join(
            f"{quote(col)} IS NOT DISTINCT FROM CAST(${i} AS {types[col]})"
            for i, col in enumerate(record.key, start=1)
        )
        expect_cols = list(record.expect)
        matched = " AND ".join(
            f"{quote(col)} IS NOT DISTINCT FROM CAST(${i} AS {types[col]})"
            for i, col in enumerate(expect_cols, start=len(params) + 1)
        )
        actual_rows = conn.execute(
            f"SELECT {', '.join(quote(c) for c in expect_cols)}, {matched} "
            f"FROM {stage} WHERE {where} LIMIT 2",
            [*params, *record.expect.values()],
        ).fetchall()
        found.setdefault(day, []).append(
            {
                "key": {k: str(v) for k, v in record.key.items()},
                "expected": {k: str(v) for k, v in record.expect.items()},
                "actual": (
                    {c: str(v) for c, v in zip(expect_cols, actual_rows[0][:-1], strict=True)}
                    if len(actual_rows) == 1
                    else f"{len(actual_rows)} rows with this key"
                ),
                "matched": len(actual_rows) == 1 and bool(actual_rows[0][-1]),
            }
        )
    return found


def run_partition_checks(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    stage: str,
    start: dt.date,
    end: dt.date,
) -> list[PartitionChecks]:
    """Verdicts for every partition of ``[start, end)`` on the staged rows, oldest first."""
    grain = _grain(conn, plan, stage)
    nulls = _nulls(conn, plan, stage)
    names = partition_check_names(plan, version)
    known = _known_records(conn, plan, stage, start, end) if KNOWN_RECORDS_MATCH in names else {}
    limits = plan.spec.checks.null_rates
    result = []
    for day in plan.cadence.starts(start, end):
        rows, null_counts = nulls.get(day, (0, dict.fromkeys(limits, 0)))
        duplicates, examples = grain.get(day, (0, []))
        rates = {c: (n / rows if rows else 0.0) for c, n in null_counts.items()}
        over = {
            c: {"rate": round(rates[c], 6), "limit": limits[c], "nulls": null_counts[c]}
            for c in limits
            if rates[c] > limits[c]
        }
        checks: dict[str, dict[str, Any]] = {
            GRAIN_IS_UNIQUE: {
                "passed": duplicates == 0,
                "duplicate_rows": duplicates,
                "first_duplicate_keys": examples,
            },
            NULL_RATES_WITHIN_LIMITS: {
                "passed": not over,
                "rows": rows,
                "over_limit": over,
                "null_rates": {c: round(r, 6) for c, r in rates.items()},
            },
        }
        if KNOWN_RECORDS_MATCH in names:
            records = known.get(day, [])
            checks[KNOWN_RECORDS_MATCH] = {
                "passed": all(r["matched"] for r in records),
                "records_checked": len(records),
                "mismatches": [r for r in records if not r["matched"]],
            }
        result.append(PartitionChecks(partition=day, row_count=rows, checks=checks))
    return result
