"""Load one source table from a Parquet or CSV file into DuckDB, exactly or not at all.

``load_file(conn, "raw.flights", Path("flights.csv"))`` replaces every row of ``raw.flights``
with the rows of the file, in one transaction, and returns the number of rows the table then
holds. Either every value of the file lands unchanged, or the load is refused with a
``LoadError`` and the table keeps exactly the rows it had.

The types the values must fit are, in this order of preference:

1. the columns and types of the table, when it exists already;
2. the ``columns`` argument (column -> DuckDB type), when the table does not exist yet;
3. the file's own types: Parquet types as stored, CSV types as DuckDB's ``read_csv`` detects
   them over the whole file. A ``TIMESTAMP WITH TIME ZONE`` becomes a UTC ``TIMESTAMP``.

The schema and table are created when missing. The file must have exactly the table's columns,
in any order. A CSV file needs a header row; it is read as text, so every value is checked as
written, and an empty field is NULL. Its delimiter and quoting are detected, but no line is
ever skipped or taken as a comment.

A value is refused, naming the file's data row (1 = the first row after the header), the
column, the value and the fix, when storing it would change it:

- a fraction into an integer column (``1.5`` would be rounded into another key; ``2`` and
  ``2.0`` are fine), or a number outside the type's range;
- more decimal places than a ``DECIMAL(p,s)`` holds (``12.345`` into ``DECIMAL(12,2)``;
  ``12.340`` is fine), or more digits before the point than it holds;
- a time of day into a ``DATE`` column (``2024-01-02 13:00:00``; ``2024-01-02`` and
  ``2024-01-02 00:00:00`` are fine);
- a timestamp with more fractional digits than the column keeps (text is read to the
  microsecond);
- a number a ``FLOAT`` reads back as another double (``16777217``; ``0.1`` is fine). A
  ``DOUBLE`` column is approximate by declaration and gets the nearest double; declare a
  ``DECIMAL`` where every digit counts;
- a value that is not of the type at all (``abc`` into ``BIGINT``, a malformed UUID or date);
- NULL (an empty CSV field) in a column listed in ``required``.

Text numbers for integer and DECIMAL columns must be plain decimal digits (``1e3`` and
``0x10`` are refused). A text timestamp with a UTC offset or zone is converted to UTC
(``2024-01-02T23:30:00-05:00`` is stored as ``2024-01-03 04:30:00``); one without is taken as
UTC as written. None of this depends on the connection's ``TimeZone`` setting. A typed Parquet
value whose type differs from the column's must come back unchanged when converted back to
its own type (``DOUBLE 1.5`` into ``BIGINT`` is refused; ``INTEGER`` into ``VARCHAR`` is fine).

Every check is one set-based query per column over a staged copy of the file.
"""

import uuid
from collections.abc import Sequence
from pathlib import Path

import duckdb

from backfill_assets.warehouse import qualified, quote, transaction

ROW = "__load_row"  # the file's 1-based data row number, added when staging

# DuckDB's own names (``typeof``) of the types each rule applies to.
INTEGER_TYPES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    }
)
TIMESTAMPTZ = "TIMESTAMP WITH TIME ZONE"
TIME_TYPES = frozenset(
    {"DATE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", TIMESTAMPTZ}
)
FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE"})

# A text timestamp names its zone when its time of day is followed by Z, an offset or a name.
HAS_ZONE = r":\d{2}(\.\d*)?\s*[A-Za-z+-]"
# Non-zero fractional seconds past the sixth digit: lost when read to the microsecond.
SUB_MICROSECOND = r":\d{2}\.\d{6}\d*[1-9]"

# The CSV dialect is detected, except what would silently drop lines: no skipped lines, no
# comment lines, and the first line is always the header.
CSV_OPTIONS = "header = true, skip = 0, comment = ''"


class LoadError(ValueError):
    """A file that cannot be loaded without changing its values; nothing was written."""


