"""Window verdicts: the window checks of a version, recorded with the state they were made in.

Evaluating the window checks of two years of history takes tens of seconds per plan (the
reconciliation, the per-partition fingerprints, the trend), and the promotion used to repeat
what ``window_checks_<plan>_job`` had just done. Every evaluation is now appended to
``backfill.window_verdicts`` with a *state key*: a digest of everything the checks read. The
promotion gate reuses a verdict only when its key equals the key computed now (and it is at
most ``REUSE_WITHIN`` old); anything the checks depend on that changed since gives another key,
and the checks run again. The key covers:

- ``framework``: the source of this package as imported (a changed check is a changed verdict);
- ``plan``: the plan as loaded (its fields, window included), the plan file and every SQL file
  it names, read now (a changed rule, consumer query or tolerance);
- ``code_versions``, ``published``, ``log``: each version's ``code_version``, the version users
  see and the position of the plan's promotions log (a promotion or rollback since);
- ``evidence``: per version the checks read (the served versions, the baseline, the published
  one), what ``evidence.py`` says of it: every build (run and time) and how many partitions it
  wrote, rows per partition, the failing and stale-code partitions, and the plan's last write;
- ``models``: per version read, its table's columns and a count and hash sum of its rows (a
  table changed by hand, not only by a build);
- ``sources``: per declared source, its row count and hash sum (``sources.probe`` without
  ``loaded_at``: a row corrected in place without a new ``loaded_at`` changes it too, as it
  changes the partitions' fingerprints ``built_from_current_sources`` compares).

Two checks read what no key can hold, and a reused verdict evaluates them again
(``rechecked``): ``is_fresh`` reads the clock, and ``downstream_queries_work`` when a
consumer's query reads a table other than the plan's own view and sources (another plan's
view, the team's own table).

Only this module reads or writes ``backfill.window_verdicts``; the publish module decides when
a verdict is evaluated or reused and passes the log position in.
"""

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from backfill_assets import evidence
from backfill_assets.contract import table_columns
from backfill_assets.downstream import DOWNSTREAM_QUERIES_WORK
from backfill_assets.plan import Plan, sql_files, tables_read
from backfill_assets.sources import Source, probe
from backfill_assets.warehouse import UTC_NOW, ensure_schema, execute_ddl, table_exists
from backfill_assets.window_checks import IS_FRESH, WindowCheck

TABLE = "backfill.window_verdicts"
# How old a verdict may be and still be reused, even with an equal key: a day, the period of
# the monitoring schedule, so a promotion never rests on a verdict older than the last
# morning's re-check.
REUSE_WITHIN = dt.timedelta(hours=24)
PACKAGE = Path(__file__).resolve().parent

# Append-only: one row per evaluation, reused or not nothing is updated.
_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    model VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    published VARCHAR NOT NULL,
    state_key VARCHAR NOT NULL,
    state JSON NOT NULL,
    checks JSON NOT NULL,
    known_differences JSON,
    evaluated_in VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMP NOT NULL,
    check_seconds DOUBLE NOT NULL,
    key_seconds DOUBLE NOT NULL
)
"""
_COLUMNS = (
    "model, version, published, state_key, state, checks, known_differences, evaluated_in, "
    "run_id, evaluated_at, check_seconds, key_seconds"
)


@dataclass(frozen=True)
class Verdict:
    """One row of ``backfill.window_verdicts``: the window checks of ``version`` (compared
    with ``published``), the state they were evaluated in, and where and when."""

    model: str
    version: str
    published: str
    state_key: str
    state: dict[str, str]
    checks: list[dict[str, Any]]
    known_differences: dict | None
    evaluated_in: str
    run_id: str
    evaluated_at: dt.datetime
    check_seconds: float
    key_seconds: float

    def window_checks(self) -> list[WindowCheck]:
        """The recorded checks as the gate reads them (without a reconciliation table: the
        figures and ``known_differences`` keep what the log and the cutover summary need)."""
        return [
            WindowCheck(
                c["name"],
                c["version"],
                passed=c["passed"],
                summary=c["summary"],
                blocking=c["blocking"],
                figures=c["figures"],
            )
            for c in self.checks
        ]

    def reference(self) -> dict[str, str]:
        """What a promotion's log row records of the verdict it reused."""
        return {
            "evaluated_at": f"{self.evaluated_at:%Y-%m-%d %H:%M:%S.%f}",
            "run_id": self.run_id,
            "evaluated_in": self.evaluated_in,
            "state_key": self.state_key,
        }


