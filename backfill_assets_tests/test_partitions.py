"""Daily partitions and range maths at month ends, the leap day and DST-change dates (UTC)."""

import datetime as dt
from itertools import islice

import pytest

from backfill_assets.build import build_window
from backfill_assets.component.models import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    partitions_def,
    range_tags,
)
from backfill_assets.example.generator import ensure_tables
from backfill_assets.partitions import Cadence, chunks
from backfill_assets.warehouse import ensure_schema

UTC = dt.UTC
FIRST = dt.date(2024, 1, 1)
LAST = dt.date(2025, 12, 31)
# 2024 is a leap year (366 days) + 2025 (365 days)
DAYS_2024_2025 = 366 + 365
# Month ends, the leap day and the US/EU daylight-saving changes of 2024 (all plain UTC days).
EDGE_DAYS = [
    dt.date(2024, 1, 31),
    dt.date(2024, 2, 28),
    dt.date(2024, 2, 29),
    dt.date(2024, 3, 1),
    dt.date(2024, 3, 10),  # US spring forward
    dt.date(2024, 3, 31),  # EU spring forward
    dt.date(2024, 4, 30),
    dt.date(2024, 10, 27),  # EU fall back
    dt.date(2024, 11, 3),  # US fall back
    dt.date(2024, 12, 31),
    dt.date(2025, 3, 9),  # US spring forward 2025
    dt.date(2025, 3, 30),  # EU spring forward 2025
    dt.date(2025, 10, 26),  # EU fall back 2025
    dt.date(2025, 11, 2),  # US fall back 2025
]


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


DAILY = Cadence("daily")


def day_chunks(first: dt.date, last: dt.date, size: int) -> list[tuple[dt.date, dt.date]]:
    """``partitions.chunks`` of the days ``first``..``last``, as inclusive (first, last) days."""
    days = DAILY.starts(first, last + dt.timedelta(days=1))
    return [(a, b - dt.timedelta(days=1)) for a, b in chunks(DAILY, days, size)]


@pytest.mark.parametrize(
    ("chunk", "expected_chunks"),
    [
        (1, 731),  # one per day
        (7, 105),  # 104 full weeks = 728 days, + 3 days
        (31, 24),  # 23 * 31 = 713 days, + 18 days
        (366, 2),  # all of 2024, then all of 2025
    ],
)
def test_chunks_cover_every_day_exactly_once(chunk, expected_chunks):
    ranges = day_chunks(FIRST, LAST, chunk)
    assert len(ranges) == expected_chunks
    covered = [d for first, last in ranges for d in _days(first, last)]
    assert covered == _days(FIRST, LAST)  # in order, no gap, no overlap
    assert len(covered) == DAYS_2024_2025
    assert all(first <= last for first, last in ranges)
    assert all((last - first).days + 1 <= chunk for first, last in ranges)
    # every chunk but the last is full
    assert all((last - first).days + 1 == chunk for first, last in ranges[:-1])
    for (_, previous_last), (next_first, _) in zip(ranges, ranges[1:], strict=False):
        assert next_first == previous_last + dt.timedelta(days=1)


def test_chunks_of_366_days_split_at_the_year_end():
    assert day_chunks(FIRST, LAST, 366) == [
        (dt.date(2024, 1, 1), dt.date(2024, 12, 31)),
        (dt.date(2025, 1, 1), dt.date(2025, 12, 31)),
    ]


def test_chunks_at_month_ends_and_the_leap_day():
    # 2024-01-01 + 30 days = 2024-01-31; 2024-02-01 + 30 days = 2024-03-02 (February has 29 days)
    assert day_chunks(dt.date(2024, 1, 1), dt.date(2024, 3, 5), 31) == [
        (dt.date(2024, 1, 1), dt.date(2024, 1, 31)),
        (dt.date(2024, 2, 1), dt.date(2024, 3, 2)),
        (dt.date(2024, 3, 3), dt.date(2024, 3, 5)),
    ]
    assert day_chunks(dt.date(2024, 2, 28), dt.date(2024, 3, 2), 2) == [
        (dt.date(2024, 2, 28), dt.date(2024, 2, 29)),
        (dt.date(2024, 3, 1), dt.date(2024, 3, 2)),
    ]
    # 2025 has no 29 February
    assert day_chunks(dt.date(2025, 2, 27), dt.date(2025, 3, 2), 2) == [
        (dt.date(2025, 2, 27), dt.date(2025, 2, 28)),
        (dt.date(2025, 3, 1), dt.date(2025, 3, 2)),
    ]
    # a single day is one chunk; a chunk larger than the range is the range
    assert day_chunks(dt.date(2024, 2, 29), dt.date(2024, 2, 29), 31) == [
        (dt.date(2024, 2, 29), dt.date(2024, 2, 29))
    ]


@pytest.mark.parametrize("chunk", [0, -1])
def test_chunks_refuse_a_size_below_one(chunk):
    day = dt.date(2024, 2, 29)
    with pytest.raises(ValueError):
        # islice: stop after 3 items so a non-terminating generator cannot hang the test
        list(islice(chunks(DAILY, [day], chunk), 3))


@pytest.mark.parametrize("edge", EDGE_DAYS, ids=str)
def test_daily_chunks_around_dst_and_month_ends_are_single_days(edge):
    before, after = edge - dt.timedelta(days=1), edge + dt.timedelta(days=1)
    assert day_chunks(before, after, 1) == [(before, before), (edge, edge), (after, after)]


