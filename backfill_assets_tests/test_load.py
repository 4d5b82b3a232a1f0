"""load_file on real DuckDB files: exact loads, refused loads, and tables left as they were.

Every expected value is worked out by hand from the file the test writes. Parquet files are
written by a separate in-memory connection (session TimeZone UTC), CSV files as plain text.
"""

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from backfill_assets.load import LoadError, load_file

pytestmark = pytest.mark.reliability  # the loader's refusals are safety cases

D = Decimal
NEW_YORK = "America/New_York"


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The loading connection, on a fresh warehouse file."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    yield conn
    conn.close()


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, select: str) -> Path:
    with duckdb.connect() as other:
        other.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    return path


def rows(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def types(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return {name: typ for name, typ, *_ in conn.execute(f"DESCRIBE {table}").fetchall()}


def timezone_of(conn: duckdb.DuckDBPyConnection) -> str:
    return conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]


def refused(conn: duckdb.DuckDBPyConnection, table: str, path: Path, **kwargs) -> str:
    """Load and expect a refusal; the table (if any) must hold exactly its previous rows."""
    exists = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name || '.' || table_name = ?", [table]
    ).fetchone()[0]
    before = rows(conn, table) if exists else None
    with pytest.raises(LoadError) as caught:
        load_file(conn, table, path, **kwargs)
    assert (rows(conn, table) if exists else None) == before
    if not exists:  # a refused first load creates nothing
        assert not conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name || '.' || table_name = ?",
            [table],
        ).fetchone()[0]
    message = str(caught.value)
    assert "Fix:" in message
    return message


def names_row(message: str, row: int, column: str, value: str) -> None:
    """The refusal names the data row, the column and the offending value."""
    assert f"data row {row}, column {column}" in message, message
    assert value in message, message


# ------------------------------------------------------------------------------------------
# Where the target types come from
# ------------------------------------------------------------------------------------------


def test_csv_file_types_keep_varchar_keys_and_store_offsets_as_utc(wh, tmp_path):
    path = write_csv(
        tmp_path / "orders.csv",
        "order_id,customer_id,day,placed_at,shipped_at",
        "O000000042,17,2024-01-02,2024-01-02 13:00:00,2024-01-02T23:30:00-05:00",
        "O000000043,18,2024-01-03,2024-01-03 08:15:00,2024-01-03T01:00:00+01:00",
    )
    assert load_file(wh, "raw.orders", path) == 2
    assert types(wh, "raw.orders") == {
        "order_id": "VARCHAR",
        "customer_id": "BIGINT",
        "day": "DATE",
        "placed_at": "TIMESTAMP",
        "shipped_at": "TIMESTAMP",  # detected WITH TIME ZONE, stored as UTC
    }
    assert rows(wh, "raw.orders") == [
        (
            "O000000042",
            17,
            dt.date(2024, 1, 2),
            dt.datetime(2024, 1, 2, 13, 0),
            dt.datetime(2024, 1, 3, 4, 30),
        ),
        (
            "O000000043",
            18,
            dt.date(2024, 1, 3),
            dt.datetime(2024, 1, 3, 8, 15),
            dt.datetime(2024, 1, 3, 0, 0),
        ),
    ]


def test_parquet_file_types_are_kept_and_timestamptz_becomes_utc_timestamp(wh, tmp_path):
    path = write_parquet(
        tmp_path / "flights.parquet",
        "SELECT 9000000001::BIGINT AS flight_id, 'O000000042' AS code, "
        "12.34::DECIMAL(12,2) AS fare, DATE '2024-01-02' AS day, "
        "TIMESTAMPTZ '2024-01-02 23:30:00-05' AS departs_at",
    )
    assert load_file(wh, "raw.flights", path) == 1
    assert types(wh, "raw.flights") == {
        "flight_id": "BIGINT",
        "code": "VARCHAR",
        "fare": "DECIMAL(12,2)",
        "day": "DATE",
        "departs_at": "TIMESTAMP",
    }
    assert rows(wh, "raw.flights") == [
        (9000000001, "O000000042", D("12.34"), dt.date(2024, 1, 2), dt.datetime(2024, 1, 3, 4, 30))
    ]