def _json_default(value: object) -> object:
    """numpy numbers as plain numbers, anything else JSON cannot hold (dates) as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _digest(value: object) -> str:
    """A short, stable digest of JSON-able data."""
    text = json.dumps(value, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as error:  # a missing file is a state too; the checks will name it
        return f"unreadable: {error.strerror or error}"


@functools.cache
def framework_digest() -> str:
    """The package's own modules as this process imported them (read once: a process keeps
    running the code it imported, whatever happens to the files later)."""
    modules = sorted(p for p in PACKAGE.rglob("*.py") if "example" not in p.parts)
    return _digest({str(p.relative_to(PACKAGE)): _file_digest(p) for p in modules})


def plan_digest(plan: Plan) -> str:
    """The plan's fields as loaded (window included) and its files' content, read now."""
    files = {"plan": _file_digest(plan.path)}
    files.update(
        {field: _file_digest(plan.folder / path) for field, path in sql_files(plan.spec).items()}
    )
    return _digest({"spec": plan.spec.model_dump(mode="json"), "files": files})


def versions_read(plan: Plan, version: str, published: str) -> list[str]:
    """The versions whose tables and evidence the window checks of ``version`` read: those the
    view serves with it, the baseline (reconciliation, enrichment) and the published one
    (schema contract, consumer queries)."""
    served = [v for v, _ in plan.served_spans(version)]
    return sorted({*served, plan.spec.baseline, published} & set(plan.version_names))


def _evidence_state(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> str:
    """What the evidence says of a version: each build (its partitions and seconds: a rebuild
    of one partition adds a build and shrinks another), rows per partition of the window, the
    partitions failing or built with other code, and its newest applied partition."""
    if not evidence.exists(conn):
        return "no evidence"
    window = (plan.window_start, plan.window_end)
    return _digest(
        {
            "builds": sorted(evidence.build_sizes(conn, plan, version)),
            "rows": sorted(evidence.row_counts(conn, plan, version, *window).items()),
            "failing": evidence.failing(conn, plan, version, *window),
            "stale_code": evidence.stale_code(conn, plan, version, *window),
            "newest": evidence.newest_applied(conn, plan, version),
        }
    )


def _table_state(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> str:
    """A version's table: its columns and a count and hash sum of its rows."""
    columns = table_columns(conn, "models", plan.table_name(version))
    if not columns:
        return "absent"
    rows = conn.execute(
        f"SELECT count(*), sum(CAST(hash(t) AS HUGEINT)) FROM {plan.model_table(version)} AS t"
    ).fetchone()
    return _digest({"columns": columns, "rows": rows})


def _source_state(conn: duckdb.DuckDBPyConnection, source: Source) -> str:
    """A source's row count and hash sum: ``probe`` as for a source without ``loaded_at``,
    which sees a row corrected in place, not only rows that arrived."""
    try:
        return probe(conn, source.model_copy(update={"loaded_at": None}))
    except duckdb.CatalogException:
        return "absent"


def state(
    conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, published: str, log_position: str
) -> dict[str, str]:
    """Everything the window checks of ``version`` read, one digest per part (the parts are
    kept, so that a verdict not reused can say what changed)."""
    versions = versions_read(plan, version, published)
    last_write = evidence.last_write(conn, plan, 0)[0]
    return {
        "framework": framework_digest(),
        "plan": plan_digest(plan),
        "code_versions": _digest({v.name: v.code_version for v in plan.spec.versions}),
        "window": f"{plan.spec.window.start}..{plan.spec.window.end}",
        "published": published,
        "log": log_position,
        "last_write": str(last_write),
        **{f"evidence of {v}": _evidence_state(conn, plan, v) for v in versions},
        **{f"table of {v}": _table_state(conn, plan, v) for v in versions},
        **{f"source {s.table}": _source_state(conn, s) for s in plan.sources},
    }


def state_key(parts: dict[str, str]) -> str:
    """The state key: one digest of every part."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def changed_parts(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The parts of the state that differ (what made a verdict not reusable)."""
    return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))


