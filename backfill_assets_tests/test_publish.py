"""Publishing on real DuckDB files: the promotion gate, the view swap, rollback and the log.

Every warehouse here is generated data for 2024-01-01..2024-03-31 (the ``generated`` fixture)
with both versions built over that window (91 days: 31 + 29 + 31). Each refusal test plants one
defect, checks that promotion refuses with a message naming the cause and that nothing changed
(view definition, view contents, ``backfill.promotions``), then removes the defect and checks that
the same warehouse now promotes: the defect, not something else, was the reason.
"""

import datetime as dt
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.catalog import SHIPPED_DEFS as PLANS_DIR
from backfill_assets.cutover import cutover_summary
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import (
    PublishError,
    ensure_view,
    evaluate_gate,
    history,
    promote,
    published_version,
    rollback,
)
from backfill_assets.status import status_text

START = dt.date(2024, 1, 1)
LAST = dt.date(2024, 3, 31)
STOP = dt.date(2024, 4, 1)  # exclusive
WINDOW_DAYS = 91  # January 31 + February 29 (leap year) + March 31
APPROVER = "head-of-finance@example.com"  # an approver listed in plans/daily_revenue/plan.yaml
OTHER_APPROVER = "finance-analytics-lead@example.com"  # the other one
LEGACY_TABLE = "models.daily_revenue__legacy"
V2_TABLE = "models.daily_revenue__v2"
RULES = ("duplicates_removed", "excluded_statuses", "refund_timing_moved")


# --------------------------------------------------------------------------------------------
# helpers


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def checksum(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[int, str]:
    """Row count and md5 of every row rendered as text, in a fixed order."""
    return conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(CAST(t AS VARCHAR), '|' "
        f"ORDER BY CAST(t AS VARCHAR)), '')) FROM {table} AS t"
    ).fetchone()


def totals(conn: duckdb.DuckDBPyConnection, table: str) -> tuple:
    return conn.execute(f"SELECT sum(orders), count(*) FROM {table}").fetchone()


def log_rows(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0]


def view_definition(conn: duckdb.DuckDBPyConnection, name: str) -> str | None:
    row = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = ?",
        [name],
    ).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class Snapshot:
    view_sql: str | None
    contents: tuple
    log_rows: int


def snapshot(conn: duckdb.DuckDBPyConnection, plan: Plan) -> Snapshot:
    return Snapshot(
        view_definition(conn, plan.name), checksum(conn, f"analytics.{plan.name}"), log_rows(conn)
    )


def build(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    versions: tuple[str, ...] = ("legacy", "v2"),
    start: dt.date = START,
    stop: dt.date = STOP,
) -> None:
    for version in versions:
        build_window(conn, plan, version, start, stop, "run-x")


def assert_refused(
    conn: duckdb.DuckDBPyConnection,
    plan: Plan,
    version: str,
    approved_by: str,
    *named: str,
) -> str:
    """Promotion raises PublishError naming every string in ``named`` and changes nothing."""
    before = snapshot(conn, plan)
    published = published_version(conn, plan)
    with pytest.raises(PublishError) as info:
        promote(conn, plan, version, approved_by, "attempt", "run-refused")
    message = str(info.value)
    for text in named:
        assert text in message, f"{text!r} not named in:\n{message}"
    assert snapshot(conn, plan) == before
    assert published_version(conn, plan) == published
    return message


def assert_promotes(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, approved_by: str):
    before = log_rows(conn)
    gate, entry = promote(conn, plan, version, approved_by, "fixed", "run-ok")
    assert gate.passed
    assert entry.version == version
    table = f"models.{plan.name}__{version}"
    assert checksum(conn, f"analytics.{plan.name}") == checksum(conn, table)
    assert published_version(conn, plan) == version
    assert log_rows(conn) == before + 1
    return gate, entry


def copy_plan(tmp_path: Path) -> Path:
    """A copy of the shipped daily_revenue plan folder, to edit; returns the plan.yaml path."""
    folder = tmp_path / "plans" / "daily_revenue"
    shutil.copytree(PLANS_DIR / "daily_revenue", folder)
    return folder / "plan.yaml"


def load_windowed(path: Path) -> Plan:
    return load_plan(path).with_window(START, LAST)


def add_order(conn: duckdb.DuckDBPyConnection, order_id: int, when: str) -> None:
    """A raw order that arrives after the build (e.g. a late upstream load)."""
    conn.execute(
        "INSERT INTO raw.orders VALUES (?, 1, 'north', CAST(? AS TIMESTAMP), 42.00, 'shipped', "
        "TIMESTAMP '2024-04-02 09:00:00')",
        [order_id, when],
    )


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def plan(daily_revenue: Plan) -> Plan:
    return daily_revenue.with_window(START, LAST)


