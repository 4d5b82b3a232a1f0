"""The shadow period (dual run): after a promotion, the baseline keeps running beside it.

A plan with ``shadow_partitions: N`` keeps building its baseline for the N partitions (of its
own cadence: days for a daily plan) after the window the promotion published, and every
evaluation of the published version's window checks (the monitoring schedule each morning,
or the window-check job) reconciles the published version against the baseline over the
shadow partitions both have built so far, with the plan's own reconciliation (``by``,
measures, tolerance, explained differences). A residual no rule explains fails the check
``shadow_reconciles_with_baseline`` on ``analytics/<plan>``, naming the groups.

Once every shadow partition is built by both versions and reconciled, the baseline is
*retired*: it is no longer built for new partitions (``new_partition_builds`` stops asking
for it), its table and evidence are kept (rollback still works), and one row in
``backfill.shadow_periods`` records the period, how many partitions were compared and the
verdict (a failing shadow is retired too, and its row says so). This module is the only one
that writes that table; it is append-only.

New partitions are those after the window the last move published, up to the newest one that
exists (``partitions.end``, else the last complete one). ``new_partition_builds`` lists, per new
partition, the versions not built yet: the published version always (so the published model
keeps growing), and the baseline too while the partition lies in an unretired shadow period.
The plan's ``new_partitions_<plan>_sensor`` turns them into one run request per partition.

A rollback ends the shadow period (the log's last move is no longer the promotion); a new
promotion starts a new one. Nothing here imports Dagster.
"""

import datetime as dt
import json
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.partitions import Partition, stamp
from backfill_assets.plan import Plan
from backfill_assets.publish import PROMOTE, LogEntry, logged_moves, served_plan
from backfill_assets.reconcile import reconcile
from backfill_assets.warehouse import UTC_NOW, ensure_schema, table_exists, transaction
from backfill_assets.window_checks import (
    SHADOW_RECONCILES_WITH_BASELINE,
    WindowCheck,
    reconciliation_check,
)

TABLE = "backfill.shadow_periods"
RETIRED = "retired"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model VARCHAR NOT NULL,
    promotion_run_id VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    baseline VARCHAR NOT NULL,
    first_partition TIMESTAMP NOT NULL,
    last_partition TIMESTAMP NOT NULL,
    partitions_compared INTEGER NOT NULL,
    passed BOOLEAN NOT NULL,
    summary VARCHAR NOT NULL,
    figures JSON NOT NULL,
    run_id VARCHAR NOT NULL,
    happened_at TIMESTAMP NOT NULL
)
"""


@dataclass(frozen=True)
class Retirement:
    """A row of ``backfill.shadow_periods``: a shadow period that ended and what it found."""

    model: str
    promotion_run_id: str
    version: str
    baseline: str
    first: Partition
    last: Partition
    partitions_compared: int
    passed: bool
    summary: str
    figures: dict
    run_id: str
    happened_at: dt.datetime


@dataclass(frozen=True)
class Shadow:
    """The shadow period of the plan's latest promotion."""

    plan: Plan
    promotion: LogEntry
    start: Partition
    end: Partition  # exclusive
    retired: Retirement | None

    @property
    def version(self) -> str:
        return self.promotion.version

    @property
    def baseline(self) -> str:
        return self.plan.spec.baseline

    @property
    def partitions(self) -> list[Partition]:
        return self.plan.cadence.starts(self.start, self.end)

    @property
    def label(self) -> str:
        label = self.plan.cadence.label
        return f"{label(self.start)}..{label(self.partitions[-1])}"


