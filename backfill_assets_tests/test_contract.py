"""The schema contract (issue "Cutover the runbook's way", item 2), on real DuckDB files.

A version whose table removes a column of the published version's table, or changes its type,
is refused by ``schema_contract_kept`` unless the plan declares the change under
``breaking_changes``; a declared change passes and the cutover summary announces it with its
reason. Added columns pass and are listed.

Each test changes v2's SQL in a copy of the shipped ``daily_revenue`` plan, builds both versions
over generated data for 2024-01-01..2024-03-31, and reads the expected column types from the
warehouse with a plain query.
"""

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.contract import SCHEMA_CONTRACT_KEPT, announcement_lines, compare
from backfill_assets.plan import Plan, PlanError, load_plan
from backfill_assets.publish import PublishError, ensure_view, history, promote, published_version
from backfill_assets_tests.helpers import copy_shipped_plan, edit_plan, replace_once, stop_checking

START, LAST, STOP = dt.date(2024, 1, 1), dt.date(2024, 3, 31), dt.date(2024, 4, 1)
APPROVER = "head-of-finance@example.com"
ORDERS_LINE = "    CAST(sum(orders) AS BIGINT) AS orders,\n"
GROSS_LINE = "    CAST(sum(gross) AS DECIMAL(18, 2)) AS gross_revenue,\n"
REASON_RETYPE = "counts fit in 32 bits; the ledger export reads INTEGER"
REASON_REMOVE = "finance reports net revenue only from Q3"


def edit_v2(path: Path, old: str, new: str) -> None:
    replace_once(path.parent / "sql" / "v2.sql", old, new)


def declare(path: Path, column: str, change: str, reason: str) -> None:
    edit_plan(
        path,
        lambda data: data.update(
            breaking_changes=[{"column": column, "change": change, "reason": reason}]
        ),
    )


def column_types(conn: duckdb.DuckDBPyConnection, version: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'models' AND table_name = ?",
            [f"daily_revenue__{version}"],
        ).fetchall()
    )


def state(conn: duckdb.DuckDBPyConnection) -> tuple:
    view = conn.execute(
        "SELECT sql FROM duckdb_views() WHERE schema_name = 'analytics' "
        "AND view_name = 'daily_revenue'"
    ).fetchone()
    rows = conn.execute(
        "SELECT count(*), md5(string_agg(CAST(t AS VARCHAR), '|' ORDER BY CAST(t AS VARCHAR))) "
        "FROM analytics.daily_revenue AS t"
    ).fetchone()
    log = conn.execute("SELECT * FROM backfill.promotions ORDER BY rowid").fetchall()
    return view, rows, log


def built(conn: duckdb.DuckDBPyConnection, path: Path) -> Plan:
    plan = load_plan(path).with_window(START, LAST)
    for version in plan.version_names:
        build_window(conn, plan, version, START, STOP, "build")
    ensure_view(conn, plan)
    return plan