def test_declared_columns_create_schema_and_table_with_bigint_and_uuid_keys(wh, tmp_path):
    path = write_csv(
        tmp_path / "payments.csv",
        "amount,ref,payment_id",  # another order than the declaration
        "12.340,550E8400-E29B-41D4-A716-446655440000,42",
        "7,{6ba7b810-9dad-11d1-80b4-00c04fd430c8},43.0",
        ",00000000-0000-0000-0000-000000000000,  44 ",
    )
    columns = {"payment_id": "BIGINT", "ref": "uuid", "amount": "numeric(12,2)"}
    assert load_file(wh, "staging.payments", path, columns=columns) == 3
    assert types(wh, "staging.payments") == {
        "payment_id": "BIGINT",
        "ref": "UUID",
        "amount": "DECIMAL(12,2)",
    }
    assert rows(wh, "staging.payments") == [
        (42, uuid.UUID("550e8400-e29b-41d4-a716-446655440000"), D("12.34")),
        (43, uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), D("7.00")),
        (44, uuid.UUID("00000000-0000-0000-0000-000000000000"), None),
    ]


def test_existing_table_types_win_and_its_rows_are_replaced(wh, tmp_path):
    wh.execute("CREATE SCHEMA raw")
    wh.execute("CREATE TABLE raw.orders (order_id VARCHAR, amount DECIMAL(12,2), seen DATE)")
    wh.execute("INSERT INTO raw.orders VALUES ('O1', 1.00, DATE '2023-12-31')")
    path = write_csv(
        tmp_path / "orders.csv",
        "seen,order_id,amount",
        "2024-01-02,O000000042,12.5",
        "2024-01-03 00:00:00,0000000043,3",
    )
    # columns is for a table that does not exist yet: here it is ignored.
    declared = {"order_id": "BIGINT", "amount": "DOUBLE", "seen": "TIMESTAMP"}
    assert load_file(wh, "raw.orders", path, columns=declared) == 2
    assert types(wh, "raw.orders") == {
        "order_id": "VARCHAR",
        "amount": "DECIMAL(12,2)",
        "seen": "DATE",
    }
    assert rows(wh, "raw.orders") == [
        ("0000000043", D("3.00"), dt.date(2024, 1, 3)),
        ("O000000042", D("12.50"), dt.date(2024, 1, 2)),
    ]


def test_parquet_values_convert_into_existing_types_when_nothing_changes(wh, tmp_path):
    wh.execute("CREATE SCHEMA raw")
    wh.execute("CREATE TABLE raw.t (id VARCHAR, n BIGINT, ts TIMESTAMP, amount DECIMAL(12,2))")
    path = write_parquet(
        tmp_path / "t.parquet",
        "SELECT 42::INTEGER AS id, 2.0::DOUBLE AS n, DATE '2024-01-02' AS ts, "
        "12.340::DECIMAL(10,3) AS amount",
    )
    assert load_file(wh, "raw.t", path) == 1
    assert rows(wh, "raw.t") == [("42", 2, dt.datetime(2024, 1, 2), D("12.34"))]


# ------------------------------------------------------------------------------------------
# Timestamps: offsets are converted to UTC, whatever the session's TimeZone
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("session_zone", [None, NEW_YORK])
def test_csv_offsets_are_converted_to_utc_and_plain_values_taken_as_utc(wh, tmp_path, session_zone):
    if session_zone:
        wh.execute(f"SET TimeZone = '{session_zone}'")
    before = timezone_of(wh)
    path = write_csv(
        tmp_path / "events.csv",
        "id,ts,ts_tz",
        "1,2024-01-02T23:30:00-05:00,2024-01-02T23:30:00-05:00",
        "2,2024-01-02 13:00:00,2024-01-02 13:00:00",
        "3,2024-01-02T13:00:00Z,2024-01-02T13:00:00Z",
        "4,2024-01-02 13:00:00+05:30,2024-01-02 13:00:00+05:30",
        "5,2024-07-01 12:00:00.250,2024-07-01 12:00:00.250",
    )
    columns = {"id": "INTEGER", "ts": "TIMESTAMP", "ts_tz": "TIMESTAMPTZ"}
    assert load_file(wh, "raw.events", path, columns=columns) == 5
    assert timezone_of(wh) == before
    stored = wh.execute(
        "SELECT id, ts, CAST(timezone('UTC', ts_tz) AS VARCHAR) FROM raw.events ORDER BY id"
    ).fetchall()
    assert stored == [
        (1, dt.datetime(2024, 1, 3, 4, 30), "2024-01-03 04:30:00"),
        (2, dt.datetime(2024, 1, 2, 13, 0), "2024-01-02 13:00:00"),
        (3, dt.datetime(2024, 1, 2, 13, 0), "2024-01-02 13:00:00"),
        (4, dt.datetime(2024, 1, 2, 7, 30), "2024-01-02 07:30:00"),
        (5, dt.datetime(2024, 7, 1, 12, 0, 0, 250000), "2024-07-01 12:00:00.25"),
    ]