def load_file(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    path: Path,
    columns: dict[str, str] | None = None,
    required: Sequence[str] = (),
) -> int:
    """Replace the rows of ``table`` with the rows of a Parquet or CSV file, exactly.

    Args:
        conn: A connection to the warehouse; it must not be inside a transaction.
        table: The schema-qualified table, e.g. ``raw.flights``.
        path: A ``.parquet`` or ``.csv`` file (with a header row).
        columns: Column -> DuckDB type, used when the table does not exist yet.
        required: Columns that may never be NULL (an empty CSV field is NULL).

    Returns:
        The number of rows in the table after the load.

    Raises:
        LoadError: The file is missing, unreadable, has other columns than the table, or holds
            a value that would change when stored; the table was not changed.
    """
    schema, name = _table_name(table)
    path = Path(path)
    required = [required] if isinstance(required, str) else list(required)  # "id" is one name
    kind = _file_kind(path)
    target_sql = qualified(schema, name)
    stage = f"load_stage_{uuid.uuid4().hex}"
    with transaction(conn):
        file_types = _stage(conn, stage, path, kind)
        target = _target_types(conn, schema, name, columns, path, kind, file_types)
        _check_columns(path, table, list(file_types), list(target), required)
        for column, target_type in target.items():
            _check_values(conn, stage, path, column, file_types[column], target_type, required)
        names = ", ".join(quote(column) for column in target)
        values = ", ".join(
            _conversion(quote(column), file_types[column], typ)[0] for column, typ in target.items()
        )
        definition = ", ".join(f"{quote(column)} {typ}" for column, typ in target.items())
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {target_sql} ({definition})")
        conn.execute(f"DELETE FROM {target_sql}")
        conn.execute(
            f"INSERT INTO {target_sql} ({names}) SELECT {values} FROM {stage} ORDER BY {ROW}"
        )
        conn.execute(f"DROP TABLE {stage}")
        count = conn.execute(f"SELECT count(*) FROM {target_sql}").fetchone()[0]
    return count


def _table_name(table: str) -> tuple[str, str]:
    """``("raw", "flights")`` from ``raw.flights``; both parts must be plain SQL names."""
    parts = table.split(".")
    try:
        if len(parts) != 2:
            raise ValueError(table)
        qualified(*parts)
    except ValueError:
        raise LoadError(
            f"{table!r} is not a schema-qualified table name. Fix: name it as schema.table with "
            "letters, digits and underscores, e.g. raw.flights."
        ) from None
    return parts[0], parts[1]


def _file_kind(path: Path) -> str:
    """``parquet`` or ``csv`` from the suffix; the file must exist."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("parquet", "csv"):
        suffix = f"the suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise LoadError(
            f"{path}: cannot load a file with {suffix}. Fix: export it as Parquet (.parquet) or "
            "as CSV with a header row (.csv)."
        )
    if not path.is_file():
        raise LoadError(f"{path}: no such file. Fix: check the path ({path.resolve()}).")
    return kind


def _read(conn: duckdb.DuckDBPyConnection, sql: str, path: Path, kind: str) -> list[tuple]:
    """Run a statement that reads the file; DuckDB's reading errors become a ``LoadError``."""
    try:
        return conn.execute(sql, {"path": str(path)}).fetchall()
    except duckdb.Error as error:
        first_paragraph = str(error).strip().split("\n\n")[0]  # before DuckDB's suggestions
        detail = " ".join(first_paragraph.split())[:300]
        shape = " with a header row and as many fields on every line" if kind == "csv" else ""
        raise LoadError(
            f"{path}: DuckDB cannot read it as {kind.upper()} ({detail}). Fix: check that it "
            f"is a valid {kind.upper()} file{shape}. Nothing was loaded."
        ) from error


def _stage(conn: duckdb.DuckDBPyConnection, stage: str, path: Path, kind: str) -> dict[str, str]:
    """Copy the file into a temporary table with its data row numbers; return its column types.

    CSV values stay text as written. Parquet keeps its types, except that a TIMESTAMP WITH TIME
    ZONE becomes its UTC TIMESTAMP, so no later cast depends on the session's TimeZone.
    """
    if kind == "csv":
        # row_number() over the scan is a streaming window: it numbers the rows in file order.
        source = f"SELECT row_number() OVER () AS {ROW}, * FROM {_csv_reader(all_varchar=True)}"
    else:
        reader = "read_parquet($path, file_row_number = true)"
        described = _read(conn, f"DESCRIBE SELECT * FROM {reader}", path, kind)
        columns = [f"file_row_number + 1 AS {ROW}"]
        for column, typ, *_ in described:
            if column == "file_row_number":
                continue
            value = _quote_any(column)
            columns.append(f"timezone('UTC', {value}) AS {value}" if typ == TIMESTAMPTZ else value)
        source = f"SELECT {', '.join(columns)} FROM {reader}"
    _read(conn, f"CREATE TEMP TABLE {stage} AS {source}", path, kind)
    staged = conn.execute(f"DESCRIBE {stage}").fetchall()
    return {column: typ for column, typ, *_ in staged if column != ROW}


def _csv_reader(all_varchar: bool) -> str:
    """The ``read_csv`` call for ``$path``: as text, or with the types detected over the file."""
    typing = "all_varchar = true" if all_varchar else "sample_size = -1"
    return f"read_csv($path, {CSV_OPTIONS}, {typing})"


def _quote_any(identifier: str) -> str:
    """Quote any column name of a file (only to read it; loaded names pass ``quote``)."""
    return '"' + identifier.replace('"', '""') + '"'


