"""Any cadence: hourly (across daylight-saving changes in New York), daily, weekly and monthly
(across a leap February and a year end) plans, built, checked and promoted for real.

The model is one the example knows nothing of: events per period and category, where v2 drops
test events and one rule explains exactly that. Expected periods and rows come from Python
date arithmetic and a separate plain query, never from the code under test.
"""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest

from backfill_assets.build import build_window
from backfill_assets.component.models import partition_key, partitions_def
from backfill_assets.partitions import Cadence, chunks
from backfill_assets.plan import Plan, load_plan
from backfill_assets.publish import promote, published_version
from backfill_assets.window_checks import run_window_checks
from backfill_assets_tests.helpers import write_events_plan

NEW_YORK = "America/New_York"

PERIOD = {
    "hourly": "date_trunc('hour', event_ts)",
    "daily": "CAST(event_ts AS DATE)",
    "weekly": "CAST(date_trunc('week', event_ts) AS DATE)",
    "monthly": "CAST(date_trunc('month', event_ts) AS DATE)",
}


def make_plan(folder: Path, cadence: str, first: dt.date, last: dt.date, zone="UTC") -> Plan:
    """The events plan ``<cadence>_events`` over ``first``..``last`` in ``zone``; its rows are
    keyed by ``period``, the start of the event's period of that cadence."""
    return write_events_plan(
        folder,
        name=f"{cadence}_events",
        cadence=cadence,
        start=first,
        last=last,
        timezone=zone,
        period="period",
        period_sql=PERIOD[cadence],
    )