def test_parquet_timestamptz_loads_the_same_utc_instant_in_any_session_timezone(wh, tmp_path):
    path = write_parquet(
        tmp_path / "events.parquet",
        "SELECT 1 AS id, TIMESTAMPTZ '2024-01-02 23:30:00-05' AS ts "
        "UNION ALL SELECT 2, TIMESTAMPTZ '2024-07-01 12:00:00+00'",
    )
    wh.execute(f"SET TimeZone = '{NEW_YORK}'")
    wh.execute("CREATE SCHEMA raw")
    wh.execute("CREATE TABLE raw.as_tz (id INTEGER, ts TIMESTAMPTZ)")

    assert load_file(wh, "raw.from_file", path) == 2  # file types: a UTC TIMESTAMP
    assert load_file(wh, "raw.as_tz", path) == 2
    assert timezone_of(wh) == NEW_YORK  # left as the caller set it

    assert rows(wh, "raw.from_file") == [
        (1, dt.datetime(2024, 1, 3, 4, 30)),
        (2, dt.datetime(2024, 7, 1, 12, 0)),
    ]
    as_utc = "SELECT id, CAST(timezone('UTC', ts) AS VARCHAR) FROM raw.as_tz ORDER BY id"
    assert wh.execute(as_utc).fetchall() == [(1, "2024-01-03 04:30:00"), (2, "2024-07-01 12:00:00")]


def test_parquet_plain_timestamp_into_timestamptz_is_taken_as_utc(wh, tmp_path):
    path = write_parquet(
        tmp_path / "e.parquet", "SELECT 1 AS id, TIMESTAMP '2024-01-02 13:00:00' AS ts"
    )
    wh.execute(f"SET TimeZone = '{NEW_YORK}'")
    wh.execute("CREATE SCHEMA raw")
    wh.execute("CREATE TABLE raw.e (id INTEGER, ts TIMESTAMPTZ)")
    assert load_file(wh, "raw.e", path) == 1
    as_utc = "SELECT CAST(timezone('UTC', ts) AS VARCHAR) FROM raw.e"
    assert wh.execute(as_utc).fetchall() == [("2024-01-02 13:00:00",)]


@pytest.mark.parametrize(
    "value",
    ["2024-01-02 13:00:00.1234567", "2024-13-01 00:00:00", "next tuesday"],
)
def test_timestamp_that_is_not_exact_is_refused(wh, tmp_path, value):
    columns = {"id": "INTEGER", "ts": "TIMESTAMP"}
    load_file(wh, "raw.e", write_csv(tmp_path / "a.csv", "id,ts", "1,2024-01-01"), columns)
    path = write_csv(tmp_path / "b.csv", "id,ts", "1,2024-01-02", f"2,{value}")
    message = refused(wh, "raw.e", path)
    names_row(message, 2, "ts", repr(value))
    assert rows(wh, "raw.e") == [(1, dt.datetime(2024, 1, 1))]


# ------------------------------------------------------------------------------------------
# Refusals: the value would change, or is no value of the type at all
# ------------------------------------------------------------------------------------------


@pytest.fixture
def typed(wh, tmp_path) -> duckdb.DuckDBPyConnection:
    """raw.t with one previous row, declared with the types the refusals are about."""
    wh.execute("CREATE SCHEMA raw")
    wh.execute(
        "CREATE TABLE raw.t (id BIGINT, small INTEGER, day DATE, amount DECIMAL(12,2), "
        "ref UUID, note VARCHAR)"
    )
    wh.execute(
        "INSERT INTO raw.t VALUES (1, 1, DATE '2023-12-31', 1.00, "
        "'6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'previous')"
    )
    return wh


GOOD = {
    "id": "7",
    "small": "7",
    "day": "2024-01-02",
    "amount": "12.34",
    "ref": "550e8400-e29b-41d4-a716-446655440000",
    "note": "ok",
}
PREVIOUS = [
    (
        1,
        1,
        dt.date(2023, 12, 31),
        D("1.00"),
        uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
        "previous",
    )
]