@pytest.fixture
def built(generated: duckdb.DuckDBPyConnection, plan: Plan) -> duckdb.DuckDBPyConnection:
    """Both versions built over the window and the view created (on the baseline)."""
    build(generated, plan)
    ensure_view(generated, plan)
    return generated


# --------------------------------------------------------------------------------------------
# 4. the view exists from day one, on the baseline


def test_ensure_view_points_at_the_baseline_before_any_promotion(built, plan):
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)
    assert checksum(built, LEGACY_TABLE) != checksum(built, V2_TABLE)
    assert published_version(built, plan) == "legacy"
    assert history(built, plan) == []
    # Running it again changes nothing.
    assert ensure_view(built, plan) == "legacy"
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)


def test_ensure_view_keeps_a_promotion_and_recreates_a_dropped_view_on_it(built, plan):
    promote(built, plan, "v2", APPROVER, "go", "run-1")
    assert ensure_view(built, plan) == "v2"
    assert checksum(built, "analytics.daily_revenue") == checksum(built, V2_TABLE)
    built.execute("DROP VIEW analytics.daily_revenue")
    assert ensure_view(built, plan) == "v2"
    assert checksum(built, "analytics.daily_revenue") == checksum(built, V2_TABLE)


def test_ensure_view_refuses_before_the_baseline_is_built(generated, plan):
    with pytest.raises(PublishError, match="daily_revenue__legacy"):
        ensure_view(generated, plan)
    assert view_definition(generated, "daily_revenue") is None
    build(generated, plan, ("legacy",))
    assert ensure_view(generated, plan) == "legacy"
    assert checksum(generated, "analytics.daily_revenue") == checksum(generated, LEGACY_TABLE)


# --------------------------------------------------------------------------------------------
# 1. the gate: each defect refuses, changes nothing and is named; without it, promotion works


def test_clean_window_promotes_with_an_approver(built, plan):
    assert evaluate_gate(built, plan, "v2", APPROVER).passed
    assert_promotes(built, plan, "v2", APPROVER)


@pytest.mark.parametrize("hole", [day("2024-01-01"), day("2024-02-15"), day("2024-03-31")])
def test_a_day_never_built_refuses(generated, plan, hole):
    build(generated, plan, ("legacy",))
    for start, stop in ((START, hole), (hole + dt.timedelta(days=1), STOP)):
        if start < stop:
            build(generated, plan, ("v2",), start, stop)
    ensure_view(generated, plan)

    assert_refused(generated, plan, "v2", APPROVER, "window_is_complete", str(hole))

    build(generated, plan, ("v2",), hole, hole + dt.timedelta(days=1))
    assert_promotes(generated, plan, "v2", APPROVER)


def test_a_day_whose_rows_and_evidence_were_deleted_refuses(built, plan):
    built.execute(f"DELETE FROM {V2_TABLE} WHERE order_date = DATE '2024-02-20'")
    built.execute(
        "DELETE FROM backfill.partition_evidence WHERE model = 'daily_revenue' "
        "AND version = 'v2' AND partition_start = DATE '2024-02-20'"
    )
    message = assert_refused(built, plan, "v2", APPROVER, "window_is_complete", "2024-02-20")
    assert "2024-02-19" not in message and "2024-02-21" not in message

    build(built, plan, ("v2",), day("2024-02-20"), day("2024-02-21"))
    assert_promotes(built, plan, "v2", APPROVER)


def test_a_day_failing_its_known_records_refuses(generated, plan):
    # Finance verified the pilot order 9000000005 (2024-02-29) at 70.00; the source says 71.00.
    generated.execute("UPDATE raw.orders SET amount = 71.00 WHERE order_id = 9000000005")
    build(generated, plan)
    ensure_view(generated, plan)
    message = assert_refused(
        generated, plan, "v2", APPROVER, "every_partition_passed_checks", "known_records_match"
    )
    assert "2024-02-29" in message

    generated.execute("UPDATE raw.orders SET amount = 70.00 WHERE order_id = 9000000005")
    build(generated, plan)
    assert_promotes(generated, plan, "v2", APPROVER)


