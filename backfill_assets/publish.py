"""Publishing: the gate, the view swap, rollback, and the log of both.

``analytics.<plan>`` is a view over the window of ``models.<plan>__<version>``: it shows the
partitions of the plan's window and nothing else, because the window is what the gate checked
(a partition built after it, even a failing one, stays out of sight). It starts on the baseline, so
consumers have a stable name from day one. Promotion moves it to another version only when the
gate holds for the whole window; rollback moves it back to a version users saw before (by
default the one the last promotion replaced; or any earlier published version, named by
version or by its row in the log), once that version passes the rollback gate over the window
again (or when forced, with a reason the log keeps). Each move and its row in the append-only
``backfill.promotions`` log are one transaction: a reader sees the whole old version or the
whole new one, never a mix. (The consumer-query check rehearses the view in a transaction it
always rolls back, ``view.rehearsal``; only this module commits a change to it.)

A forward-only plan's view reads the baseline before the cutoff and the published version from
it (``view.definition``); its gates cover both spans (``window_checks.served``), and what the
view reads is recorded with each move (``cutoff``, ``discontinuity`` in its evidence).

An approval counts only from one of the plan's ``approvers``; anyone else named is recorded as
the person who launched the promotion, never as its approver.

Every evaluation of a version's window checks (``evaluate_window``: the window-check job's and
the gate's) is recorded with its state key in ``backfill.window_verdicts`` (``verdicts.py``).
The gate reuses the latest verdict made in the state it finds (same evidence, sources, tables,
plan files, code, published version and log position; at most a day old) instead of running
the checks again, re-evaluating only the checks that read the clock or tables outside the plan;
the promotion's log row names the verdict it reused (``verdict_reused_from``).
"""

import datetime as dt
import json
import time
from dataclasses import dataclass, field

import duckdb

from backfill_assets import verdicts
from backfill_assets.plan import Plan
from backfill_assets.view import definition
from backfill_assets.warehouse import (
    UTC_NOW,
    committed,
    ensure_schema,
    execute_ddl,
    table_exists,
)
from backfill_assets.window_checks import (
    RECONCILES_WITH_BASELINE,
    WindowCheck,
    code_current,
    completeness,
    downstream_queries,
    every_partition_passed,
    recheck,
    run_window_checks,
    served,
    sources_current,
)

PROMOTE = "promote"
ROLLBACK = "rollback"
NO_APPROVAL = "(no approval required: risk low)"  # the log's actor when nobody was named
# The window checks a rollback re-runs on the version it goes back to: those that read the
# evidence (every partition present, passed, built with the current code, from the current
# sources), and, for plans whose consumers declare their query, ``downstream_queries_work``
# (consumers may have come to rely on the version they leave). Comparisons with the baseline
# (reconciliation, trend, schema contract) were settled when the version was published.
ROLLBACK_CHECKS = (completeness, every_partition_passed, code_current, sources_current)
# How a rollback names the version it goes back to (the log records which was used).
LATEST_PROMOTION, BY_VERSION, BY_LOG_ROW = "latest promotion", "version", "log row"
GATE = "promotion gate"  # where a verdict was evaluated, as backfill.window_verdicts says

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
    execute_ddl(conn, _LOG_DDL)


class PublishError(RuntimeError):
    """A promotion or rollback that was refused; nothing changed."""

    def __init__(self, message: str, gate: "Gate | None" = None) -> None:
        super().__init__(message)
        self.gate = gate


@dataclass
class WindowEvaluation:
    """A version's window checks and how they were had: evaluated now (and recorded), or
    reused from ``verdict``, recorded in the same state, with ``rechecked`` evaluated again."""

    checks: list[WindowCheck]
    verdict: verdicts.Verdict
    reused: bool
    rechecked: list[str] = field(default_factory=list)
    # Evaluated now: the parts of the state that differ from the version's latest verdict.
    changed: list[str] = field(default_factory=list)
    key_seconds: float = 0.0
    check_seconds: float = 0.0

    @property
    def reused_from(self) -> dict | None:
        """What the log records of the reused verdict; None when the checks ran."""
        if not self.reused:
            return None
        return {**self.verdict.reference(), "rechecked": self.rechecked}

    def note(self) -> str:
        """One line for the run's log: reused from where, or evaluated and why."""
        if self.reused:
            return (
                f"window checks of {self.verdict.version}: reused the verdict of run "
                f"{self.verdict.run_id or '-'} ({self.verdict.evaluated_in}, "
                f"{self.verdict.evaluated_at:%Y-%m-%d %H:%M:%S} UTC): nothing they read changed "
                f"since (state key {self.key_seconds:.2f}s); re-evaluated {self.rechecked}"
            )
        why = f"changed since the last verdict: {', '.join(self.changed)}" if self.changed else ""
        return (
            f"window checks of {self.verdict.version}: evaluated in {self.check_seconds:.2f}s "
            f"(state key {self.key_seconds:.2f}s){'; ' + why if why else ''}"
        )


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
    known_differences: dict | None = None
    evaluation: WindowEvaluation | None = None

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