def csv_with(tmp_path: Path, column: str, *values: str) -> Path:
    """A file for raw.t: one good row, then one row per value of ``column``."""
    names = list(GOOD)
    lines = [",".join(names), ",".join(GOOD.values())]
    for value in values:
        lines.append(",".join(value if name == column else GOOD[name] for name in names))
    return write_csv(tmp_path / "t.csv", *lines)


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        ("id", "1.5", "BIGINT"),  # would be rounded into key 2
        ("id", "9223372036854775808", "BIGINT"),  # one past BIGINT's maximum
        ("id", "abc", "BIGINT"),
        ("id", "1e3", "BIGINT"),  # not plain digits
        ("small", "2147483648", "INTEGER"),  # one past INTEGER's maximum
        ("small", "-2.5", "INTEGER"),
        ("amount", "12.345", "DECIMAL(12,2)"),  # one decimal too many
        ("amount", "12345678901.00", "DECIMAL(12,2)"),  # 11 digits before the point, 10 fit
        ("day", "2024-01-02 13:00:00", "DATE"),  # the time of day would be lost
        ("day", "2024-02-30", "DATE"),
        ("ref", "550e8400-e29b-41d4-a716-44665544000", "UUID"),  # one hex digit short
    ],
)
def test_a_value_that_would_change_is_refused_naming_row_column_value_and_fix(
    typed, tmp_path, column, value, why
):
    message = refused(typed, "raw.t", csv_with(tmp_path, column, value))
    names_row(message, 2, column, repr(value))
    assert f"cannot be stored as {why} without changing it" in message
    assert rows(typed, "raw.t") == PREVIOUS


def test_a_number_a_float_column_cannot_hold_is_refused(wh, tmp_path):
    columns = {"x": "FLOAT", "y": "DOUBLE"}
    good = write_csv(tmp_path / "good.csv", "x,y", "0.1,0.1", "16777216,9007199254740992")
    assert load_file(wh, "raw.f", good, columns=columns) == 2
    stored = wh.execute("SELECT CAST(x AS VARCHAR), y FROM raw.f ORDER BY y").fetchall()
    assert stored == [("0.1", 0.1), ("16777216.0", 9007199254740992.0)]

    bad = write_csv(tmp_path / "bad.csv", "x,y", "0.5,0.5", "16777217,1")  # 2**24 + 1
    message = refused(wh, "raw.f", bad)
    names_row(message, 2, "x", "'16777217'")
    assert "cannot be stored as FLOAT without changing it" in message


def test_refusal_names_the_first_bad_row_and_counts_the_others(typed, tmp_path):
    path = csv_with(tmp_path, "amount", "1.10", "0.001", "5", "99.999")
    message = refused(typed, "raw.t", path)
    names_row(message, 3, "amount", "'0.001'")
    assert "1 more row(s) of this column have the same problem" in message
    assert "at most 2 decimal places" in message


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("id", ("2", "2.0", "+0003", "-0"), [2, 2, 3, 0]),
        (
            "amount",
            ("12.34", "12.340", ".5", "-0.50", "0012"),
            ["12.34", "12.34", "0.50", "-0.50", "12.00"],
        ),
        ("day", ("2024-01-03", "2024-01-03 00:00:00"), [dt.date(2024, 1, 3)] * 2),
    ],
)
def test_values_that_convert_exactly_are_accepted(typed, tmp_path, column, values, expected):
    assert load_file(typed, "raw.t", csv_with(tmp_path, column, *values)) == 1 + len(values)
    stored = typed.execute(f"SELECT {column} FROM raw.t ORDER BY rowid").fetchall()[1:]
    if column == "amount":
        expected = [D(e) for e in expected]
    assert [value for (value,) in stored] == expected