def test_a_day_failing_its_null_rate_refuses(generated, fct_orders):
    # fct_orders allows 10% NULL regions per day; on 2024-02-10 every order loses its region.
    plan = fct_orders.with_window(START, LAST)
    generated.execute("CREATE TABLE main.orders_backup AS SELECT * FROM raw.orders")
    generated.execute(
        "UPDATE raw.orders SET region = NULL WHERE CAST(order_ts AS DATE) = DATE '2024-02-10'"
    )
    build(generated, plan)
    ensure_view(generated, plan)
    message = assert_refused(
        generated, plan, "v2", "", "every_partition_passed_checks", "null_rates_within_limits"
    )
    assert "2024-02-10" in message
    assert "2024-02-09" not in message and "2024-02-11" not in message

    generated.execute("DELETE FROM raw.orders")
    generated.execute("INSERT INTO raw.orders SELECT * FROM main.orders_backup")
    build(generated, plan)
    assert_promotes(generated, plan, "v2", "")


def test_a_stale_day_refuses_naming_the_day(built, plan):
    add_order(built, 8_000_000_001, "2024-02-10 12:00:00")
    message = assert_refused(
        built, plan, "v2", APPROVER, "built_from_current_sources", "2024-02-10"
    )
    assert "2024-02-09" not in message and "2024-02-11" not in message

    build(built, plan, start=day("2024-02-10"), stop=day("2024-02-11"))
    assert_promotes(built, plan, "v2", APPROVER)


def test_an_unexplained_residual_refuses(generated, tmp_path):
    # v2.sql in a copy of the plan also drops orders without a region: no rule explains that.
    path = copy_plan(tmp_path)
    sql = path.parent / "sql" / "v2.sql"
    original = sql.read_text()
    kept = "WHERE status NOT IN ('cancelled', 'test')"
    assert original.count(kept) == 1
    sql.write_text(original.replace(kept, kept + " AND region IS NOT NULL"))
    plan = load_windowed(path)
    build(generated, plan)
    ensure_view(generated, plan)
    message = assert_refused(generated, plan, "v2", APPROVER, "reconciles_with_baseline")
    problems = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and "unexplained" in problems[0]

    sql.write_text(original)
    plan = load_windowed(path)
    build(generated, plan, ("v2",))
    assert_promotes(generated, plan, "v2", APPROVER)


def test_code_version_bumped_after_the_build_refuses(generated, tmp_path):
    path = copy_plan(tmp_path)
    build(generated, load_windowed(path))
    ensure_view(generated, load_windowed(path))
    text = path.read_text()
    assert text.count("code_version: v2-2") == 1
    path.write_text(text.replace("code_version: v2-2", "code_version: v2-3"))
    plan = load_windowed(path)

    message = assert_refused(generated, plan, "v2", APPROVER, "built_with_current_code")
    assert "v2-2" in message and "v2-3" in message
    assert str(WINDOW_DAYS) in message

    build(generated, plan, ("v2",))
    assert_promotes(generated, plan, "v2", APPROVER)


@pytest.mark.parametrize("approved_by", ["", "   ", "mallory@example.com"])
def test_high_risk_plan_needs_an_approver(built, plan, approved_by):
    message = assert_refused(built, plan, "v2", approved_by, "approval")
    if approved_by.strip():
        assert approved_by in message
    assert APPROVER in message  # tells who may approve

    assert_promotes(built, plan, "v2", APPROVER)
    assert history(built, plan)[-1].actor == APPROVER


def test_an_unknown_version_refuses(built, plan):
    message = assert_refused(built, plan, "v3", APPROVER, "v3")
    assert "legacy" in message and "v2" in message  # the versions that do exist
    with pytest.raises(PublishError):
        evaluate_gate(built, plan, "v3", APPROVER)
    assert_promotes(built, plan, "v2", APPROVER)


def test_promoting_the_published_version_again_refuses(built, plan):
    assert_promotes(built, plan, "v2", APPROVER)
    assert_refused(built, plan, "v2", APPROVER, "already")


def test_every_problem_is_listed_not_just_the_first(built, plan):
    add_order(built, 8_000_000_002, "2024-03-03 08:30:00")
    message = assert_refused(
        built, plan, "v2", "", "built_from_current_sources", "2024-03-03", "approval"
    )
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 2

    build(built, plan, start=day("2024-03-03"), stop=day("2024-03-04"))
    assert_refused(built, plan, "v2", "", "approval")
    assert_promotes(built, plan, "v2", APPROVER)


# --------------------------------------------------------------------------------------------
# 2. readers see the whole old version or the whole new one