def refusal(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[str]:
    """Promotion of v2 is refused and changes nothing; return its problem lines."""
    before = state(conn)
    with pytest.raises(PublishError) as info:
        promote(conn, plan, "v2", APPROVER, "attempt", "run-refused")
    assert state(conn) == before
    assert published_version(conn, plan) == "legacy"
    return [line for line in str(info.value).splitlines() if line.startswith("  - ")]


# --------------------------------------------------------------------------------------------
# plain comparison


def test_compare_finds_removed_retyped_and_added_columns_ignoring_case(daily_revenue):
    published = {"order_date": "DATE", "Orders": "BIGINT", "gross_revenue": "DECIMAL(18,2)"}
    version = {"order_date": "DATE", "orders": "INTEGER", "margin": "DOUBLE"}
    found = compare(daily_revenue, "v3", version, "v2", published)
    assert found.removed == {"gross_revenue": "DECIMAL(18,2)"}
    assert found.retyped == {"Orders": ("BIGINT", "INTEGER")}
    assert found.added == {"margin": "DOUBLE"}
    assert not found.kept  # the shipped plan declares no breaking change
    assert sorted(found.undeclared) == [
        "Orders retyped BIGINT -> INTEGER",
        "gross_revenue removed (was DECIMAL(18,2))",
    ]


# --------------------------------------------------------------------------------------------
# a retyped column


def test_an_undeclared_retype_blocks_and_a_declared_one_is_announced(generated, tmp_path):
    path = copy_shipped_plan(tmp_path)
    edit_v2(path, ORDERS_LINE, ORDERS_LINE.replace("BIGINT", "INTEGER"))
    plan = built(generated, path)
    was, now = column_types(generated, "legacy")["orders"], column_types(generated, "v2")["orders"]
    assert (was, now) == ("BIGINT", "INTEGER")

    [problem] = refusal(generated, plan)
    assert problem.startswith(f"  - {SCHEMA_CONTRACT_KEPT}: ")
    assert f"orders retyped {was} -> {now}" in problem and "breaking_changes" in problem

    # Declared with a reason: the same warehouse promotes, and the summary says so.
    declare(path, "orders", "retyped", REASON_RETYPE)
    plan = load_plan(path).with_window(START, LAST)
    gate, entry = promote(generated, plan, "v2", APPROVER, "declared", "run-ok")
    assert published_version(generated, plan) == "v2"
    [check] = [c for c in gate.checks if c.name == SCHEMA_CONTRACT_KEPT]
    assert check.passed and "declared breaking change(s): orders retyped" in check.summary

    lines = announcement_lines(history(generated, plan)[-1].evidence)
    assert lines == announcement_lines(entry.evidence)
    [line] = [line for line in lines if "`orders`" in line]
    assert "retyped" in line and f"{was} -> {now}" in line and REASON_RETYPE in line


# --------------------------------------------------------------------------------------------
# a removed column


def test_an_undeclared_removal_blocks_and_a_declared_one_is_announced(generated, tmp_path):
    path = copy_shipped_plan(tmp_path)
    edit_v2(path, GROSS_LINE, "")

    def stop_checking_gross_revenue(data: dict) -> None:
        stop_checking(data, "gross_revenue")
        # Consumers as plain text: this test is about the columns, not the dashboard's query.
        data["downstream"] = ["dashboard: Finance daily revenue"]

    edit_plan(path, stop_checking_gross_revenue)
    plan = built(generated, path)
    assert "gross_revenue" in column_types(generated, "legacy")
    assert "gross_revenue" not in column_types(generated, "v2")
    was = column_types(generated, "legacy")["gross_revenue"]

    [problem] = refusal(generated, plan)
    assert f"{SCHEMA_CONTRACT_KEPT}: " in problem
    assert f"gross_revenue removed (was {was})" in problem

    declare(path, "gross_revenue", "removed", REASON_REMOVE)
    plan = load_plan(path).with_window(START, LAST)
    _, entry = promote(generated, plan, "v2", APPROVER, "declared", "run-ok")
    assert published_version(generated, plan) == "v2"
    lines = announcement_lines(entry.evidence)
    [line] = [line for line in lines if "`gross_revenue`" in line]
    assert "removed" in line and was in line and REASON_REMOVE in line


# --------------------------------------------------------------------------------------------
# added columns, and declarations that name nothing


def test_an_added_column_passes_and_is_listed(generated, tmp_path):
    path = copy_shipped_plan(tmp_path)
    edit_v2(path, ORDERS_LINE, ORDERS_LINE + "    'EUR' AS currency,\n")
    plan = built(generated, path)
    added = column_types(generated, "v2")["currency"]
    _, entry = promote(generated, plan, "v2", APPROVER, "adds currency", "run-ok")
    check = entry.evidence["checks"][SCHEMA_CONTRACT_KEPT]
    assert check["passed"] and check["figures"]["added"] == {"currency": added}
    lines = announcement_lines(entry.evidence)
    assert any("Added columns" in line and "`currency`" in line for line in lines)
    assert not any("removed" in line or "retyped" in line for line in lines)


def test_the_shipped_versions_keep_the_contract_and_announce_nothing(generated, daily_revenue):
    plan = daily_revenue.with_window(START, LAST)
    for version in plan.version_names:
        build_window(generated, plan, version, START, STOP, "build")
    ensure_view(generated, plan)
    assert column_types(generated, "legacy") == column_types(generated, "v2")
    _, entry = promote(generated, plan, "v2", APPROVER, "as shipped", "run-ok")
    assert entry.evidence["checks"][SCHEMA_CONTRACT_KEPT]["passed"]
    assert announcement_lines(entry.evidence) == []


@pytest.mark.parametrize(
    ("column", "change", "problem"),
    [
        ("gross_revenu", "removed", "no version returns it"),
        ("gross_revenue", "removed", "every version returns it"),
        ("orders", "retyped", "return it as ['BIGINT']"),
    ],
)
def test_a_declaration_no_version_makes_is_refused_at_load(tmp_path, column, change, problem):
    path = copy_shipped_plan(tmp_path)
    declare(path, column, change, "because")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert "field 'breaking_changes[0]'" in str(info.value) and problem in str(info.value)


def test_an_unknown_kind_of_change_is_refused_at_load(tmp_path):
    path = copy_shipped_plan(tmp_path)
    declare(path, "orders", "renamed", "because")
    with pytest.raises(PlanError, match=r"breaking_changes\.0\.change"):
        load_plan(path)