def test_parquet_values_that_would_change_are_refused(typed, tmp_path):
    path = write_parquet(
        tmp_path / "t.parquet",
        "SELECT * FROM (VALUES "
        "(7, 7, DATE '2024-01-02', 12.34, '550e8400-e29b-41d4-a716-446655440000', 'ok'), "
        "(8, 8, DATE '2024-01-02', 12.34, '550e8400-e29b-41d4-a716-446655440000', 'ok'), "
        "(1.5, 9, DATE '2024-01-02', 12.34, '550e8400-e29b-41d4-a716-446655440000', 'ok')"
        ") AS v(id, small, day, amount, ref, note)",
    )
    with duckdb.connect() as other:  # the file's id column is a DECIMAL(p,1): 7.0, 8.0, 1.5
        id_type = other.execute(f"DESCRIBE SELECT id FROM '{path}'").fetchone()[1]
    assert re.fullmatch(r"DECIMAL\(\d+,1\)", id_type), id_type
    message = refused(typed, "raw.t", path)
    names_row(message, 3, "id", "1.5")
    assert rows(typed, "raw.t") == PREVIOUS

    double = write_parquet(tmp_path / "d.parquet", "SELECT 1.5::DOUBLE AS n")
    typed.execute("CREATE TABLE raw.n (n BIGINT)")
    names_row(refused(typed, "raw.n", double), 1, "n", "DOUBLE 1.5")

    stamp = write_parquet(tmp_path / "s.parquet", "SELECT TIMESTAMP '2024-01-02 13:00:00' AS d")
    typed.execute("CREATE TABLE raw.d (d DATE)")
    names_row(refused(typed, "raw.d", stamp), 1, "d", "TIMESTAMP 2024-01-02 13:00:00")

    cents = write_parquet(tmp_path / "c.parquet", "SELECT 12.345::DECIMAL(10,3) AS a")
    typed.execute("CREATE TABLE raw.a (a DECIMAL(12,2))")
    names_row(refused(typed, "raw.a", cents), 1, "a", "DECIMAL(10,3) 12.345")


# ------------------------------------------------------------------------------------------
# Required columns
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["id", "note"])
def test_an_empty_required_value_is_refused(typed, tmp_path, column):
    path = csv_with(tmp_path, column, "")
    message = refused(typed, "raw.t", path, required=("id", "note"))
    assert f"data row 2, column {column} is empty, and {column} is required" in message
    assert rows(typed, "raw.t") == PREVIOUS


def test_an_empty_value_loads_as_null_when_not_required(typed, tmp_path):
    assert load_file(typed, "raw.t", csv_with(tmp_path, "amount", ""), required=("id",)) == 2
    assert typed.execute("SELECT count(*) FROM raw.t WHERE amount IS NULL").fetchone()[0] == 1


def test_a_null_in_a_required_parquet_column_is_refused(wh, tmp_path):
    path = write_parquet(tmp_path / "k.parquet", "SELECT * FROM (VALUES (1), (NULL)) AS v(k)")
    message = refused(wh, "raw.k", path, required=["k"])
    assert "data row 2, column k is empty, and k is required" in message


# ------------------------------------------------------------------------------------------
# The file itself
# ------------------------------------------------------------------------------------------


def test_a_missing_file_is_refused_naming_the_path(wh, tmp_path):
    path = tmp_path / "nowhere" / "orders.csv"
    message = refused(wh, "raw.orders", path)
    assert str(path) in message and "no such file" in message


@pytest.mark.parametrize("name", ["orders.json", "orders.xlsx", "orders"])
def test_another_suffix_is_refused_naming_it_and_the_fix(wh, tmp_path, name):
    path = write_csv(tmp_path / name, "a", "1")
    message = refused(wh, "raw.orders", path)
    suffix = Path(name).suffix
    assert (f"suffix {suffix!r}" if suffix else "no suffix") in message
    assert ".parquet" in message and ".csv" in message


def test_columns_must_match_the_table_exactly(typed, tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        "id,small,day,amount,ref,Note,extra",
        "7,7,2024-01-02,1,550e8400-e29b-41d4-a716-446655440000,ok,x",
    )
    message = refused(typed, "raw.t", path)
    assert "missing ['note'], unexpected ['Note', 'extra']" in message
    assert rows(typed, "raw.t") == PREVIOUS


def test_declared_columns_must_match_the_file(wh, tmp_path):
    path = write_csv(tmp_path / "a.csv", "a,b", "1,2")
    message = refused(wh, "raw.a", path, columns={"a": "BIGINT", "c": "BIGINT"})
    assert "missing ['c'], unexpected ['b']" in message


@pytest.mark.parametrize("table", ["orders", "raw.orders.x", "raw.order-s", "raw;drop.x"])
def test_a_table_name_must_be_schema_qualified_plain_names(wh, tmp_path, table):
    path = write_csv(tmp_path / "a.csv", "a", "1")
    with pytest.raises(LoadError, match="schema-qualified"):
        load_file(wh, table, path)