def retirements(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[Retirement]:
    """The plan's retired shadow periods, oldest first (none before the table exists)."""
    if not table_exists(conn, "backfill", "shadow_periods"):
        return []
    rows = conn.execute(
        f"SELECT model, promotion_run_id, version, baseline, first_partition, last_partition, "
        f"partitions_compared, passed, summary, figures, run_id, happened_at FROM {TABLE} "
        "WHERE model = ? AND action = ? ORDER BY happened_at, rowid",
        [plan.name, RETIRED],
    ).fetchall()
    value = plan.cadence.value
    return [
        Retirement(*r[:4], value(r[4]), value(r[5]), *r[6:9], json.loads(r[9]), *r[10:])
        for r in rows
    ]


def current_shadow(conn: duckdb.DuckDBPyConnection, plan: Plan) -> tuple[Shadow | None, str]:
    """The shadow period of the latest promotion, or None and why there is none."""
    if not plan.spec.shadow_partitions:
        return None, f"{plan.name} has no shadow_partitions"
    log = logged_moves(conn, plan)
    if not log:
        return None, "nothing promoted yet"
    last = log[-1]
    if last.action != PROMOTE:
        return None, f"the last move was a {last.action} to {last.version}, which ends a shadow"
    if last.version == plan.spec.baseline:
        return None, f"the baseline {last.version} is published"
    span = served_plan(log, plan).shadow_span
    assert span is not None
    retired = next((r for r in retirements(conn, plan) if r.promotion_run_id == last.run_id), None)
    return Shadow(plan, last, span[0], span[1], retired), ""


def _built(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, start: Partition, end: Partition
) -> set[Partition]:
    if not evidence.exists(conn):
        return set()
    return set(evidence.row_counts(conn, plan, version, start, end))


def compared_partitions(conn: duckdb.DuckDBPyConnection, shadow: Shadow) -> list[Partition]:
    """The shadow partitions both versions have built, from its first up to the first one
    either lacks (a reconciliation over a partition only one side has would be all delta)."""
    built = [
        _built(conn, shadow.plan, v, shadow.start, shadow.end)
        for v in (shadow.version, shadow.baseline)
    ]
    compared = []
    for partition in shadow.partitions:
        if not all(partition in b for b in built):
            break
        compared.append(partition)
    return compared


def shadow_check(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, run_id: str | None = None
) -> WindowCheck:
    """``shadow_reconciles_with_baseline`` for ``version``: the published version against the
    baseline over the shadow partitions built by both so far.

    With ``run_id`` (a run that may write), a shadow whose every partition is now compared is
    retired: its verdict is recorded in ``backfill.shadow_periods`` and the baseline stops
    being built. A retired shadow's check repeats the recorded verdict.
    """
    shadow, reason = current_shadow(conn, plan)
    word = plan.cadence.word
    if shadow is None or shadow.version != version:
        reason = reason or f"the shadow period compares {shadow.version}, not {version}"
        return WindowCheck(
            SHADOW_RECONCILES_WITH_BASELINE, version, True, f"no shadow period running: {reason}"
        )
    if shadow.retired is not None:
        done = shadow.retired
        return WindowCheck(
            SHADOW_RECONCILES_WITH_BASELINE,
            version,
            done.passed,
            f"shadow period {shadow.label} ended {done.happened_at:%Y-%m-%d %H:%M} UTC: "
            f"{shadow.baseline} retired (table kept, no longer built). {done.summary}",
            figures={**done.figures, "retired": True},
        )
    compared = compared_partitions(conn, shadow)
    total = len(shadow.partitions)
    figures = {
        "shadow_first": plan.cadence.label(shadow.start),
        "shadow_last": plan.cadence.label(shadow.partitions[-1]),
        "partitions_in_shadow": total,
        "partitions_compared": len(compared),
        "retired": False,
    }
    if not compared:
        return WindowCheck(
            SHADOW_RECONCILES_WITH_BASELINE,
            version,
            True,
            f"shadow period {shadow.label}: no {word} after the window built by both "
            f"{version} and {shadow.baseline} yet",
            figures=figures,
        )
    end = plan.cadence.next(compared[-1])
    recon = reconcile(conn, plan, shadow.start, end, candidate=version)
    span = (
        f"shadow {plan.cadence.label(shadow.start)}..{plan.cadence.label(compared[-1])} "
        f"({len(compared)} of {total} {word}(s)) against {shadow.baseline}: "
    )
    check = reconciliation_check(recon, version, SHADOW_RECONCILES_WITH_BASELINE, span)
    check.figures.update(figures)
    if run_id is not None and len(compared) == total:
        retired = retire(conn, shadow, check, run_id)
        check.figures["retired"] = True
        check.summary += (
            f". Shadow complete: {shadow.baseline} retired at "
            f"{retired.happened_at:%Y-%m-%d %H:%M} UTC (table kept, no longer built)"
        )
    return check


def retire(
    conn: duckdb.DuckDBPyConnection, shadow: Shadow, check: WindowCheck, run_id: str
) -> Retirement:
    """Record the end of a shadow period and its verdict; the baseline is no longer built."""
    ensure_schema(conn)
    conn.execute(_DDL)
    plan = shadow.plan
    figures = json.loads(json.dumps(check.figures, default=str))
    with transaction(conn):
        happened_at = conn.execute(f"SELECT {UTC_NOW}").fetchone()[0]
        row = Retirement(
            plan.name,
            shadow.promotion.run_id,
            shadow.version,
            shadow.baseline,
            shadow.start,
            shadow.partitions[-1],
            int(check.figures.get("partitions_compared", 0)),
            check.passed,
            check.summary,
            figures,
            run_id,
            happened_at,
        )
        already = conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE model = ? AND promotion_run_id = ? AND action = ?",
            [plan.name, row.promotion_run_id, RETIRED],
        ).fetchone()[0]
        if not already:
            conn.execute(
                f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    row.model,
                    row.promotion_run_id,
                    RETIRED,
                    row.version,
                    row.baseline,
                    stamp(row.first),
                    stamp(row.last),
                    row.partitions_compared,
                    row.passed,
                    row.summary,
                    json.dumps(figures),
                    row.run_id,
                    row.happened_at,
                ],
            )
    return row


def new_partition_builds(
    conn: duckdb.DuckDBPyConnection, plan: Plan, last: Partition | None
) -> tuple[list[tuple[Partition, list[str]]], str]:
    """Per new partition up to ``last`` (the newest that exists), the versions to build now,
    oldest first; and, when there are none, why.

    New partitions follow the window the last move published. The published version is built
    for each; the baseline too while the partition lies in an unretired shadow period.
    Partitions a version has evidence for (passing or not) are not asked for again: a failing
    one is the checks' business, a changed one the late-data sensor's.
    """
    log = logged_moves(conn, plan)
    if not log:
        return [], "nothing promoted yet: new partitions are built once a version is published"
    published = log[-1].version
    start = served_plan(log, plan).window_end
    cadence = plan.cadence
    if last is None or last < start:
        return [], f"no {cadence.word} after the published window ({cadence.label(start)} on) yet"
    end = cadence.next(last)
    shadow, _ = current_shadow(conn, plan)
    in_shadow = shadow is not None and shadow.retired is None and shadow.version == published
    built = {v: _built(conn, plan, v, start, end) for v in (published, plan.spec.baseline)}
    wanted = []
    for partition in cadence.starts(start, end):
        versions = [published]
        if in_shadow and shadow.start <= partition < shadow.end:
            versions.append(plan.spec.baseline)
        missing = [v for v in versions if partition not in built[v]]
        if missing:
            wanted.append((partition, missing))
    if wanted:
        return wanted, ""
    return [], (
        f"every {cadence.word} from {cadence.label(start)} to {cadence.label(last)} is built "
        f"for {published}" + (f" and {plan.spec.baseline} (shadow)" if in_shadow else "")
    )