@functools.lru_cache(maxsize=256)
def _tables_read(text: str) -> frozenset[tuple[str, str]]:
    """The tables a query reads (parsed once per text: parsing costs a DuckDB connection)."""
    return frozenset((schema, table.casefold()) for schema, table in tables_read(text)[0])


def rechecked(plan: Plan) -> list[str]:
    """The checks a reused verdict evaluates again, because they read what the key cannot
    hold: the clock (``is_fresh``), or tables outside the plan (a consumer query reading
    anything but the plan's own view and sources; one that cannot be read is evaluated
    again too, and fails saying why)."""
    covered = {("analytics", plan.name.casefold())} | {
        tuple(s.table.casefold().split(".")) for s in plan.sources
    }
    for consumer in plan.consumer_queries:
        try:
            read = _tables_read((plan.folder / (consumer.sql or "")).read_text(encoding="utf-8"))
        except (OSError, UnicodeError, duckdb.Error):
            read = frozenset({("", "?")})
        if read - covered:
            return [DOWNSTREAM_QUERIES_WORK, IS_FRESH]
    return [IS_FRESH]


def ensure_table(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_schema(conn)
    execute_ddl(conn, _DDL)


def record(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    published: str,
    parts: dict[str, str],
    checks: list[WindowCheck],
    known_differences: dict | None,
    evaluated_in: str,
    run_id: str,
    check_seconds: float,
    key_seconds: float,
) -> Verdict:
    """Append one evaluation; return it as ``find`` would read it back."""
    ensure_table(conn)
    plain = json.loads(
        json.dumps(
            [
                {
                    "name": c.name,
                    "version": c.version,
                    "passed": bool(c.passed),
                    "blocking": bool(c.blocking),
                    "summary": c.summary,
                    "figures": c.figures,
                }
                for c in checks
            ],
            default=_json_default,
        )
    )
    known = json.loads(json.dumps(known_differences, default=_json_default))
    evaluated_at = conn.execute(f"SELECT {UTC_NOW}").fetchone()[0]
    verdict = Verdict(
        plan.name,
        version,
        published,
        state_key(parts),
        parts,
        plain,
        known,
        evaluated_in,
        run_id,
        evaluated_at,
        check_seconds,
        key_seconds,
    )
    conn.execute(
        f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            verdict.model,
            verdict.version,
            verdict.published,
            verdict.state_key,
            json.dumps(parts),
            json.dumps(plain),
            None if known is None else json.dumps(known),
            evaluated_in,
            run_id,
            evaluated_at,
            check_seconds,
            key_seconds,
        ],
    )
    return verdict


def _read(row: tuple) -> Verdict:
    model, version, published, key, parts, checks, known, *rest = row
    return Verdict(
        model,
        version,
        published,
        key,
        json.loads(parts),
        json.loads(checks),
        None if known is None else json.loads(known),
        *rest,
    )


def history(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> list[Verdict]:
    """Every recorded evaluation of ``version``, oldest first (none before the table exists)."""
    if not table_exists(conn, "backfill", "window_verdicts"):
        return []
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE model = ? AND version = ? "
        "ORDER BY evaluated_at, rowid",
        [plan.name, version],
    ).fetchall()
    return [_read(row) for row in rows]


def latest(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str) -> Verdict | None:
    """The latest recorded evaluation of ``version``, whatever its state."""
    if not table_exists(conn, "backfill", "window_verdicts"):
        return None
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE model = ? AND version = ? "
        "ORDER BY evaluated_at DESC, rowid DESC LIMIT 1",
        [plan.name, version],
    ).fetchone()
    return None if row is None else _read(row)


def find(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    key: str,
    within: dt.timedelta = REUSE_WITHIN,
) -> Verdict | None:
    """The latest verdict of ``version`` made in the state ``key`` at most ``within`` ago."""
    if not table_exists(conn, "backfill", "window_verdicts"):
        return None
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE model = ? AND version = ? AND state_key = ? "
        f"AND evaluated_at >= {UTC_NOW} - to_microseconds(?) "
        "ORDER BY evaluated_at DESC, rowid DESC LIMIT 1",
        [plan.name, version, key, within // dt.timedelta(microseconds=1)],
    ).fetchone()
    return None if row is None else _read(row)
