"""What a plan's owner reads: the reconciliation report (HTML and text), the changed columns, and
the announcement at the top of the cutover summary.

The shipped plans run over their whole two-year window on one small generated warehouse (built
once for this module); a hand-made model with string, integer or UUID keys checks the changed
columns against counts worked out by hand. Every expected figure comes from plain SQL over the
model tables (or from the hand-written rows), never from the code under test.
"""

import datetime as dt
import html
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.cutover import cutover_summary, regenerate_summary
from backfill_assets.enrichment import changed_columns
from backfill_assets.example.generator import generate
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import ensure_view, history, promote
from backfill_assets.reconcile import Reconciliation, reconcile
from backfill_assets.report import reconciliation_text, write_html
from backfill_assets_tests.helpers import plan_named

SHIPPED = ("daily_revenue", "fct_orders", "monthly_active_customers")
# Measures stored as whole numbers are shown without decimals; the others with two.
WHOLE = {"rows", "orders", "active_customers"}


# --------------------------------------------------------------------------------------------
# helpers: expectations from plain SQL, and reading the page as a person would


def window_total(conn: duckdb.DuckDBPyConnection, plan: Plan, version: str, measure: str):
    column = plan.spec.partition_column
    value = "count(*)" if measure == "rows" else f"sum({measure})"
    return float(
        conn.execute(
            f"SELECT coalesce({value}, 0) FROM models.{plan.name}__{version} "
            f"WHERE {column} BETWEEN ? AND ?",
            [plan.spec.window.start, plan.spec.window.end],
        ).fetchone()[0]
    )


def shown(value: float, measure: str) -> str:
    return f"{value:,.0f}" if measure in WHOLE else f"{value:,.2f}"


def shown_percent(before: float, after: float) -> str:
    """The change as the report prints it: one decimal and a sign, 0.0% when equal."""
    if after == before:
        return "0.0%"
    return f"{(after - before) / abs(before) * 100:+.1f}%"


