"""Publishing: the gate, the view swap, rollback, and the log of both.

``analytics.<plan>`` is a view over ``models.<plan>__<version>``. It starts on the baseline, so
consumers have a stable name from day one. Promotion moves it to another version only when the
gate holds for the whole window; rollback moves it back to the version the last promotion
replaced. Each move and its row in the append-only ``backfill.promotions`` log are one
transaction: a reader sees the whole old version or the whole new one, never a mix.
"""

import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb

from backfill_assets.plan import Plan
from backfill_assets.warehouse import UTC_NOW, ensure_schema, table_exists, transaction
from backfill_assets.window_checks import WindowCheck, run_window_checks

PROMOTE = "promote"
ROLLBACK = "rollback"

# Append-only log of every promotion and rollback. Nothing in the project deletes from it.
_LOG_DDL = """
CREATE TABLE IF NOT EXISTS backfill.promotions (
    model VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    previous_version VARCHAR,
    actor VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    evidence JSON NOT NULL,
    happened_at TIMESTAMP NOT NULL
)
"""


def ensure_log(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the project's schemas and the promotions log if they do not exist."""
    ensure_schema(conn)
    conn.execute(_LOG_DDL)


class PublishError(RuntimeError):
    """A promotion or rollback that was refused; nothing changed."""

    def __init__(self, message: str, gate: "Gate | None" = None) -> None:
        super().__init__(message)
        self.gate = gate


@dataclass
class Gate:
    """Whether a version may be published, and every reason it may not."""

    plan: str
    version: str
    approved_by: str
    checks: list[WindowCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def report(self) -> str:
        head = (
            f"{self.plan}: {self.version} may be published"
            if self.passed
            else f"{self.plan}: promotion of {self.version} refused, nothing changed "
            f"({len(self.problems)} problem(s)):"
        )
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


@dataclass(frozen=True)
class LogEntry:
    """One row of ``backfill.promotions``."""

    model: str
    action: str
    version: str
    previous_version: str | None
    actor: str
    reason: str
    run_id: str
    evidence: dict
    happened_at: dt.datetime


def _view_sql(plan: Plan, version: str) -> str:
    return f"CREATE OR REPLACE VIEW {plan.view} AS SELECT * FROM {plan.model_table(version)}"


def history(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[LogEntry]:
    """The plan's promotions and rollbacks, oldest first."""
    ensure_log(conn)
    rows = conn.execute(
        "SELECT model, action, version, previous_version, actor, reason, run_id, evidence, "
        "happened_at FROM backfill.promotions WHERE model = ? ORDER BY happened_at, rowid",
        [plan.name],
    ).fetchall()
    return [LogEntry(*row[:7], json.loads(row[7]), row[8]) for row in rows]


def published_version(conn: duckdb.DuckDBPyConnection, plan: Plan) -> str:
    """The version ``analytics.<plan>`` shows: the last logged move, else the baseline."""
    log = history(conn, plan)
    return log[-1].version if log else plan.spec.baseline


def is_published(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> bool:
    """Whether users see ``version`` now: the view exists and shows it."""
    return table_exists(conn, "analytics", plan.name) and published_version(conn, plan) == version


def ensure_view(conn: duckdb.DuckDBPyConnection, plan: Plan) -> str:
    """Create ``analytics.<plan>`` over the published version if it is missing; return it."""
    ensure_log(conn)
    version = published_version(conn, plan)
    if not table_exists(conn, "analytics", plan.name):
        if not table_exists(conn, "models", plan.table_name(version)):
            raise PublishError(
                f"{plan.name}: cannot create {plan.view} yet: models.{plan.table_name(version)} "
                f"does not exist. Fix: backfill {version}/{plan.name} first."
            )
        conn.execute(_view_sql(plan, version))
    return version


def evaluate_gate(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, approved_by: str = ""
) -> Gate:
    """Every condition of ARCHITECTURE.md §4.3 for ``version``; lists all failures, not one."""
    if version not in plan.version_names:
        raise PublishError(
            f"{plan.name}: there is no version {version!r}; the plan has {plan.version_names}"
        )
    gate = Gate(plan.name, version, approved_by.strip())
    ensure_log(conn)
    if version == published_version(conn, plan):
        gate.problems.append(f"{version} is already the published version")
    gate.checks = run_window_checks(conn, plan, version)
    for check in gate.checks:
        if check.blocking and not check.passed:
            gate.problems.append(f"{check.name}: {check.summary}")
    if plan.spec.risk == "high":
        if not gate.approved_by:
            gate.problems.append(
                f"approval: {plan.name} is risk: high; set approved_by to one of "
                f"{plan.spec.approvers}"
            )
        elif gate.approved_by not in plan.spec.approvers:
            gate.problems.append(
                f"approval: {gate.approved_by!r} is not an approver of {plan.name}; "
                f"the approvers are {plan.spec.approvers}"
            )
    return gate


def _append(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    action: str,
    version: str,
    previous: str | None,
    actor: str,
    reason: str,
    run_id: str,
    evidence: dict,
) -> LogEntry:
    """Swap the view and log the move, in one transaction."""
    with transaction(conn):
        conn.execute(_view_sql(plan, version))
        happened_at = conn.execute(
            "INSERT INTO backfill.promotions VALUES "
            f"(?, ?, ?, ?, ?, ?, ?, ?, {UTC_NOW}) "
            "RETURNING happened_at",
            [
                plan.name,
                action,
                version,
                previous,
                actor,
                reason,
                run_id,
                json.dumps(evidence, default=str),
            ],
        ).fetchone()[0]
    return LogEntry(
        plan.name, action, version, previous, actor, reason, run_id, evidence, happened_at
    )


def promote(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    approved_by: str,
    note: str,
    run_id: str,
) -> tuple[Gate, LogEntry]:
    """Publish ``version`` if the gate holds; otherwise raise ``PublishError`` with the report."""
    gate = evaluate_gate(conn, plan, version, approved_by)
    if not gate.passed:
        raise PublishError(gate.report(), gate)
    previous = published_version(conn, plan)
    evidence = {
        "window": f"{plan.spec.window.start}..{plan.spec.window.end}",
        "checks": {c.name: {"passed": c.passed, "summary": c.summary} for c in gate.checks},
        "approved_by": gate.approved_by or None,
    }
    entry = _append(
        conn,
        plan,
        PROMOTE,
        version,
        previous,
        gate.approved_by or "(no approval required: risk low)",
        note,
        run_id,
        evidence,
    )
    return gate, entry


def rollback(
    conn: duckdb.DuckDBPyConnection, plan: Plan, by: str, reason: str, run_id: str
) -> LogEntry:
    """Point the view back at the version the last promotion replaced."""
    if not by.strip() or not reason.strip():
        raise PublishError(f"{plan.name}: a rollback needs `by` and `reason`; nothing changed")
    log = history(conn, plan)
    if not log or log[-1].action != PROMOTE:
        last = f"the last move was a {log[-1].action} to {log[-1].version}" if log else "none yet"
        raise PublishError(
            f"{plan.name}: nothing to roll back to: rollback undoes the latest promotion, and "
            f"{last}. Fix: promote a version (its gate applies) instead."
        )
    target = log[-1].previous_version or plan.spec.baseline
    if not table_exists(conn, "models", plan.table_name(target)):
        raise PublishError(
            f"{plan.name}: models.{plan.table_name(target)} is gone; nothing changed"
        )
    return _append(
        conn,
        plan,
        ROLLBACK,
        target,
        log[-1].version,
        by.strip(),
        reason,
        run_id,
        {"undoes_promotion_run": log[-1].run_id},
    )
