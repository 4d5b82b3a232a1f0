"""Publishing: the gate, the view swap, rollback, and the log of both.

``analytics.<plan>`` is a view over the window of ``models.<plan>__<version>``: it shows the
partitions of the plan's window and nothing else, because the window is what the gate checked
(a partition built after it, even a failing one, stays out of sight). It starts on the baseline, so
consumers have a stable name from day one. Promotion moves it to another version only when the
gate holds for the whole window; rollback moves it back to the version the last promotion
replaced, once that version's evidence passes over the window again (or when forced, with a
reason the log keeps). Each move and its row in the append-only ``backfill.promotions`` log are
one transaction: a reader sees the whole old version or the whole new one, never a mix.

An approval counts only from one of the plan's ``approvers``; anyone else named is recorded as
the person who launched the promotion, never as its approver.
"""

import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb

from backfill_assets.partitions import Partition
from backfill_assets.plan import Plan
from backfill_assets.warehouse import UTC_NOW, ensure_schema, table_exists, transaction
from backfill_assets.window_checks import (
    RECONCILES_WITH_BASELINE,
    WindowCheck,
    code_current,
    completeness,
    every_partition_passed,
    run_window_checks,
    sources_current,
)

PROMOTE = "promote"
ROLLBACK = "rollback"
NO_APPROVAL = "(no approval required: risk low)"  # the log's actor when nobody was named
# The window checks a rollback re-runs on the version it goes back to: those that read the
# evidence (every partition present, passed, built with the current code, from the current
# sources). The others compare a candidate with the baseline, settled when it was promoted.
ROLLBACK_CHECKS = (completeness, every_partition_passed, code_current, sources_current)

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
    """Whether a version may be published, and every reason it may not.

    ``approved_by`` is set only when the person named is one of the plan's approvers; anyone
    else named is ``launched_by`` (for a low-risk plan, which needs no approval).
    """

    plan: str
    version: str
    approved_by: str
    checks: list[WindowCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    launched_by: str = ""

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


def _literal(value: Partition) -> str:
    """A window bound as SQL. Views cannot take bound parameters, so the bound is written out;
    it is a partition start (``date``, or UTC ``datetime`` for hourly) computed from the
    validated plan, never text from a user."""
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"
    return f"DATE '{value.isoformat()}'"


def window_text(plan: Plan) -> str:
    """The window as the log records it (both ends inclusive, as in the plan file)."""
    return f"{plan.spec.window.start}..{plan.spec.window.end}"


def _view_sql(plan: Plan, version: str) -> str:
    """The published view: the version's rows of the plan's window, and only those."""
    start, end = plan.window_start, plan.window_end
    column = plan.partition_column
    return (
        f"CREATE OR REPLACE VIEW {plan.view} AS SELECT * FROM {plan.model_table(version)} "
        f"WHERE {column} >= {_literal(start)} AND {column} < {_literal(end)}"
    )


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


def _served_plan(log: list[LogEntry], plan: Plan) -> Plan:
    """The plan over the window the last move published (the plan file's window may have
    changed since; the view must keep showing what was gated)."""
    logged = log[-1].evidence.get("window") if log else None
    if not logged or logged == window_text(plan):
        return plan
    first, last = (dt.date.fromisoformat(part) for part in logged.split(".."))
    return plan.with_window(first, last)


def ensure_view(conn: duckdb.DuckDBPyConnection, plan: Plan) -> str:
    """Create ``analytics.<plan>`` over the published version if it is missing; return it.

    Before any promotion it shows the baseline over the plan's window; after one, the
    published version over the window that move published.
    """
    ensure_log(conn)
    log = history(conn, plan)
    version = log[-1].version if log else plan.spec.baseline
    if not table_exists(conn, "analytics", plan.name):
        if not table_exists(conn, "models", plan.table_name(version)):
            raise PublishError(
                f"{plan.name}: cannot create {plan.view} yet: models.{plan.table_name(version)} "
                f"does not exist. Fix: backfill {version}/{plan.name} first."
            )
        conn.execute(_view_sql(_served_plan(log, plan), version))
    return version


def evaluate_gate(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, approved_by: str = ""
) -> Gate:
    """Every condition of ARCHITECTURE.md §4.3 for ``version``; lists all failures, not one."""
    if version not in plan.version_names:
        raise PublishError(
            f"{plan.name}: there is no version {version!r}; the plan has {plan.version_names}"
        )
    # One line, whatever was typed: the name goes into the log and the cutover summary.
    named = " ".join(approved_by.split())
    is_approver = named in plan.spec.approvers
    gate = Gate(
        plan.name,
        version,
        approved_by=named if is_approver else "",
        launched_by="" if is_approver else named,
    )
    ensure_log(conn)
    if version == published_version(conn, plan):
        gate.problems.append(f"{version} is already the published version")
    gate.checks = run_window_checks(conn, plan, version)
    for check in gate.checks:
        if check.blocking and not check.passed:
            gate.problems.append(f"{check.name}: {check.summary}")
    if plan.spec.risk == "high":
        if not named:
            gate.problems.append(
                f"approval: {plan.name} is risk: high; set approved_by to one of "
                f"{plan.spec.approvers}"
            )
        elif not is_approver:
            gate.problems.append(
                f"approval: {named!r} is not an approver of {plan.name}; "
                f"the approvers are {plan.spec.approvers}"
            )
    return gate


def _actor(gate: Gate) -> str:
    """Who the log names for a promotion: the approver, else who launched it, and as what."""
    if gate.approved_by:
        return gate.approved_by
    if gate.launched_by:
        return f"launched by {gate.launched_by} (not an approver)"
    return NO_APPROVAL


def _known_differences(gate: Gate) -> dict | None:
    """The size of each explained difference per measure (the sum over all groups of the
    change the rule predicts, in absolute value), for the log and the cutover summary."""
    recon = next((c for c in gate.checks if c.name == RECONCILES_WITH_BASELINE), None)
    if recon is None or recon.reconciliation is None:
        return None
    table = recon.reconciliation.table
    measures = list(dict.fromkeys(table["measure"]))
    return {
        "by": list(recon.reconciliation.by),
        "tolerance": recon.reconciliation.tolerance,
        "measures": measures,
        "rules": {
            rule: {
                m: round(float(table.loc[table["measure"] == m, f"rule_{rule}"].abs().sum()), 6)
                for m in measures
            }
            for rule in recon.reconciliation.rules
        },
    }


def _promotion_evidence(plan: Plan, gate: Gate) -> dict:
    """What the log keeps of a promotion's gate: enough to write its cutover summary again."""
    return {
        "window": window_text(plan),
        "checks": {
            c.name: {
                "passed": c.passed,
                "blocking": c.blocking,
                "summary": c.summary,
                "figures": c.figures,
            }
            for c in gate.checks
        },
        "approved_by": gate.approved_by or None,
        "launched_by": gate.launched_by or None,
        "known_differences": _known_differences(gate),
    }


def _commit(conn: duckdb.DuckDBPyConnection, plan: Plan, entry: LogEntry) -> LogEntry:
    """Swap the view and log the move, in one transaction; return the row as logged."""
    with transaction(conn):
        if published_version(conn, plan) != (entry.previous_version or plan.spec.baseline):
            raise PublishError(
                f"{plan.name}: the published version changed while this {entry.action} was "
                "being prepared; nothing changed. Fix: launch it again."
            )
        conn.execute(_view_sql(plan, entry.version))
        conn.execute(
            "INSERT INTO backfill.promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                entry.model,
                entry.action,
                entry.version,
                entry.previous_version,
                entry.actor,
                entry.reason,
                entry.run_id,
                json.dumps(entry.evidence),
                entry.happened_at,
            ],
        )
    return entry