def test_a_reader_never_sees_a_mix_during_promotions_and_rollbacks(built, plan, warehouse_file):
    legacy, v2 = totals(built, LEGACY_TABLE), totals(built, V2_TABLE)
    assert legacy != v2
    seen: list[tuple] = []
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        reader = duckdb.connect(str(warehouse_file))
        try:
            while not stop.is_set():
                try:
                    seen.append(
                        reader.execute(
                            "SELECT sum(orders), count(*) FROM analytics.daily_revenue"
                        ).fetchone()
                    )
                except duckdb.Error as error:
                    errors.append(repr(error))
        finally:
            reader.close()

    def let_reader_look() -> None:
        wanted = len(seen) + 3
        deadline = time.monotonic() + 10
        while len(seen) < wanted and time.monotonic() < deadline:
            time.sleep(0.001)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        for i in range(4):
            promote(built, plan, "v2", APPROVER, f"round {i}", f"run-p{i}")
            let_reader_look()
            rollback(built, plan, "oncall@example.com", f"round {i}", f"run-r{i}")
            let_reader_look()
        promote(built, plan, "v2", APPROVER, "final", "run-final")
        let_reader_look()
    finally:
        stop.set()
        thread.join(timeout=30)

    assert errors == []
    assert set(seen) <= {legacy, v2}, set(seen) - {legacy, v2}
    assert legacy in seen and v2 in seen
    assert totals(built, "analytics.daily_revenue") == v2


# --------------------------------------------------------------------------------------------
# 3. promote -> rollback -> promote, and the log


def test_promote_rollback_promote_round_trips_and_is_logged(built, plan):
    legacy, v2 = checksum(built, LEGACY_TABLE), checksum(built, V2_TABLE)

    promote(built, plan, "v2", APPROVER, "v2 reconciles; finance signed off", "run-1")
    assert checksum(built, "analytics.daily_revenue") == v2
    assert published_version(built, plan) == "v2"

    rollback(built, plan, "oncall@example.com", "dashboard totals questioned", "run-2")
    assert checksum(built, "analytics.daily_revenue") == legacy
    assert published_version(built, plan) == "legacy"

    promote(built, plan, "v2", OTHER_APPROVER, "questions answered", "run-3")
    assert checksum(built, "analytics.daily_revenue") == v2
    assert published_version(built, plan) == "v2"

    log = history(built, plan)
    assert [(e.action, e.version, e.previous_version) for e in log] == [
        ("promote", "v2", "legacy"),
        ("rollback", "legacy", "v2"),
        ("promote", "v2", "legacy"),
    ]
    assert [e.actor for e in log] == [APPROVER, "oncall@example.com", OTHER_APPROVER]
    assert [e.reason for e in log] == [
        "v2 reconciles; finance signed off",
        "dashboard totals questioned",
        "questions answered",
    ]
    assert [e.run_id for e in log] == ["run-1", "run-2", "run-3"]
    stamps = [e.happened_at for e in log]
    assert all(isinstance(s, dt.datetime) for s in stamps)
    assert stamps == sorted(stamps)
    assert log[0].evidence["approved_by"] == APPROVER
    assert log[0].evidence["window"] == "2024-01-01..2024-03-31"
    assert log[1].evidence["undoes_promotion_run"] == "run-1"
    # Both physical tables are kept throughout.
    assert checksum(built, LEGACY_TABLE) == legacy and checksum(built, V2_TABLE) == v2


def test_rollback_with_nothing_promoted_refuses(built, plan):
    before = snapshot(built, plan)
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(built, plan, "oncall@example.com", "panic", "run-r")
    assert snapshot(built, plan) == before
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)

    promote(built, plan, "v2", APPROVER, "go", "run-p")
    rollback(built, plan, "oncall@example.com", "panic", "run-r")
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)


def test_rollback_right_after_a_rollback_refuses(built, plan):
    promote(built, plan, "v2", APPROVER, "go", "run-p")
    rollback(built, plan, "oncall@example.com", "first", "run-r1")
    before = snapshot(built, plan)
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(built, plan, "oncall@example.com", "second", "run-r2")
    assert snapshot(built, plan) == before
    assert published_version(built, plan) == "legacy"
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)


@pytest.mark.parametrize(("by", "reason"), [("", "why"), ("oncall@example.com", " ")])
def test_rollback_needs_who_and_why(built, plan, by, reason):
    promote(built, plan, "v2", APPROVER, "go", "run-p")
    before = snapshot(built, plan)
    with pytest.raises(PublishError):
        rollback(built, plan, by, reason, "run-r")
    assert snapshot(built, plan) == before
    assert published_version(built, plan) == "v2"
    rollback(built, plan, "oncall@example.com", "why", "run-r")
    assert published_version(built, plan) == "legacy"