def cells(page: str, first_cell: str) -> list[str]:
    """The text of every cell of the table row whose first cell reads ``first_cell``."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        texts = [
            " ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split())
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        ]
        if texts and texts[0] == first_cell:
            return texts
    raise AssertionError(f"no table row starts with {first_cell!r}")


def words(page: str) -> str:
    """The page's text as one line, as a reader sees it (blocks and cells apart, inline
    markup not)."""
    spaced = re.sub(r"<(br|/li|/p|/td|/th|/h\d|/tr)\b[^>]*>", " ", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", spaced)).split())


def section(text: str, heading: str, next_heading: str) -> str:
    return text.split(heading, 1)[1].split(next_heading, 1)[0]


# --------------------------------------------------------------------------------------------
# the shipped plans over their window, built once


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Iterator[duckdb.DuckDBPyConnection]:
    """Two years of generated sources (10 a day: small) and both versions of every shipped plan
    built over its window."""
    path = tmp_path_factory.mktemp("report") / "warehouse.duckdb"
    conn = duckdb.connect(str(path))
    generate(conn, dt.date(2024, 1, 1), dt.date(2025, 12, 31), orders_per_day=10, seed=11)
    for name in SHIPPED:
        plan = plan_named(name)
        for version in ("legacy", "v2"):
            build_window(conn, plan, version, plan.window_start, plan.window_end, "run-report")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def reports(shipped, tmp_path_factory) -> dict[str, tuple[Plan, Reconciliation, str, str]]:
    """Per shipped plan: the plan, its reconciliation, the HTML page and the terminal text."""
    folder = tmp_path_factory.mktemp("pages")
    out = {}
    for name in SHIPPED:
        plan = plan_named(name)
        recon = reconcile(shipped, plan)
        changes = changed_columns(shipped, plan)
        page = write_html(recon, folder / f"{name}.html", changes).read_text()
        out[name] = (plan, recon, page, reconciliation_text(recon, changes))
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_the_page_gives_every_measure_its_totals_and_change_in_percent(shipped, reports, name):
    plan, _, page, _ = reports[name]
    measures = plan.spec.checks.reconciliation.measures
    for measure in measures:
        before = window_total(shipped, plan, "legacy", measure)
        after = window_total(shipped, plan, "v2", measure)
        row = cells(page, measure.replace("_", " "))
        assert row[2:4] == [shown(before, measure), shown(after, measure)], row
        assert row[-1] == shown_percent(before, after), row
    if name == "daily_revenue":  # the versions really differ, in a known direction
        before = window_total(shipped, plan, "legacy", "gross_revenue")
        after = window_total(shipped, plan, "v2", "gross_revenue")
        assert after < before
        sentence = f"Gross revenue: falls {abs(after - before) / before * 100:.1f}%"
        assert sentence in words(page)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_page_and_the_text_name_every_rule_by_its_description(reports, name):
    plan, _, page, text = reports[name]
    rules = plan.spec.checks.reconciliation.explained_differences
    if name != "fct_orders":
        assert rules
    flowing = " ".join(text.split())
    for rule in rules:
        assert html.escape(rule.description) in page
        assert rule.description in flowing
    # The summary leads: the verdict and the plain-language lines come before any chart.
    assert page.index("In short") < page.index("<svg")


def test_each_measure_has_one_chart_with_labelled_axes(reports):
    plan, recon, page, _ = reports["daily_revenue"]
    measures = plan.spec.checks.reconciliation.measures
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(charts) == len(measures)
    for chart in charts:
        ticks = re.findall(r'class="tick"[^>]*>([^<]+)<', chart)
        assert "2024-01" in ticks and "2025-10" in ticks  # a time axis with calendar ticks
        assert any(re.fullmatch(r"[\d,.]+[MB]?", t) and t != "0" for t in ticks)  # values
    # The pilot region has rows in two months only: summed into the total, not drawn alone.
    months = {
        m
        for m, region in recon.table[["month", "region"]].itertuples(index=False)
        if region == "pilot"
    }
    assert len(months) == 2
    assert "pilot: -" not in page and "pilot (2 months)" in page


def test_the_text_reads_at_100_columns_with_formatted_numbers(shipped, reports):
    plan, _, _, text = reports["daily_revenue"]
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert not re.search(r"-0\.0+\b", text)
    assert not any(line.split() == ["measure"] for line in lines)  # no empty pandas header
    before = window_total(shipped, plan, "legacy", "gross_revenue")
    after = window_total(shipped, plan, "v2", "gross_revenue")
    [row] = [line for line in lines if line.split()[:1] == ["gross_revenue"]]
    assert row.split() == [
        "gross_revenue",
        f"{before:,.2f}",
        f"{after:,.2f}",
        f"{after - before:,.2f}",
        shown_percent(before, after),
    ]


def test_the_fct_orders_report_leads_with_the_changed_column(shipped, reports):
    plan, _, page, text = reports["fct_orders"]
    window = [plan.spec.window.start, plan.spec.window.end]
    changed, matched = shipped.execute(
        """
        SELECT count(*) FILTER (WHERE l.customer_segment IS DISTINCT FROM v.customer_segment),
               count(*)
        FROM models.fct_orders__legacy AS l
        JOIN models.fct_orders__v2 AS v ON v.order_id = l.order_id
        WHERE l.order_date BETWEEN $1 AND $2 AND v.order_date BETWEEN $1 AND $2
        """,
        window,
    ).fetchone()
    (before, after, most), *_ = shipped.execute(
        """
        SELECT l.customer_segment, v.customer_segment, count(*) AS n
        FROM models.fct_orders__legacy AS l
        JOIN models.fct_orders__v2 AS v ON v.order_id = l.order_id
        WHERE l.customer_segment IS DISTINCT FROM v.customer_segment
        GROUP BY ALL ORDER BY n DESC, 1, 2
        """
    ).fetchall()
    assert 0 < changed < matched

    sentence = (
        f"customer_segment changes on {changed:,} of {matched:,} rows ({changed / matched:.1%})"
    )
    summary = section(words(page), "In short", "Totals per measure")
    assert sentence in summary
    assert cells(page, before)[:3] == [before, after, f"{most:,}"]
    # The terminal text names it before the measures.
    assert text.index("customer_segment") < text.index("What changed")
    assert f"customer_segment: {changed:,} of {matched:,} rows changed" in text


def test_plans_without_other_columns_show_no_changed_columns_section(reports):
    _, _, page, text = reports["daily_revenue"]
    assert "Changed columns" not in page and "Changed columns" not in text


# --------------------------------------------------------------------------------------------
# changed columns of a hand-made model, with string, integer and UUID keys


TICKETS_PLAN = """
name: tickets
description: Support tickets with their team and priority, read by the support dashboard.
grain: One row per ticket, on the UTC {word} it was opened.
unique_key: [ticket_id]
partition_column: opened
partitions: {{cadence: {cadence}, start: 2024-03-01}}
window: {{start: 2024-03-01, end: 2024-03-03}}
sources:
  - table: helpdesk.tickets
    event_time: opened_at
    required: [ticket_id, opened_at]
    columns: {{ticket_id: {key_type}, opened_at: TIMESTAMP, team: VARCHAR, priority: INTEGER,
               minutes: INTEGER}}