def window_text(plan: Plan) -> str:
    """The window as the log records it (both ends inclusive, as in the plan file)."""
    return f"{plan.spec.window.start}..{plan.spec.window.end}"


def history(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[LogEntry]:
    """The plan's promotions and rollbacks, oldest first."""
    ensure_log(conn)
    return logged_moves(conn, plan)


def logged_moves(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[LogEntry]:
    """``history`` without creating anything, for read-only connections (sensors): no rows
    before the log exists."""
    if not table_exists(conn, "backfill", "promotions"):
        return []
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


def served_plan(log: list[LogEntry], plan: Plan) -> Plan:
    """The plan over the window the last move published (the plan file's window may have
    changed since; the view must keep showing what was gated)."""
    logged = log[-1].evidence.get("window") if log else None
    if not logged or logged == window_text(plan):
        return plan
    first, last = (dt.date.fromisoformat(part) for part in logged.split(".."))
    return plan.with_window(first, last)


def serves(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> bool:
    """Whether users see rows of ``version`` now: it is published, or it is a forward-only
    plan's baseline serving the span before the cutoff of the published version."""
    if not table_exists(conn, "analytics", plan.name):
        return False
    shown = published_version(conn, plan)
    return version in {v for v, _ in plan.served_spans(shown)}


def _served_by(plan: Plan, version: str) -> dict:
    """What a move's log row records of what the view reads: for a forward-only split, the
    cutoff and the sentence naming the discontinuity."""
    text = plan.discontinuity(version)
    if not text:
        return {}
    return {"cutoff": plan.cadence.label(plan.cutoff), "discontinuity": text}


def _shadow(plan: Plan) -> dict:
    """A plan with ``shadow_partitions``: the partitions after the promoted window during which
    the baseline keeps being built and reconciled (``shadow.py``), as the log records them."""
    span = plan.shadow_span
    if span is None:
        return {}
    first, end = span
    last = plan.cadence.starts(first, end)[-1]
    return {
        "shadow": {
            "baseline": plan.spec.baseline,
            "partitions": plan.spec.shadow_partitions,
            "first": plan.cadence.label(first),
            "last": plan.cadence.label(last),
        }
    }


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
        conn.execute(definition(served_plan(log, plan), version))
    return version


def _log_position(log: list[LogEntry]) -> str:
    """Where the plan's log stands: a promotion or rollback since moves it."""
    if not log:
        return "0"
    return f"{len(log)}:{log[-1].run_id}:{log[-1].happened_at.isoformat()}"


def evaluate_window(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    published: str,
    run_id: str,
    evaluated_in: str,
    reuse: bool,
) -> WindowEvaluation:
    """The window checks of ``version`` against ``published``: with ``reuse``, those of the
    latest verdict recorded in the state found now (``verdicts.find``), with the checks it
    cannot vouch for evaluated again; otherwise (or when there is none) evaluated now and
    recorded with that state. The state is taken before the checks run: whatever changes
    while they run gives the next evaluation another key."""
    started = time.perf_counter()
    parts = verdicts.state(conn, plan, version, published, _log_position(history(conn, plan)))
    key = verdicts.state_key(parts)
    key_seconds = time.perf_counter() - started
    found = verdicts.find(conn, plan, version, key) if reuse else None
    if found is not None:
        names = verdicts.rechecked(plan)
        fresh = recheck(conn, plan, version, published, names)
        checks = [fresh.get(c.name, c) for c in found.window_checks()]
        return WindowEvaluation(checks, found, True, sorted(fresh), key_seconds=key_seconds)
    earlier = verdicts.latest(conn, plan, version)
    started = time.perf_counter()
    checks = run_window_checks(conn, plan, version, published)
    check_seconds = time.perf_counter() - started
    verdict = verdicts.record(
        conn,
        plan,
        version,
        published,
        parts,
        checks,
        _known_differences(checks),
        evaluated_in,
        run_id,
        check_seconds,
        key_seconds,
    )
    changed = verdicts.changed_parts(earlier.state, parts) if earlier else []
    return WindowEvaluation(checks, verdict, False, [], changed, key_seconds, check_seconds)


def evaluate_gate(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    approved_by: str = "",
    run_id: str = "",
    reuse: bool = True,
) -> Gate:
    """Every condition of ARCHITECTURE.md §4.3 for ``version``; lists all failures, not one.

    The window checks come from ``evaluate_window``: reused when nothing they read changed
    since they were last evaluated (``reuse``), evaluated and recorded otherwise."""
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
    published = published_version(conn, plan)
    if version == published:
        gate.problems.append(f"{version} is already the published version")
    evaluation = evaluate_window(conn, plan, version, published, run_id, GATE, reuse)
    gate.checks, gate.evaluation = evaluation.checks, evaluation
    gate.known_differences = evaluation.verdict.known_differences
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


def _known_differences(checks: list[WindowCheck]) -> dict | None:
    """The size of each explained difference per measure (the sum over all groups of the
    change the rule predicts, in absolute value), for the log and the cutover summary; kept
    with the verdict, since a reused verdict has no reconciliation table to measure."""
    recon = next((c for c in checks if c.name == RECONCILES_WITH_BASELINE), None)
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
        "totals": recon.reconciliation.measure_totals(),
    }


def _logged_checks(gate: Gate) -> dict:
    """Each check of a gate as the log keeps it."""
    return {
        c.name: {
            "passed": c.passed,
            "blocking": c.blocking,
            "summary": c.summary,
            "figures": c.figures,
        }
        for c in gate.checks
    }


def _promotion_evidence(plan: Plan, gate: Gate) -> dict:
    """What the log keeps of a promotion's gate: enough to write its cutover summary again."""
    return {
        "window": window_text(plan),
        "checks": _logged_checks(gate),
        "approved_by": gate.approved_by or None,
        "launched_by": gate.launched_by or None,
        "known_differences": gate.known_differences,
        "verdict_reused_from": gate.evaluation.reused_from if gate.evaluation else None,
        **_served_by(plan, gate.version),
        **_shadow(plan),
    }


def _commit(conn: duckdb.DuckDBPyConnection, plan: Plan, entry: LogEntry) -> LogEntry:
    """Swap the view and log the move, in one transaction; return the row as logged. On a
    DuckLake a commit that conflicts with another move runs again and finds it published."""

    def swap() -> None:
        if published_version(conn, plan) != (entry.previous_version or plan.spec.baseline):
            raise PublishError(
                f"{plan.name}: the published version changed while this {entry.action} was "
                "being prepared; nothing changed. Fix: launch it again."
            )
        conn.execute(definition(plan, entry.version))
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

    committed(conn, swap, f"{plan.name} {entry.action} to {entry.version}")
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
    gate = evaluate_gate(conn, plan, version, approved_by, run_id)
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


def log_lines(log: list[LogEntry]) -> list[str]:
    """The plan's moves numbered as ``to_log_row`` counts them (1 = the first)."""
    return [
        f"{row}. {e.happened_at:%Y-%m-%d %H:%M:%S} {e.action} to {e.version} "
        f"(was {e.previous_version or '-'}) by {e.actor}: {e.reason or '(no note)'}"
        for row, e in enumerate(log, start=1)
    ]


def _published_before(plan: Plan, log: list[LogEntry]) -> list[str]:
    """Versions users have seen: the baseline (the view's first version), then each version a
    logged move published."""
    return list(dict.fromkeys([plan.spec.baseline, *(e.version for e in log)]))


def _rollback_target(
    plan: Plan, log: list[LogEntry], to_version: str | None, to_log_row: int | None
) -> tuple[str, dict]:
    """The version a rollback goes back to and how it was chosen (for the log); raise
    ``PublishError`` naming the choices when the request names none of them."""
    current = log[-1].version if log else plan.spec.baseline
    if to_version and to_log_row is not None:
        raise PublishError(
            f"{plan.name}: name the version to roll back to either by version "
            f"({to_version!r}) or by log row ({to_log_row}), not both; nothing changed"
        )
    if to_log_row is not None:
        if not 1 <= to_log_row <= len(log):
            listed = "\n".join(f"  {line}" for line in log_lines(log)) or "  (no moves yet)"
            raise PublishError(
                f"{plan.name}: backfill.promotions has no row {to_log_row} for {plan.name}; "
                f"nothing changed. Its rows:\n{listed}"
            )
        target = log[to_log_row - 1].version
        chosen = {"chosen_by": BY_LOG_ROW, "log_row": to_log_row}
    elif to_version:
        seen = _published_before(plan, log)
        if to_version not in plan.version_names:
            raise PublishError(
                f"{plan.name}: there is no version {to_version!r}; the plan has "
                f"{plan.version_names}. Nothing changed."
            )
        if to_version not in seen:
            raise PublishError(
                f"{plan.name}: {to_version} was never published, so there is nothing to roll "
                f"back to; nothing changed. Versions published before: {seen}. Fix: promote "
                f"{to_version} instead (its gate applies)."
            )
        rows = [n for n, e in enumerate(log, start=1) if e.version == to_version]
        target = to_version
        chosen = {"chosen_by": BY_VERSION, "log_row": rows[-1] if rows else None}
    else:
        if not log or log[-1].action != PROMOTE:
            last = (
                f"the last move was a {log[-1].action} to {log[-1].version}" if log else "none yet"
            )
            raise PublishError(
                f"{plan.name}: nothing to roll back to: rollback undoes the latest promotion, "
                f"and {last}. Fix: promote a version (its gate applies) instead, or name an "
                f"earlier published version (to_version) or log row (to_log_row)."
            )
        target = log[-1].previous_version or plan.spec.baseline
        chosen = {"chosen_by": LATEST_PROMOTION, "log_row": None}
    if target == current:
        raise PublishError(
            f"{plan.name}: {target} is the published version already; nothing changed"
        )
    return target, chosen


def evaluate_rollback_gate(
    conn: duckdb.DuckDBPyConnection, plan: Plan, target: str, published: str
) -> Gate:
    """The rollback gate for ``target``: ``ROLLBACK_CHECKS`` over the plan's window, and the
    consumers' queries on it (when the plan declares any); its problems name the partitions,
    checks and consumers that fail. Who rolls back needs no approval: the version was
    published before, and the log records who went back to it and why."""
    gate = Gate(plan.name, target, approved_by="")
    if not table_exists(conn, "models", plan.table_name(target)):
        gate.problems.append(f"models.{plan.table_name(target)} is gone")
        return gate
    gate.checks = [served(check, conn, plan, target) for check in ROLLBACK_CHECKS]
    if plan.consumer_queries:
        gate.checks.append(downstream_queries(conn, plan, target, published))
    gate.problems = [f"{c.name}: {c.summary}" for c in gate.checks if c.blocking and not c.passed]
    return gate


def rollback(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    by: str,
    reason: str,
    run_id: str,
    force: bool = False,
    to_version: str | None = None,
    to_log_row: int | None = None,
) -> LogEntry:
    """Point the view back at a version users saw before.

    Without ``to_version`` or ``to_log_row`` it undoes the latest promotion: back to the
    version that promotion replaced. ``to_version`` names any version published before (the
    baseline, or one a logged move published); ``to_log_row`` a row of the plan's log
    (``log_lines``: 1 is its first move), whose version it goes back to.

    Gated like a promotion: the target passes ``evaluate_rollback_gate`` over the plan's window,
    or the rollback is refused, naming the partitions, checks and consumers, and nothing
    changes; unless ``force`` is set: a forced rollback records ``forced`` and the checks it
    overrode in the log row's evidence. Who and why are always required.
    """
    if not by.strip() or not reason.strip():
        raise PublishError(
            f"{plan.name}: a rollback needs `by` and `reason` (a forced one too); nothing changed"
        )
    log = history(conn, plan)
    current = published_version(conn, plan)
    target, chosen = _rollback_target(plan, log, to_version, to_log_row)
    gate = evaluate_rollback_gate(conn, plan, target, current)
    if not gate.checks:  # the target's table is gone: nothing to force
        raise PublishError(f"{plan.name}: {gate.problems[0]}; nothing changed", gate)
    failing = {c.name: c.summary for c in gate.checks if c.blocking and not c.passed}
    if failing and not force:
        problems = "\n".join(f"  - {name}: {summary}" for name, summary in failing.items())
        raise PublishError(
            f"{plan.name}: rollback to {target} refused, nothing changed ({len(failing)} "
            f"problem(s) in {target} over {window_text(plan)}):\n{problems}\n"
            f"Fix: rebuild what they name in {target}/{plan.name} and roll back again; or, if "
            f"users must leave {current} now anyway, set force: true (the reason and "
            "the failing checks are recorded in backfill.promotions).",
            gate,
        )
    evidence = {
        "returns_to": {"version": target, **chosen},
        "window": window_text(plan),
        "checks": _logged_checks(gate),
        "forced": bool(failing),
        "failing_checks": failing,
        **_served_by(plan, target),
    }
    if chosen["chosen_by"] == LATEST_PROMOTION:
        evidence["undoes_promotion_run"] = log[-1].run_id
    entry = _entry(conn, plan, ROLLBACK, target, current, by.strip(), reason, run_id, evidence)
    return _commit(conn, plan, entry)