def fill_events(conn: duckdb.DuckDBPyConnection, first: dt.datetime, last: dt.datetime) -> None:
    """One event every 11 minutes from ``first`` to ``last`` (UTC); every 5th is a test."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
    conn.execute(
        "CREATE OR REPLACE TABLE ops.events "
        "(event_id UUID, category VARCHAR, event_ts TIMESTAMP, loaded_at TIMESTAMP)"
    )
    conn.execute(
        "INSERT INTO ops.events SELECT uuid(), "
        "CASE WHEN i % 5 = 0 THEN 'test' WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, "
        "ts, ts + INTERVAL 5 MINUTE "
        "FROM (SELECT row_number() OVER () AS i, range AS ts "
        "FROM range(CAST(? AS TIMESTAMP), CAST(? AS TIMESTAMP), INTERVAL 11 MINUTE))",
        [first, last],
    )


def build_all(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    for version in plan.version_names:
        for start, end in chunks(plan.cadence, plan.window_partitions, plan.chunk):
            build_window(conn, plan, version, start, end, "cadence")


def check_cadence_end_to_end(conn, plan: Plan, expected: list, independent_sql: str) -> None:
    """Every partition built once with its end, rows as a plain query says, every blocking
    window check passing (reconciliation fully explained), and the promotion publishing v2."""
    assert plan.window_partitions == expected
    build_all(conn, plan)
    cadence = plan.cadence
    for version in plan.version_names:
        evidence = conn.execute(
            "SELECT partition_start, partition_end, checks_passed "
            "FROM backfill.partition_evidence WHERE model = ? AND version = ? "
            "ORDER BY partition_start",
            [plan.name, version],
        ).fetchall()
        stamps = [
            p if isinstance(p, dt.datetime) else dt.datetime.combine(p, dt.time()) for p in expected
        ]
        assert [row[0] for row in evidence] == stamps
        assert [row[1] for row in evidence] == [*stamps[1:], _stamp(cadence.next(expected[-1]))]
        assert all(row[2] for row in evidence)
    model = conn.execute(
        f"SELECT period, category, events FROM {plan.model_table('v2')} ORDER BY ALL"
    ).fetchall()
    independent = conn.execute(independent_sql).fetchall()
    assert model == independent and model
    verdicts = {c.name: (c.passed, c.summary) for c in run_window_checks(conn, plan) if c.blocking}
    assert all(passed for passed, _ in verdicts.values()), verdicts
    assert "every difference from legacy is explained" in verdicts["reconciles_with_baseline"][1]
    promote(conn, plan, "v2", "", "cadence test", "run-1")
    assert published_version(conn, plan) == "v2"
    assert conn.execute(f"SELECT sum(events) FROM {plan.view}").fetchone()[0] == sum(
        row[2] for row in model
    )


def _stamp(p):
    return p if isinstance(p, dt.datetime) else dt.datetime.combine(p, dt.time())


def utc_hours(first_local: dt.date, last_local: dt.date, zone: str) -> list[dt.datetime]:
    """Every UTC hour from local midnight of ``first_local`` to local midnight after
    ``last_local``: 23 or 25 hours on the days the clocks change."""
    tz = ZoneInfo(zone)
    start = dt.datetime.combine(first_local, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    end = dt.datetime.combine(last_local + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    hours, current = [], start
    while current < end.astimezone(dt.UTC):
        hours.append(current.replace(tzinfo=None))
        current += dt.timedelta(hours=1)
    return hours


@pytest.mark.parametrize(
    ("first", "last", "hours"),
    [
        (dt.date(2024, 3, 9), dt.date(2024, 3, 11), 24 + 23 + 24),  # spring forward
        (dt.date(2024, 11, 2), dt.date(2024, 11, 4), 24 + 25 + 24),  # fall back
    ],
    ids=["spring-forward", "fall-back"],
)
def test_hourly_partitions_in_new_york_follow_the_clock_change(tmp_path, first, last, hours):
    plan = make_plan(tmp_path / "plan", "hourly", first, last, NEW_YORK)
    expected = utc_hours(first, last, NEW_YORK)
    assert len(expected) == hours
    assert plan.window_partitions == expected
    # Dagster's keys for the same hours: distinct, one per hour, the repeated 01:00 included.
    keys = [partition_key(plan, hour) for hour in expected]
    assert len(set(keys)) == hours
    dagster_keys = partitions_def(plan).get_partition_keys_in_range(
        dg.PartitionKeyRange(keys[0], keys[-1])
    )
    assert dagster_keys == keys


def test_hourly_plan_across_the_fall_back_builds_checks_and_promotes(conn, tmp_path):
    first, last = dt.date(2024, 11, 2), dt.date(2024, 11, 4)
    plan = make_plan(tmp_path / "plan", "hourly", first, last, NEW_YORK)
    fill_events(conn, dt.datetime(2024, 11, 1), dt.datetime(2024, 11, 6))
    expected = utc_hours(first, last, NEW_YORK)
    check_cadence_end_to_end(
        conn,
        plan,
        expected,
        "SELECT date_trunc('hour', event_ts), category, count(*) FROM ops.events "
        f"WHERE category <> 'test' AND event_ts >= TIMESTAMP '{expected[0]}' "
        f"AND event_ts < TIMESTAMP '{expected[-1] + dt.timedelta(hours=1)}' "
        "GROUP BY ALL ORDER BY ALL",
    )


def test_daily_plan_builds_checks_and_promotes(conn, tmp_path):
    plan = make_plan(tmp_path / "plan", "daily", dt.date(2024, 2, 26), dt.date(2024, 3, 3))
    fill_events(conn, dt.datetime(2024, 2, 20), dt.datetime(2024, 3, 10))
    expected = [dt.date(2024, 2, 26) + dt.timedelta(days=i) for i in range(7)]  # 29 Feb in it
    check_cadence_end_to_end(
        conn,
        plan,
        expected,
        "SELECT CAST(event_ts AS DATE), category, count(*) FROM ops.events "
        "WHERE category <> 'test' AND event_ts >= '2024-02-26' AND event_ts < '2024-03-04' "
        "GROUP BY ALL ORDER BY ALL",
    )


def test_weekly_plan_across_the_year_end_builds_checks_and_promotes(conn, tmp_path):
    # Mondays 2024-12-02 .. 2025-01-13: the week of 30 December holds the year end.
    plan = make_plan(tmp_path / "plan", "weekly", dt.date(2024, 12, 2), dt.date(2025, 1, 19))
    fill_events(conn, dt.datetime(2024, 11, 25), dt.datetime(2025, 1, 27))
    expected = [dt.date(2024, 12, 2) + dt.timedelta(weeks=i) for i in range(7)]
    assert dt.date(2024, 12, 30) in expected
    check_cadence_end_to_end(
        conn,
        plan,
        expected,
        "SELECT CAST(date_trunc('week', event_ts) AS DATE), category, count(*) "
        "FROM ops.events WHERE category <> 'test' AND event_ts >= '2024-12-02' "
        "AND event_ts < '2025-01-20' GROUP BY ALL ORDER BY ALL",
    )


def test_monthly_plan_across_a_leap_february_and_the_year_end(conn, tmp_path):
    plan = make_plan(tmp_path / "plan", "monthly", dt.date(2023, 11, 1), dt.date(2024, 3, 31))
    fill_events(conn, dt.datetime(2023, 10, 15), dt.datetime(2024, 4, 15))
    expected = [
        dt.date(2023, 11, 1),
        dt.date(2023, 12, 1),
        *(dt.date(2024, m, 1) for m in (1, 2, 3)),
    ]
    check_cadence_end_to_end(
        conn,
        plan,
        expected,
        "SELECT CAST(date_trunc('month', event_ts) AS DATE), category, count(*) FROM ops.events "
        "WHERE category <> 'test' AND event_ts >= '2023-11-01' AND event_ts < '2024-04-01' "
        "GROUP BY ALL ORDER BY ALL",
    )
    february = conn.execute(
        "SELECT sum(events) FROM models.monthly_events__legacy WHERE period = '2024-02-01'"
    ).fetchone()[0]
    # 29 days of one event every 11 minutes: the leap day is in February's partition.
    in_february = conn.execute(
        "SELECT count(*) FROM ops.events WHERE event_ts >= '2024-02-01' AND event_ts < '2024-03-01'"
    ).fetchone()[0]
    assert february == in_february
    assert in_february in (29 * 24 * 60 // 11, 29 * 24 * 60 // 11 + 1)


@pytest.mark.parametrize(
    ("cadence", "moment", "start"),
    [
        ("weekly", dt.date(2025, 1, 1), dt.date(2024, 12, 30)),  # a Wednesday in ISO week 1
        ("monthly", dt.date(2024, 2, 29), dt.date(2024, 2, 1)),
        ("daily", dt.date(2024, 12, 31), dt.date(2024, 12, 31)),
    ],
)
def test_floor_and_next_at_edges(cadence, moment, start):
    c = Cadence(cadence)
    assert c.floor(moment) == start
    assert c.next(start) > moment
    assert c.floor(c.next(start)) == c.next(start)


def test_a_weekly_window_must_start_on_the_week_start(tmp_path):
    from backfill_assets.plan import PlanError

    with pytest.raises(PlanError, match="not the first day of a week") as error:
        make_plan(tmp_path / "plan", "weekly", dt.date(2024, 12, 4), dt.date(2025, 1, 19))
    assert "2024-12-02" in str(error.value)  # the fix names the week's first day


def daily_series(conn: duckdb.DuckDBPyConnection, cliff: dt.date | None = None) -> None:
    """Eight weeks of events: 100 a weekday, 40 a Saturday or Sunday; ``cliff`` gets 20."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
    conn.execute(
        "CREATE OR REPLACE TABLE ops.events "
        "(event_id UUID, category VARCHAR, event_ts TIMESTAMP, loaded_at TIMESTAMP)"
    )
    conn.execute(
        """
        INSERT INTO ops.events
        SELECT uuid(), 'a', d + INTERVAL (i) MINUTE, d + INTERVAL 1 DAY
        FROM (SELECT range AS d FROM range(TIMESTAMP '2024-01-01', TIMESTAMP '2024-02-26',
                                           INTERVAL 1 DAY)) AS days,
             range(CASE WHEN CAST(d AS DATE) = ? THEN 20
                        WHEN isodow(d) >= 6 THEN 40 ELSE 100 END) AS r(i)
        """,
        [cliff],
    )