def _target_types(
    conn: duckdb.DuckDBPyConnection,
    schema: str,
    name: str,
    columns: dict[str, str] | None,
    path: Path,
    kind: str,
    file_types: dict[str, str],
) -> dict[str, str]:
    """Column -> DuckDB type the values must fit: the table's, else ``columns``, else the file's."""
    existing = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, name],
    ).fetchall()
    if existing:
        return dict(existing)
    if columns:
        return {column: _canonical_type(conn, column, typ) for column, typ in columns.items()}
    if kind == "csv":
        detected = _read(
            conn, f"DESCRIBE SELECT * FROM {_csv_reader(all_varchar=False)}", path, kind
        )
        file_types = {column: typ for column, typ, *_ in detected}
    return {
        column: "TIMESTAMP" if typ == TIMESTAMPTZ else typ for column, typ in file_types.items()
    }


def _canonical_type(conn: duckdb.DuckDBPyConnection, column: str, typ: str) -> str:
    """DuckDB's own name of a declared type (``int`` -> ``INTEGER``), so the rules recognise it."""
    if ";" in typ or "--" in typ:
        raise LoadError(f"columns[{column!r}] = {typ!r} is not a DuckDB type.")
    try:
        return conn.execute(f"SELECT typeof(CAST(NULL AS {typ}))").fetchone()[0]
    except duckdb.Error as error:
        raise LoadError(
            f"columns[{column!r}] = {typ!r} is not a DuckDB type ({str(error).splitlines()[0]}). "
            "Fix: declare a type such as BIGINT, VARCHAR, DECIMAL(12,2), DATE or TIMESTAMP."
        ) from error


def _check_columns(
    path: Path, table: str, found: list[str], expected: list[str], required: Sequence[str]
) -> None:
    """The file must have exactly the table's columns (any order), all plain SQL names."""
    unknown_required = [column for column in required if column not in expected]
    if unknown_required:
        raise LoadError(
            f"required names {unknown_required}, which are not columns of {table} {expected}. "
            "Fix: list only columns of the table as required."
        )
    missing = [column for column in expected if column not in found]
    unexpected = [column for column in found if column not in expected]
    if missing or unexpected:
        raise LoadError(
            f"{path}: the columns do not match {table}: missing {missing}, unexpected "
            f"{unexpected}. Fix: give the file exactly the columns {expected} (in any order), "
            "named exactly so, or change the table's columns first."
        )
    for column in expected:
        try:
            quote(column)
        except ValueError:
            raise LoadError(
                f"{path}: the column name {column!r} is not a plain SQL name. Fix: rename it to "
                "letters, digits and underscores, in the file and the table."
            ) from None


def _check_values(
    conn: duckdb.DuckDBPyConnection,
    stage: str,
    path: Path,
    column: str,
    source_type: str,
    target_type: str,
    required: Sequence[str],
) -> None:
    """Refuse the column's first value that would change when stored, or its first NULL if
    the column is required; one query over the staged file."""
    value = quote(column)
    _, exact = _conversion(value, source_type, target_type)
    bad = f"{value} IS NOT NULL AND NOT coalesce({exact}, false)"
    empty = f"{value} IS NULL" if column in required else "false"
    n_bad, bad_row, bad_value, n_empty, empty_row = conn.execute(
        f"SELECT count(*) FILTER (WHERE {bad}), min({ROW}) FILTER (WHERE {bad}), "
        f"arg_min(CAST({value} AS VARCHAR), {ROW}) FILTER (WHERE {bad}), "
        f"count(*) FILTER (WHERE {empty}), min({ROW}) FILTER (WHERE {empty}) FROM {stage}"
    ).fetchone()
    if n_bad:
        why, fix = _explain(target_type)
        shown = f"{bad_value!r}" if source_type == "VARCHAR" else f"{source_type} {bad_value}"
        raise LoadError(
            f"{path}: data row {bad_row}, column {column}: {shown} cannot be stored as "
            f"{target_type} without changing it ({why}). Fix: {fix}.{_others(n_bad)} "
            "Nothing was loaded."
        )
    if n_empty:
        raise LoadError(
            f"{path}: data row {empty_row}, column {column} is empty, and {column} is required. "
            f"Fix: fill it in, or drop that row from the file.{_others(n_empty)} "
            "Nothing was loaded."
        )


def _others(count: int) -> str:
    """How many more rows of the column share the problem."""
    return f" {count - 1} more row(s) of this column have the same problem." if count > 1 else ""