def test_no_line_of_a_csv_is_skipped_or_taken_as_a_comment(wh, tmp_path):
    path = write_csv(tmp_path / "k.csv", "k,n", "#1,1", '"two\nlines",2', "3,3")
    assert load_file(wh, "raw.k", path, columns={"k": "VARCHAR", "n": "BIGINT"}) == 3
    assert rows(wh, "raw.k") == [("#1", 1), ("3", 3), ("two\nlines", 2)]


def test_a_csv_that_does_not_parse_is_refused(wh, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\n1,caf\u00e9\n".encode("latin-1"))  # not UTF-8
    message = refused(wh, "raw.r", path)
    assert f"{path}: DuckDB cannot read it as CSV" in message


def test_a_csv_with_ragged_lines_is_refused(wh, tmp_path):
    # No dialect splits every line the same way, so DuckDB reads one column named "a,b".
    path = write_csv(tmp_path / "ragged.csv", "a,b", "1,2", "3,4,5", "6,7")
    assert "'a,b' is not a plain SQL name" in refused(wh, "raw.r", path)
    assert "unexpected ['a,b']" in refused(wh, "raw.r", path, columns={"a": "INT", "b": "INT"})


# ------------------------------------------------------------------------------------------
# Row numbers and atomicity
# ------------------------------------------------------------------------------------------


def test_row_numbers_follow_the_file_in_a_large_parallel_read(wh, tmp_path):
    """~40 MB, so DuckDB reads the CSV in several chunks on several threads."""
    wh.execute("SET threads = 4")
    pad = "x" * 120
    lines = ["id,note"] + [f"{i},{pad}" for i in range(1, 300_001)]
    lines[3] = '3,"quoted\nover two lines"'  # one data row, two lines
    lines[250_001] = f"250001.5,{pad}"  # the 250001st data row
    lines[280_000] = f"280000.5,{pad}"
    path = write_csv(tmp_path / "big.csv", *lines)
    assert path.stat().st_size > 35_000_000
    message = refused(wh, "raw.big", path, columns={"id": "BIGINT", "note": "VARCHAR"})
    names_row(message, 250_001, "id", "'250001.5'")
    assert "1 more row(s) of this column have the same problem" in message

    lines[250_001], lines[280_000] = f"250001,{pad}", f"280000,{pad}"
    assert load_file(wh, "raw.big", write_csv(path, *lines)) == 300_000
    out_of_order = wh.execute(
        "SELECT count(*) FROM (SELECT id, row_number() OVER (ORDER BY rowid) AS n FROM raw.big) "
        "WHERE id <> n"
    ).fetchone()[0]
    assert out_of_order == 0
    assert wh.execute("SELECT note FROM raw.big WHERE id = 3").fetchone()[0] == (
        "quoted\nover two lines"
    )


def test_a_failure_while_writing_keeps_the_previous_rows(wh, tmp_path):
    wh.execute("CREATE SCHEMA raw")
    wh.execute("CREATE TABLE raw.keys (k VARCHAR PRIMARY KEY)")
    wh.execute("INSERT INTO raw.keys VALUES ('O000000001'), ('O000000002')")
    path = write_csv(tmp_path / "k.csv", "k", "O000000042", "O000000042")
    with pytest.raises(duckdb.ConstraintException):
        load_file(wh, "raw.keys", path)
    assert rows(wh, "raw.keys") == [("O000000001",), ("O000000002",)]
    assert not wh.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'load_stage_%'"
    ).fetchone()[0]
    # the connection is usable again and a good file loads
    assert load_file(wh, "raw.keys", write_csv(path, "k", "O000000042")) == 1


def test_a_refused_first_load_creates_nothing(wh, tmp_path):
    path = write_csv(tmp_path / "a.csv", "a", "1.5")
    message = refused(wh, "fresh.a", path, columns={"a": "BIGINT"})
    names_row(message, 1, "a", "'1.5'")
    assert not wh.execute(
        "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'fresh'"
    ).fetchone()[0]


def test_message_shape(typed, tmp_path):
    message = refused(typed, "raw.t", csv_with(tmp_path, "id", "1.5"))
    assert re.fullmatch(
        r".*t\.csv: data row 2, column id: '1\.5' cannot be stored as BIGINT without changing "
        r"it \(.+\)\. Fix: .+\. Nothing was loaded\.",
        message,
    ), message