def trend_of(conn, tmp_path: Path, seasonality: int | None) -> tuple[bool, str]:
    plan = make_plan(
        tmp_path / f"plan{seasonality}", "daily", dt.date(2024, 1, 1), dt.date(2024, 2, 25)
    )
    text = (
        (plan.folder / "plan.yaml")
        .read_text()
        .replace(
            "trend: {measure: events, window_partitions: 6, max_deviations: 50}",
            "trend: {measure: events, window_partitions: 28, max_deviations: 3"
            + (f", seasonality: {seasonality}" if seasonality else "")
            + "}",
        )
    )
    (plan.folder / "plan.yaml").write_text(text)
    plan = load_plan(plan.folder / "plan.yaml")
    for start, end in chunks(plan.cadence, plan.window_partitions, plan.chunk):
        build_window(conn, plan, "v2", start, end, "trend")
    (check,) = [
        c for c in run_window_checks(conn, plan) if c.name == "trend_has_no_unexplained_jumps"
    ]
    return check.passed, check.summary


def test_a_weekly_cycle_is_no_jump_with_seasonality_but_a_cliff_still_is(conn, tmp_path):
    daily_series(conn)
    # Without seasonality every weekend day is a jump away from the weekday median.
    passed, summary = trend_of(conn, tmp_path, None)
    assert not passed and "16 day(s) jump" in summary  # 8 Saturdays and 8 Sundays
    passed, summary = trend_of(conn, tmp_path, 7)
    assert passed, summary
    # A one-day cliff on a Wednesday (20 instead of 100) is still found, and only it.
    cliff = dt.date(2024, 1, 24)
    daily_series(conn, cliff)
    passed, summary = trend_of(conn, tmp_path, 7)
    assert not passed
    assert "1 day(s) jump" in summary and "2024-01-24: 20.00 vs median 100.00" in summary