def _json_default(value: object) -> object:
    """numpy numbers as plain numbers, anything else JSON cannot hold (dates) as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _entry(
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
    """The log row a move will write. Its evidence is made JSON-plain here (dates as text), so
    the entry equals what ``history`` reads back, and what is rendered from one (the cutover
    summary) is the same text when rendered from the other."""
    happened_at = conn.execute(f"SELECT {UTC_NOW}").fetchone()[0]
    plain = json.loads(json.dumps(evidence, default=_json_default))
    return LogEntry(plan.name, action, version, previous, actor, reason, run_id, plain, happened_at)


def prepare_promotion(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    approved_by: str,
    note: str,
    run_id: str,
) -> tuple[Gate, LogEntry]:
    """Evaluate the gate and return it with the log row the promotion will write; change
    nothing. Raise ``PublishError`` with the gate's report when it does not hold.

    Together with ``commit_promotion``: whatever else must succeed with the promotion (the
    cutover summary) can be prepared in between, so that it fails before anything changed.
    """
    gate = evaluate_gate(conn, plan, version, approved_by)
    if not gate.passed:
        raise PublishError(gate.report(), gate)
    entry = _entry(
        conn,
        plan,
        PROMOTE,
        version,
        published_version(conn, plan),
        _actor(gate),
        note,
        run_id,
        _promotion_evidence(plan, gate),
    )
    return gate, entry


def commit_promotion(conn: duckdb.DuckDBPyConnection, plan: Plan, entry: LogEntry) -> LogEntry:
    """Publish a promotion ``prepare_promotion`` returned: the view swap and its log row."""
    return _commit(conn, plan, entry)


def promote(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    approved_by: str,
    note: str,
    run_id: str,
) -> tuple[Gate, LogEntry]:
    """Publish ``version`` if the gate holds; otherwise raise ``PublishError`` with the report."""
    gate, entry = prepare_promotion(conn, plan, version, approved_by, note, run_id)
    return gate, commit_promotion(conn, plan, entry)


def rollback(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    by: str,
    reason: str,
    run_id: str,
    force: bool = False,
) -> LogEntry:
    """Point the view back at the version the last promotion replaced.

    That version's evidence is checked again over the plan's window (``ROLLBACK_CHECKS``):
    when a check fails the rollback is refused, naming the partitions and checks, and nothing
    changes, unless ``force`` is set; a forced rollback records ``forced`` and the checks it
    overrode in the log row's evidence. Who and why are always required.
    """
    if not by.strip() or not reason.strip():
        raise PublishError(
            f"{plan.name}: a rollback needs `by` and `reason` (a forced one too); nothing changed"
        )
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
    checks = [check(conn, plan, target) for check in ROLLBACK_CHECKS]
    failing = {c.name: c.summary for c in checks if not c.passed}
    if failing and not force:
        problems = "\n".join(f"  - {name}: {summary}" for name, summary in failing.items())
        raise PublishError(
            f"{plan.name}: rollback to {target} refused, nothing changed ({len(failing)} "
            f"problem(s) in {target} over {window_text(plan)}):\n{problems}\n"
            f"Fix: rebuild what they name in {target}/{plan.name} and roll back again; or, if "
            f"users must leave {log[-1].version} now anyway, set force: true (the reason and "
            "the failing checks are recorded in backfill.promotions)."
        )
    evidence = {
        "undoes_promotion_run": log[-1].run_id,
        "window": window_text(plan),
        "checks": {c.name: {"passed": c.passed, "summary": c.summary} for c in checks},
        "forced": bool(failing),
        "failing_checks": failing,
    }
    entry = _entry(
        conn, plan, ROLLBACK, target, log[-1].version, by.strip(), reason, run_id, evidence
    )
    return _commit(conn, plan, entry)
