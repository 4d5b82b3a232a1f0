"""Source slices from declarations alone: an event source's rows belong to their event day and
``lookback`` days after it; a dimension belongs to every day. Shown on a model the example
knows nothing of (events with UUID keys and a category dimension), built for real."""

import datetime as dt
import textwrap
from pathlib import Path

import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.fingerprint import changed_partitions
from backfill_assets.late import find_repairs, partitions_with_new_rows, source_probes
from backfill_assets.plan import Plan, load_plan

D1, D2, D3, D4 = (dt.date(2025, 3, d) for d in (1, 2, 3, 4))
END = D4 + dt.timedelta(days=1)
LOADED = dt.datetime(2025, 3, 5, 8)
LATE = dt.datetime(2025, 3, 9, 8)

PLAN = """
name: category_events
description: Events per day and category, read by the operations dashboard.
grain: One row per event day and category.
unique_key: [event_date, category]
partition_column: event_date
partitions: {{start: 2025-03-01}}
window: {{start: 2025-03-01, end: 2025-03-04}}
sources:
  - table: ops.events
    event_time: event_ts
    loaded_at: loaded_at
    required: [event_id, event_ts]
  - table: ops.categories
lookback: {lookback}
versions:
  - {{name: legacy, sql: legacy.sql, code_version: l1, change: Every event counts in its category.}}
  - {{name: v2, sql: v2.sql, code_version: v1, change: Categories take their current group name.}}
baseline: legacy
candidate: v2
checks:
  null_rates: {{event_date: 0, events: 0}}
  reconciliation: {{by: [day, category], measures: [events], tolerance: 0}}
  trend: {{measure: events, window_partitions: 7, max_deviations: 50}}
owner: ops@example.com
risk: low
downstream: []
rollback: Run the rollback job with a reason; the view points back at the previous version.
strategy: full_rebuild
chunk: 31
"""
SQL = """
SELECT CAST(e.event_ts AS DATE) AS event_date, c.group_name AS category, count(*) AS events
FROM ops.events AS e JOIN ops.categories AS c USING (category_id)
WHERE e.event_ts >= $start AND e.event_ts < $end
GROUP BY ALL
"""


def make_plan(folder: Path, lookback: int) -> Plan:
    folder.mkdir(exist_ok=True)
    (folder / "plan.yaml").write_text(textwrap.dedent(PLAN.format(lookback=lookback)))
    for version in ("legacy", "v2"):
        (folder / f"{version}.sql").write_text(SQL)
    return load_plan(folder / "plan.yaml")


@pytest.fixture
def events(conn: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    conn.execute("CREATE SCHEMA ops")
    conn.execute(
        "CREATE TABLE ops.events (event_id UUID, category_id VARCHAR, event_ts TIMESTAMP, "
        "loaded_at TIMESTAMP)"
    )
    conn.execute("CREATE TABLE ops.categories (category_id VARCHAR, group_name VARCHAR)")
    conn.execute("INSERT INTO ops.categories VALUES ('c1', 'alpha'), ('c2', 'beta')")
    conn.execute(
        "INSERT INTO ops.events SELECT uuid(), ['c1', 'c2'][1 + (i % 2)], "
        "TIMESTAMP '2025-03-01 00:30:00' + INTERVAL (i * 7) HOUR, ? FROM range(13) AS r(i)",
        [LOADED],
    )  # every 7 hours from 1 March 00:30: a few events on each of the four days
    return conn


def build(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    for version in plan.version_names:
        build_window(conn, plan, version, D1, END, "first")


def add_event(conn: duckdb.DuckDBPyConnection, ts: str) -> None:
    conn.execute(
        "INSERT INTO ops.events VALUES (uuid(), 'c1', CAST(? AS TIMESTAMP), ?)", [ts, LATE]
    )


@pytest.mark.parametrize(("lookback", "changed"), [(0, [D2]), (1, [D2, D3])])
def test_a_late_event_changes_its_day_and_the_lookback_after_it(
    events, tmp_path, lookback, changed
):
    plan = make_plan(tmp_path / "plan", lookback)
    build(events, plan)
    assert changed_partitions(events, plan, D1, END) == []
    before = source_probes(events, [plan])
    add_event(events, "2025-03-02 12:00:00")
    after = source_probes(events, [plan])
    assert before["ops.categories"] == after["ops.categories"]
    assert before["ops.events"] != after["ops.events"]
    found = changed_partitions(events, plan, D1, END)
    # Each changed day for both versions; nothing else.
    assert sorted({c.partition for c in found}) == changed
    assert sorted((c.version, c.partition) for c in found) == sorted(
        (v, d) for v in ("legacy", "v2") for d in changed
    )
    # The sensor's narrowed look (rows loaded since the last probe) finds the same days.
    assert partitions_with_new_rows(events, plan, before, after) == changed
    assert sorted(r.partition for r in find_repairs(events, [plan]).repairs) == changed


def test_a_dimension_change_reaches_every_built_day(events, tmp_path):
    plan = make_plan(tmp_path / "plan", 0)
    build(events, plan)
    before = source_probes(events, [plan])
    events.execute("UPDATE ops.categories SET group_name = 'gamma' WHERE category_id = 'c2'")
    after = source_probes(events, [plan])
    assert before["ops.categories"] != after["ops.categories"]
    # A dimension has no event time: only a full comparison can tell, and it finds every day.
    assert partitions_with_new_rows(events, plan, before, after) is None
    assert sorted({c.partition for c in changed_partitions(events, plan, D1, END)}) == [
        D1,
        D2,
        D3,
        D4,
    ]


def test_fingerprints_count_the_rows_of_each_day_and_the_dimension(events, tmp_path):
    plan = make_plan(tmp_path / "plan", 0)
    build(events, plan)
    expected = dict(
        events.execute(
            "SELECT CAST(event_ts AS DATE), count(*) + (SELECT count(*) FROM ops.categories) "
            "FROM ops.events GROUP BY ALL"
        ).fetchall()
    )
    stored = dict(
        events.execute(
            "SELECT partition_start::DATE AS day, source_rows FROM "
            "backfill.partition_evidence WHERE version = 'v2'"
        ).fetchall()
    )
    assert stored == expected
    loaded = events.execute(
        "SELECT DISTINCT source_max_loaded_at FROM backfill.partition_evidence"
    ).fetchall()
    assert loaded == [(LOADED,)]