def test_a_build_window_must_end_on_a_partition_start(conn, tmp_path):
    """A month cannot be built from one day of it: the window's end must start a partition."""
    from backfill_assets.build import BuildError

    plan = make_plan(tmp_path / "plan", "monthly", dt.date(2024, 1, 1), dt.date(2024, 3, 31))
    fill_events(conn, dt.datetime(2024, 1, 1), dt.datetime(2024, 4, 1))
    with pytest.raises(BuildError, match="2024-02-02 is not the start of a month") as error:
        build_window(conn, plan, "v2", dt.date(2024, 2, 1), dt.date(2024, 2, 2), "bad")
    assert "Fix:" in str(error.value)
    assert conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'models'"
    ).fetchone() == (0,)


def test_the_canary_samples_the_hours_around_a_clock_change(tmp_path):
    """An hourly plan's canary holds the hours on both sides of the fall-back change (05:00 and
    06:00 UTC on 3 November 2024 in New York) and the first and last hour of the window."""
    from backfill_assets.canary import sample_partitions

    plan = make_plan(
        tmp_path / "plan", "hourly", dt.date(2024, 11, 1), dt.date(2024, 11, 5), NEW_YORK
    )
    sample = sample_partitions(plan)
    # New York was UTC-4 before 06:00 UTC on 3 November and UTC-5 from then on.
    assert {dt.datetime(2024, 11, 3, 5), dt.datetime(2024, 11, 3, 6)} <= set(sample)
    assert sample[0] == plan.window_partitions[0] == dt.datetime(2024, 11, 1, 4)
    assert sample[-1] == plan.window_partitions[-1] == dt.datetime(2024, 11, 6, 4)
    assert len(sample) < len(plan.window_partitions) / 10


def test_the_canary_of_a_monthly_plan_holds_february_and_the_year_end(tmp_path):
    from backfill_assets.canary import sample_partitions

    plan = make_plan(tmp_path / "plan", "monthly", dt.date(2023, 11, 1), dt.date(2024, 3, 31))
    assert sample_partitions(plan) == [
        dt.date(2023, 11, 1), dt.date(2023, 12, 1), dt.date(2024, 1, 1),
        dt.date(2024, 2, 1), dt.date(2024, 3, 1),
    ]  # fmt: skip


def with_partitions_end(plan: Plan, end: dt.date) -> Plan:
    path = plan.path
    text = path.read_text()
    path.write_text(text.replace("partitions: {", f"partitions: {{end: {end}, ", 1))
    return load_plan(path)


@pytest.mark.parametrize(
    ("cadence", "zone", "first", "window_last", "end", "count", "last_key"),
    [
        ("daily", "UTC", dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 10), 70,
         "2024-03-10"),
        ("weekly", "UTC", dt.date(2024, 1, 1), dt.date(2024, 1, 7), dt.date(2024, 1, 17), 3,
         "2024-01-15"),
        ("monthly", "UTC", dt.date(2024, 1, 1), dt.date(2024, 1, 31), dt.date(2024, 3, 10), 3,
         "2024-03-01"),
        ("hourly", NEW_YORK, dt.date(2024, 3, 9), dt.date(2024, 3, 9), dt.date(2024, 3, 10),
         24 + 23, "2024-03-10-23:00"),
    ],
)  # fmt: skip
def test_partitions_end_at_the_plans_end_day(
    tmp_path, cadence, zone, first, window_last, end, count, last_key
):
    plan = with_partitions_end(make_plan(tmp_path, cadence, first, window_last, zone), end)
    keys = partitions_def(plan).get_partition_keys()
    assert (len(keys), keys[-1]) == (count, last_key)


def test_partitions_ending_before_the_window_refuse_to_load(tmp_path):
    plan = make_plan(tmp_path, "daily", dt.date(2024, 1, 1), dt.date(2024, 3, 31))
    with pytest.raises(Exception, match=r"partitions\.end.*before window\.end 2024-03-31"):
        with_partitions_end(plan, dt.date(2024, 3, 1))