versions:
  - {{name: legacy, sql: legacy.sql, code_version: l1, change: "Today's team."}}
  - {{name: v2, sql: v2.sql, code_version: v1, change: "The team when the ticket was opened."}}
baseline: legacy
candidate: v2
checks:
  null_rates: {{ticket_id: 0, opened: 0}}
  reconciliation: {{by: [partition], measures: [minutes], tolerance: 0}}
  trend: {{measure: minutes, window_partitions: 5}}
owner: support-data@example.com
risk: low
downstream: []
rollback: Run the rollback job with a reason.
strategy: column_enrichment
"""
TICKETS_SQL = """
SELECT ticket_id, {period} AS opened, team AS "group", priority, minutes
FROM helpdesk.tickets WHERE opened_at >= $start AND opened_at < $end
"""
# ticket, opened (hour of day offset on the day), legacy (group, priority), v2 (group, priority)
LEGACY = [
    (1, "2024-03-01 09:00", "red", 1, 10),
    (2, "2024-03-01 10:00", "red", 2, 20),
    (3, "2024-03-02 09:00", "blue", None, 30),
    (4, "2024-03-02 10:00", None, 1, 40),
    (5, "2024-03-03 09:00", "blue", 3, 50),
    (6, "2024-03-04 09:00", "red", 1, 60),  # after the window
    (9, "2024-03-03 10:00", "green", 1, 5),  # only in legacy
]
V2 = [
    (1, "2024-03-01 09:00", "blue", 1, 10),  # group red -> blue
    (2, "2024-03-01 10:00", "blue", 2, 99),  # group red -> blue (minutes is a measure)
    (3, "2024-03-02 09:00", "blue", 2, 30),  # priority NULL -> 2
    (4, "2024-03-02 10:00", "green", 1, 40),  # group NULL -> green
    (5, "2024-03-03 09:00", "blue", 3, 50),  # unchanged
    (6, "2024-03-04 09:00", "green", 1, 60),  # after the window: not compared
    (7, "2024-03-03 10:00", None, 1, 1),  # only in v2
]
KEYS = {
    "VARCHAR": lambda i: f"T-{i:03d}",
    "BIGINT": lambda i: 10_000_000_000 + i,
    "UUID": lambda i: f"00000000-0000-4000-8000-{i:012d}",
}
PERIODS = {
    "daily": ("CAST(opened_at AS DATE)", "day"),
    "hourly": ("date_trunc('hour', opened_at)", "hour"),
}


def tickets_plan(folder: Path, key_type: str, cadence: str) -> Plan:
    period, word = PERIODS[cadence]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.yaml").write_text(
        textwrap.dedent(TICKETS_PLAN.format(key_type=key_type, cadence=cadence, word=word))
    )
    for version in ("legacy", "v2"):
        (folder / f"{version}.sql").write_text(TICKETS_SQL.format(period=period))
    return load_plan(folder / "plan.yaml")


def tickets_tables(conn, plan: Plan, key_type: str, cadence: str) -> None:
    """The two versions' tables, written by hand (no build: only their rows matter here)."""
    period = PERIODS[cadence][0]
    conn.execute("CREATE SCHEMA IF NOT EXISTS models")
    for version, rows in (("legacy", LEGACY), ("v2", V2)):
        conn.execute(
            f"CREATE TABLE models.{plan.table_name(version)} (ticket_id {key_type}, "
            f'opened_at TIMESTAMP, "group" VARCHAR, priority INTEGER, minutes INTEGER)'
        )
        conn.executemany(
            f"INSERT INTO models.{plan.table_name(version)} VALUES (?, ?, ?, ?, ?)",
            [(KEYS[key_type](i), dt.datetime.fromisoformat(t), *rest) for i, t, *rest in rows],
        )
        conn.execute(
            f"CREATE OR REPLACE TABLE models.{plan.table_name(version)} AS SELECT ticket_id, "
            f'{period} AS opened, "group", priority, minutes FROM models.{plan.table_name(version)}'
        )