def _conversion(value: str, source_type: str, target_type: str) -> tuple[str, str]:
    """SQL for the stored value, and for "it is exactly the file's value" (when not NULL).

    The stored value is re-read losslessly and compared with what the file holds: text as a
    normalised decimal or a UTC instant, a typed value by converting it back to its own type.
    """
    converted = f"TRY_CAST({value} AS {target_type})"
    if source_type == target_type:
        return value, "true"
    if target_type == "VARCHAR":
        return converted, f"{converted} IS NOT NULL"
    if source_type != "VARCHAR":
        if target_type == TIMESTAMPTZ:
            converted = f"timezone('UTC', TRY_CAST({value} AS TIMESTAMP))"
            return converted, f"TRY_CAST(timezone('UTC', {converted}) AS {source_type}) = {value}"
        return converted, f"TRY_CAST({converted} AS {source_type}) = {value}"
    if target_type in INTEGER_TYPES or target_type.startswith("DECIMAL("):
        written, stored = _plain_number(value), _plain_number(f"CAST({converted} AS VARCHAR)")
        return converted, f"{written} = {stored}"
    if target_type in TIME_TYPES:
        instant = _utc_instant(value)
        if target_type == TIMESTAMPTZ:
            converted = f"timezone('UTC', {instant})"
            back = f"timezone('UTC', {converted})"
        else:
            converted = f"TRY_CAST({instant} AS {target_type})"
            back = f"CAST({converted} AS TIMESTAMP)"
        precise = f"NOT regexp_matches({value}, '{SUB_MICROSECOND}')"
        return converted, f"{precise} AND {back} = {instant}"
    if target_type in FLOAT_TYPES:
        # A float holds the written number when its shortest text reads back as the same double.
        return converted, (
            f"TRY_CAST(CAST({converted} AS VARCHAR) AS DOUBLE) = TRY_CAST({value} AS DOUBLE)"
        )
    return converted, f"{converted} IS NOT NULL"


def _plain_number(text: str) -> str:
    """SQL normalising decimal text, so equal numbers compare equal: ``+007.50`` -> ``7.5``."""
    steps = (
        (r"^\+", ""),  # no plus sign
        (r"^(-?)\.", r"\10."),  # .5 -> 0.5
        (r"(\.\d*?)0+$", r"\1"),  # no trailing fractional zeros
        (r"\.$", ""),  # no bare point
        (r"^(-?)0+(\d)", r"\1\2"),  # no leading zeros
        (r"^-0$", "0"),  # no negative zero
    )
    sql = f"trim({text})"
    for pattern, replacement in steps:
        sql = f"regexp_replace({sql}, '{pattern}', '{replacement}')"
    return sql


def _utc_instant(text: str) -> str:
    """SQL for the naive UTC TIMESTAMP a text means: its offset applied, else UTC as written.

    DuckDB's cast to TIMESTAMP drops an offset instead of applying it, and its cast to
    TIMESTAMPTZ reads a text without offset in the session's TimeZone; this avoids both.
    """
    return (
        f"CASE WHEN regexp_matches({text}, '{HAS_ZONE}') "
        f"THEN timezone('UTC', TRY_CAST({text} AS {TIMESTAMPTZ})) "
        f"ELSE TRY_CAST({text} AS TIMESTAMP) END"
    )


def _explain(target_type: str) -> tuple[str, str]:
    """Why a value does not fit ``target_type``, and how to fix it."""
    if target_type in INTEGER_TYPES:
        return (
            f"{target_type} holds only whole numbers within its range, written as plain digits; "
            "a fraction would be rounded into another number",
            f"write a whole number such as 2 or 2.0 within the range of {target_type}, or "
            "declare a type that holds the value",
        )
    if target_type.startswith("DECIMAL("):
        precision, scale = (int(part) for part in target_type[8:-1].split(","))
        return (
            f"it holds at most {scale} decimal places and {precision - scale} digits before "
            "the point; the value would be rounded",
            f"write at most {scale} decimal places (round on purpose in the source), or "
            "declare a wider DECIMAL",
        )
    if target_type == "DATE":
        return (
            "a date has no time of day, so a time other than 00:00:00 would be lost",
            "write a date such as 2024-01-02 (or a midnight timestamp), or load the column "
            "as TIMESTAMP",
        )
    if target_type in TIME_TYPES:
        return (
            "timestamps are read to the microsecond, with an offset converted to UTC and none "
            "taken as UTC",
            "write an ISO timestamp such as 2024-01-02 13:00:00 or 2024-01-02T08:00:00-05:00, "
            "within the column's precision",
        )
    if target_type in FLOAT_TYPES:
        return (
            f"{target_type} keeps only {7 if target_type == 'FLOAT' else 15} or so significant "
            "digits, and this number would read back as another one",
            "declare the column as DOUBLE or as a DECIMAL that holds the value",
        )
    return (
        f"it is not a {target_type} value",
        "correct the value in the file, or declare the column with a type that holds it",
    )