def test_range_tags_and_reversed_ranges():
    assert range_tags(dt.date(2024, 2, 29), dt.date(2024, 3, 31)) == {
        RANGE_START_TAG: "2024-02-29",
        RANGE_END_TAG: "2024-03-31",
    }
    assert range_tags(dt.date(2024, 3, 10), dt.date(2024, 3, 10)) == {
        RANGE_START_TAG: "2024-03-10",
        RANGE_END_TAG: "2024-03-10",
    }
    with pytest.raises(ValueError, match="reversed") as error:
        range_tags(dt.date(2024, 3, 1), dt.date(2024, 2, 29))
    assert "2024-03-01" in str(error.value) and "2024-02-29" in str(error.value)


@pytest.mark.parametrize("plan_name", ["daily_revenue", "fct_orders"])
def test_daily_partitions_are_24_hour_utc_days(request, plan_name):
    plan = request.getfixturevalue(plan_name)
    partitions = partitions_def(plan)
    keys = partitions.get_partition_keys()
    assert keys[0] == "2024-01-01"
    wanted = [d.isoformat() for d in _days(FIRST, LAST)]
    assert keys[: len(wanted)] == wanted  # every day of 2024-2025, in order, no gaps
    for key in wanted:
        window = partitions.time_window_for_partition_key(key)
        day = dt.date.fromisoformat(key)
        assert window.start == dt.datetime(day.year, day.month, day.day, tzinfo=UTC), key
        assert window.end - window.start == dt.timedelta(hours=24), key
        assert window.start.utcoffset() == dt.timedelta(0), key


@pytest.mark.parametrize("edge", EDGE_DAYS, ids=str)
def test_timestamps_map_to_their_utc_day(daily_revenue, edge):
    partitions = partitions_def(daily_revenue)
    midnight = dt.datetime(edge.year, edge.month, edge.day, tzinfo=UTC)
    last_micro = midnight + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    next_midnight = midnight + dt.timedelta(days=1)
    window = partitions.time_window_for_partition_key(edge.isoformat())
    assert window.start <= midnight and last_micro < window.end
    assert window.end == next_midnight
    assert partitions.get_partition_key_for_timestamp(midnight.timestamp()) == edge.isoformat()
    assert partitions.get_partition_key_for_timestamp(next_midnight.timestamp()) == (
        (edge + dt.timedelta(days=1)).isoformat()
    )


# Orders placed at the very edges of UTC days (naive timestamps are UTC, ARCHITECTURE.md §3).
EDGE_ORDERS = [
    (1, "2024-02-29 23:59:59.999999", "2024-02-29"),
    (2, "2024-03-01 00:00:00", "2024-03-01"),
    (3, "2024-03-10 02:30:00", "2024-03-10"),  # a wall-clock hour that does not exist in the US
    (4, "2024-03-10 23:59:59.999999", "2024-03-10"),
    (5, "2024-03-31 01:30:00", "2024-03-31"),  # the hour the EU skips
    (6, "2024-03-31 00:00:00", "2024-03-31"),
    (7, "2024-10-27 01:30:00", "2024-10-27"),  # the hour the EU repeats
    (8, "2024-10-27 23:59:59.999999", "2024-10-27"),
    (9, "2024-11-03 06:30:00", "2024-11-03"),  # the hour the US repeats (01:30 EST/EDT)
    (10, "2024-11-04 00:00:00", "2024-11-04"),
    (11, "2024-03-31 23:59:59.999999", "2024-03-31"),  # month end
    (12, "2024-04-01 00:00:00", "2024-04-01"),
]


def test_orders_land_in_the_partition_of_their_utc_day(conn, fct_orders):
    ensure_schema(conn)
    ensure_tables(conn)
    conn.execute("INSERT INTO raw.customers VALUES (1, 'consumer', 'north', '2023-01-01', NULL)")
    for order_id, ts, _ in EDGE_ORDERS:
        conn.execute(
            "INSERT INTO raw.orders VALUES (?, 1, 'north', CAST(? AS TIMESTAMP), 10.00, "
            "'placed', CAST(? AS TIMESTAMP) + INTERVAL 1 MINUTE)",
            [order_id, ts, ts],
        )
    start, end = dt.date(2024, 2, 29), dt.date(2024, 11, 5)
    result = build_window(conn, fct_orders, "v2", start, end, "edges")

    got = dict(conn.execute("SELECT order_id, order_date FROM models.fct_orders__v2").fetchall())
    assert got == {order_id: dt.date.fromisoformat(d) for order_id, _, d in EDGE_ORDERS}

    # the evidence agrees: every day of the window has a row, with the orders placed on it
    per_day = {d.partition: d.row_count for d in result.partitions}
    assert len(per_day) == (end - start).days
    expected_counts: dict[dt.date, int] = {}
    for _, _, d in EDGE_ORDERS:
        day = dt.date.fromisoformat(d)
        expected_counts[day] = expected_counts.get(day, 0) + 1
    assert {d: n for d, n in per_day.items() if n} == expected_counts

    # and Dagster's partition of each timestamp is the same day
    partitions = partitions_def(fct_orders)
    for _, ts, d in EDGE_ORDERS:
        moment = dt.datetime.fromisoformat(ts).replace(tzinfo=UTC)
        assert partitions.get_partition_key_for_timestamp(moment.timestamp()) == d, ts