def test_notes_and_reasons_containing_sql_are_stored_verbatim(built, plan):
    note = "'); DROP TABLE backfill.promotions; --"
    reason = 'x"; DELETE FROM backfill.promotions; DROP VIEW analytics.daily_revenue; --'
    promote(built, plan, "v2", APPROVER, note, "run-1")
    rollback(built, plan, "o'brien@example.com", reason, "run-2")

    log = history(built, plan)
    assert [e.reason for e in log] == [note, reason]
    assert log[1].actor == "o'brien@example.com"
    assert log_rows(built) == 2
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)


# --------------------------------------------------------------------------------------------
# 5. status and the cutover summary


def status_line(text: str, plan: str, version: str) -> list[str]:
    lines = [line.split() for line in text.splitlines()]
    matching = [tokens for tokens in lines if tokens[:2] == [plan, version]]
    assert len(matching) == 1, text
    return matching[0]


def test_status_lists_built_days_and_marks_the_published_version(generated, plan):
    build(generated, plan, ("legacy",))
    build(generated, plan, ("v2",), START, day("2024-02-01"))  # January only
    ensure_view(generated, plan)

    text = status_text(generated, [plan])
    legacy = status_line(text, "daily_revenue", "legacy")
    v2 = status_line(text, "daily_revenue", "v2")
    assert legacy[2] == f"{WINDOW_DAYS}/{WINDOW_DAYS}" and legacy[-1] == "published"
    assert v2[2] == f"31/{WINDOW_DAYS}" and "published" not in v2

    build(generated, plan, ("v2",), day("2024-02-01"), STOP)
    promote(generated, plan, "v2", APPROVER, "all of Q1", "run-p")
    text = status_text(generated, [plan])
    legacy = status_line(text, "daily_revenue", "legacy")
    v2 = status_line(text, "daily_revenue", "v2")
    assert v2[2] == f"{WINDOW_DAYS}/{WINDOW_DAYS}" and v2[-1] == "published"
    assert "published" not in legacy
    promote_line = next(line for line in text.splitlines() if "last promote" in line)
    assert "v2" in promote_line and APPROVER in promote_line and "all of Q1" in promote_line

    # A late order makes one day stale for both versions.
    add_order(generated, 8_000_000_003, "2024-01-15 10:00:00")
    text = status_text(generated, [plan])
    assert status_line(text, "daily_revenue", "legacy")[4] == "1"
    assert status_line(text, "daily_revenue", "v2")[4] == "1"


def test_cutover_summary_tells_users_what_changed_who_is_affected_and_how_to_undo(built, plan):
    gate, entry = promote(built, plan, "v2", APPROVER, "Q1 reconciled", "run-cut")
    summary = cutover_summary(plan, gate, entry)

    assert plan.version("v2").change in summary
    for consumer in (
        "dashboard: Finance daily revenue",
        "export: month-end revenue file to the ledger",
        "model: forecast_revenue reads analytics.daily_revenue",
    ):
        assert consumer in summary
    assert plan.spec.rollback in summary
    assert "rollback_daily_revenue_job" in summary
    for rule in RULES:
        assert rule in summary
    assert APPROVER in summary and "Q1 reconciled" in summary
    assert "run-cut" in summary


# --------------------------------------------------------------------------------------------
# the log's clock


def test_happened_at_is_utc_whatever_the_connection_time_zone(built, plan):
    built.execute("SET SESSION TimeZone = 'America/New_York'")
    _, entry = promote(built, plan, "v2", APPROVER, "go", "run-1")
    now_utc = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert abs(entry.happened_at - now_utc) < dt.timedelta(minutes=5)


def test_log_order_does_not_depend_on_the_writers_time_zone(built, plan, warehouse_file):
    built.execute("SET SESSION TimeZone = 'UTC'")
    promote(built, plan, "v2", APPROVER, "from the Dagster worker (UTC)", "run-1")
    laptop = duckdb.connect(str(warehouse_file))
    try:
        laptop.execute("SET SESSION TimeZone = 'America/New_York'")
        rollback(laptop, plan, "oncall@example.com", "from a laptop in New York", "run-2")
    finally:
        laptop.close()
    assert checksum(built, "analytics.daily_revenue") == checksum(built, LEGACY_TABLE)
    assert published_version(built, plan) == "legacy"
    assert [e.action for e in history(built, plan)] == ["promote", "rollback"]