@pytest.mark.parametrize(
    ("key_type", "cadence"),
    [("VARCHAR", "daily"), ("BIGINT", "daily"), ("UUID", "daily"), ("VARCHAR", "hourly")],
)
def test_changed_columns_of_a_hand_made_model(conn, tmp_path, key_type, cadence):
    plan = tickets_plan(tmp_path / "tickets", key_type, cadence)
    tickets_tables(conn, plan, key_type, cadence)

    changes = changed_columns(conn, plan)

    # In the window: tickets 1-5 and 9 in legacy, 1-5 and 7 in v2; 1-5 match.
    assert (changes.rows_before, changes.rows_after, changes.rows_matched) == (6, 6, 5)
    by_column = {c.column: c for c in changes.columns}
    # The key and the measure are not compared; the partition column is.
    assert [c.column for c in changes.columns] == ["group", "priority", "opened"]
    group, priority, opened = by_column["group"], by_column["priority"], by_column["opened"]
    assert group.rows_changed == 3  # 1 and 2 red -> blue, 4 NULL -> green
    assert group.top.values.tolist() == [["red", "blue", 2], [None, "green", 1]]
    assert (group.filled_before, group.filled_after) == (5, 5)  # 4 in legacy, 7 in v2 NULL
    assert priority.rows_changed == 1  # 3: NULL -> 2
    assert priority.top.values.tolist() == [[None, "2", 1]]
    assert (priority.filled_before, priority.filled_after) == (5, 6)
    assert opened.rows_changed == 0 and opened.top.empty
    assert [c.column for c in changes.changed] == ["group", "priority"]
    assert changes.share(group) == pytest.approx(3 / 5)


def test_changed_columns_in_the_report_of_a_hand_made_model(conn, tmp_path):
    plan = tickets_plan(tmp_path / "tickets", "VARCHAR", "daily")
    tickets_tables(conn, plan, "VARCHAR", "daily")
    recon = reconcile(conn, plan)
    changes = changed_columns(conn, plan)

    text = reconciliation_text(recon, changes)
    page = words(write_html(recon, tmp_path / "r.html", changes).read_text())

    assert "group: 3 of 5 rows changed (60.0%)" in text
    assert "group changes on 3 of 5 rows (60.0%)" in page
    assert "priority changes on 1 of 5 rows (20.0%)" in page
    # minutes: 10+20+30+40+50+5 = 155 before, 10+99+30+40+50+1 = 230 after (+48.4%)
    assert cells(write_html(recon, tmp_path / "r.html", changes).read_text(), "minutes")[2:] == [
        "155",
        "230",
        "+75",
        "+48.4%",
    ]


# --------------------------------------------------------------------------------------------
# the announcement at the top of the cutover summary

Q1 = (dt.date(2024, 1, 1), dt.date(2024, 3, 31))


def promoted(conn, name: str) -> tuple[Plan, str, object]:
    plan = plan_named(name).with_window(*Q1)
    for version in ("legacy", "v2"):
        build_window(conn, plan, version, plan.window_start, plan.window_end, "run-build")
    ensure_view(conn, plan)
    approver = plan.spec.approvers[0]
    gate, entry = promote(conn, plan, "v2", approver, "restated Q1", "run-go")
    return plan, cutover_summary(plan, gate, entry), entry


def test_the_cutover_summary_opens_with_a_message_to_forward(generated, tmp_path):
    plan, summary, entry = promoted(generated, "daily_revenue")
    message = section(summary, "## Announcement (forward as is)", "## The promotion")

    assert f"From {entry.happened_at:%Y-%m-%d %H:%M} UTC" in message  # the go-live time
    for measure in plan.spec.checks.reconciliation.measures:
        before = window_total(generated, plan, "legacy", measure)
        after = window_total(generated, plan, "v2", measure)
        assert after < before, measure
        label = measure.replace("_", " ")
        assert f"{label} {(before - after) / before * 100:.1f}% lower" in message
        assert f"{label}: {shown(before, measure)} → {shown(after, measure)}" in message
    assert plan.version("v2").change in message
    for rule in plan.spec.checks.reconciliation.explained_differences:
        assert rule.description.rstrip(".") in message
    for consumer in plan.spec.downstream:
        [line] = [x for x in message.splitlines() if x.startswith(f"- **{consumer}**")]
        assert "gross revenue" in line and "% lower" in line
    assert plan.spec.owner in message

    # Written again from the log, the summary says the same.
    path = regenerate_summary(generated, plan, tmp_path / "reports")
    assert path.read_text() == summary


def test_the_announcement_of_a_column_change_names_the_column(generated):
    plan, summary, _ = promoted(generated, "fct_orders")
    message = section(summary, "## Announcement (forward as is)", "## The promotion")
    changed, rows = generated.execute(
        """
        SELECT count(*) FILTER (WHERE l.customer_segment IS DISTINCT FROM v.customer_segment),
               count(*)
        FROM models.fct_orders__v2 AS v
        JOIN models.fct_orders__legacy AS l ON l.order_id = v.order_id
        """
    ).fetchone()
    assert changed > 0
    assert f"customer_segment different on {changed / rows:.1%} of rows" in message
    assert "rows and amount unchanged" in message
    [dashboard] = [x for x in message.splitlines() if x.startswith("- **dashboard")]
    assert "customer_segment different" in dashboard
    assert len(history(generated, plan)) == 1
