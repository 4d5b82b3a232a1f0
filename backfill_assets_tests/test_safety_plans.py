"""Safety of plan files (issue 15): nothing in a plan can reach outside its model.

Each test copies the shipped ``daily_revenue`` plan folder into ``tmp_path``, plants one hostile
or malformed thing in it, and checks that loading refuses it with a ``PlanError`` naming the
file, the field and the fix; or that a run, which reads the SQL files again, cannot be used to
write outside the model or read a file. Every DuckDB here is a real file under ``tmp_path``.
"""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from backfill_assets.build import BuildError, build_window
from backfill_assets.catalog import load_catalog, load_checked, plan_files
from backfill_assets.component.models import build_model_asset
from backfill_assets.component.resources import Warehouse, session
from backfill_assets.example.generator import generate
from backfill_assets.plan import Plan, load_plan, sql_sandbox
from backfill_assets.publish import ensure_log
from backfill_assets_tests.test_plan import assert_refused, copy_plan, edit_sql, mutate, refusal

pytestmark = pytest.mark.reliability

# The SQL files of the shipped plan, one per kind, and the field that names each.
SQL_FIELDS = {
    "sql/v2.sql": "versions[v2].sql",
    "sql/source_slice.sql": "source_slice",
    "sql/rule_duplicates_removed.sql": "checks.reconciliation.explained_differences"
    "[duplicates_removed].sql",
    "sql/ri_refund_orders_exist.sql": "checks.referential_integrity[refund_orders_exist].sql",
}
ONE_QUERY = "is not exactly one read-only query"
SECRET = "s3cr3t-not-for-plans"


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """A valid copy of the shipped daily_revenue plan, ready to be broken."""
    return copy_plan(tmp_path / "daily_revenue")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file no plan may read (and the same as a CSV file beside it, ``secret.csv``)."""
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    path.with_suffix(".csv").write_text(f"value\n{SECRET}\n")
    return path


def seed_promotions(warehouse: Path) -> int:
    """A warehouse whose append-only promotions log holds one row; returns the row count."""
    with duckdb.connect(str(warehouse)) as conn:
        ensure_log(conn)
        conn.execute(
            "INSERT INTO backfill.promotions VALUES ('daily_revenue', 'promote', 'legacy', NULL, "
            "'someone', 'first publication', 'run-0', '{}', TIMESTAMP '2024-01-01 00:00:00')"
        )
        return conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0]


def promotions(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse)) as conn:
        return conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0]


@pytest.fixture
def warehouse(warehouse_file: Path) -> Path:
    """An existing, empty warehouse file."""
    duckdb.connect(str(warehouse_file)).close()
    return warehouse_file


def undeclare_columns(path: Path) -> None:
    """Drop the sources' declared columns: without a warehouse, the SQL cannot be bound."""
    mutate(path, lambda data: [source.pop("columns") for source in data["sources"]])


# --- 5. plan SQL is exactly one read-only query ------------------------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["bound", "unbound"])
@pytest.mark.parametrize("relative", list(SQL_FIELDS))
def test_sql_closing_the_wrapper_to_add_statements_is_refused_at_load(
    tmp_path: Path, plan_file: Path, warehouse_file: Path, relative: str, declared: bool
) -> None:
    """The project wraps plan SQL as ``DESCRIBE (<sql>)`` and ``SELECT * FROM (<sql>)``; a file
    that closes the parenthesis would run its own statements. The file on its own is not one
    query, whether or not the SQL can be bound at load."""
    copied = tmp_path / "copied.csv"
    (plan_file.parent / relative).write_text(
        "SELECT 1) ; DELETE FROM backfill.promotions; "
        f"COPY backfill.promotions TO '{copied}'; DESCRIBE (SELECT 1"
    )
    if not declared:
        undeclare_columns(plan_file)
    rows = seed_promotions(warehouse_file)

    message = assert_refused(plan_file, SQL_FIELDS[relative])
    assert ONE_QUERY in message and str(plan_file.parent / relative) in message
    catalog_message = refusal(
        lambda: load_checked(plan_file, plan_files(tmp_path), str(warehouse_file))
    )
    assert ONE_QUERY in catalog_message

    assert promotions(warehouse_file) == rows
    assert not copied.exists()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param("SELECT 1 AS x; DELETE FROM backfill.promotions", "2 statements", id="two"),
        pytest.param("DELETE FROM backfill.promotions", "a DELETE statement", id="delete"),
        pytest.param("ATTACH '{tmp}/attached.duckdb' AS stolen", "an ATTACH", id="attach"),
        pytest.param("COPY backfill.promotions TO '{tmp}/copied.csv'", "a COPY", id="copy"),
        pytest.param("EXPORT DATABASE '{tmp}/exported'", "an EXPORT", id="export"),
        pytest.param("INSTALL httpfs", "a LOAD", id="install"),  # DuckDB files it as LOAD
        pytest.param("LOAD httpfs", "a LOAD", id="load"),
        pytest.param("CREATE TABLE backfill.stolen AS SELECT 1 AS x", "a CREATE", id="create"),
        pytest.param("SET enable_external_access = true", "a SET", id="set"),
        pytest.param(
            "WITH gone AS (DELETE FROM backfill.promotions RETURNING *) SELECT * FROM gone",
            "changes data (DELETE)",
            id="delete-in-with",
        ),
        pytest.param("-- nothing but a comment\n", "no statement", id="comment-only"),
    ],
)
def test_sql_that_is_not_one_select_is_refused_at_load(
    tmp_path: Path, plan_file: Path, warehouse_file: Path, payload: str, reason: str
) -> None:
    """Refused by DuckDB's own parser before anything binds or runs, even when the sources
    declare no columns (so that nothing at all could be bound at load)."""
    (plan_file.parent / "sql" / "v2.sql").write_text(payload.format(tmp=tmp_path))
    undeclare_columns(plan_file)
    rows = seed_promotions(warehouse_file)

    message = assert_refused(plan_file, "versions[v2].sql")
    assert ONE_QUERY in message and reason in message
    assert "Fix: write one SELECT" in message
    refusal(lambda: load_checked(plan_file, plan_files(tmp_path), str(warehouse_file)))

    assert promotions(warehouse_file) == rows
    for created in ("attached.duckdb", "copied.csv", "exported"):
        assert not (tmp_path / created).exists()
    with duckdb.connect(str(warehouse_file)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'stolen'"
        ).fetchone() == (0,)


def test_one_select_ending_in_a_semicolon_or_a_line_comment_still_loads(plan_file: Path) -> None:
    """Positive control: a query written the usual way is one query, although the project
    wraps it in parentheses (a final ``;`` or ``-- comment`` would break the wrapping)."""
    for relative, ending in (("sql/v2.sql", ";  -- the end"), ("sql/legacy.sql", "\n-- the end")):
        sql_file = plan_file.parent / relative
        # Not ASCII before the end (DuckDB's tokens count bytes), and no newline after it.
        sql_file.write_text("-- café\n" + sql_file.read_text().rstrip() + ending)
    plan = load_plan(plan_file)
    assert plan.version_sql("v2").endswith("GROUP BY order_date, region\n")
    assert plan.version_sql("legacy").endswith("-- the end\n")


def test_sql_swapped_after_load_to_several_statements_is_refused_when_read(
    plan_file: Path,
) -> None:
    """A run reads the SQL file again; it is checked again, not trusted from the load."""
    plan = load_plan(plan_file)
    (plan_file.parent / "sql" / "v2.sql").write_text(
        "SELECT 1) ; DELETE FROM backfill.promotions; DESCRIBE (SELECT 1"
    )
    message = refusal(lambda: plan.version_sql("v2"))
    assert str(plan_file) in message and "field 'versions[v2].sql'" in message
    assert ONE_QUERY in message and "Fix:" in message


def test_version_sql_reading_a_file_does_not_bind_at_load(plan_file: Path, secret: Path) -> None:
    edit_sql(
        plan_file,
        "sql/v2.sql",
        "AS order_date, region, 1 AS orders",
        f"AS order_date, (SELECT content FROM read_text('{secret}')) AS region, 1 AS orders",
    )
    message = assert_refused(plan_file, "versions[v2].sql")
    assert "file system operations are disabled" in message
    assert SECRET not in message


# What must fail on a connection that runs plan SQL, and the file each would create.
OUTSIDE = [
    pytest.param("SELECT content FROM read_text('{secret}')", None, id="read_text"),
    pytest.param("SELECT * FROM read_csv('{tmp}/secret.csv')", None, id="read_csv"),
    pytest.param("SELECT * FROM '{tmp}/secret.csv'", None, id="replacement-scan"),
    pytest.param("ATTACH '{tmp}/attached.duckdb' AS stolen", "attached.duckdb", id="attach"),
    pytest.param("COPY (SELECT 42 AS x) TO '{tmp}/copied.csv'", "copied.csv", id="copy"),
    pytest.param("INSTALL httpfs", None, id="install"),
    pytest.param("LOAD httpfs", None, id="load"),
    pytest.param("SET enable_external_access = true", None, id="re-enable"),
]


def assert_blocked(conn: duckdb.DuckDBPyConnection, sql: str) -> str:
    try:
        found = conn.execute(sql).fetchall()
    except duckdb.Error as error:
        assert SECRET not in str(error)
        return str(error)
    pytest.fail(f"{sql} ran on a plan SQL connection and returned {found}")


@pytest.mark.parametrize(("statement", "created"), OUTSIDE)
def test_load_time_connection_has_no_file_or_extension_access(
    tmp_path: Path, secret: Path, statement: str, created: str | None
) -> None:
    with sql_sandbox() as conn:
        error = assert_blocked(conn, statement.format(tmp=tmp_path, secret=secret))
    assert "disabled" in error or "Cannot enable external access" in error
    assert created is None or not (tmp_path / created).exists()


@pytest.mark.parametrize(("statement", "created"), OUTSIDE)
def test_run_connection_has_no_file_or_extension_access(
    tmp_path: Path, warehouse: Path, secret: Path, statement: str, created: str | None
) -> None:
    with session(Warehouse(database=str(warehouse))) as conn:
        error = assert_blocked(conn, statement.format(tmp=tmp_path, secret=secret))
        # The connection still writes its own file.
        conn.execute("CREATE TABLE kept AS SELECT 1 AS x")
    assert "disabled" in error or "Cannot enable external access" in error
    assert created is None or not (tmp_path / created).exists()
    with duckdb.connect(str(warehouse)) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]


def test_run_connection_still_spills_to_its_temp_directory(warehouse: Path) -> None:
    """Without external access DuckDB still uses its own temp directory: a temporary table
    larger than the memory limit lives there."""
    with session(Warehouse(database=str(warehouse), memory_limit="64MB")) as conn:
        conn.execute(
            "CREATE TEMP TABLE wide AS "
            "SELECT i, repeat(CAST(i AS VARCHAR), 20) AS pad FROM range(4000000) AS t(i)"
        )
        spilled = conn.execute("SELECT sum(size) FROM duckdb_temporary_files()").fetchone()[0]
        assert conn.execute("SELECT count(DISTINCT pad) FROM wide").fetchone() == (4_000_000,)
    assert spilled and spilled > 64 * 2**20


def seed_sources(warehouse: Path) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        generate(conn, dt.date(2024, 1, 1), dt.date(2024, 1, 3), orders_per_day=20, seed=3)
        ensure_log(conn)


def model_rows(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse)) as conn:
        found = conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'daily_revenue__v2'"
        ).fetchone()[0]
        if not found:
            return 0
        return conn.execute("SELECT count(*) FROM models.daily_revenue__v2").fetchone()[0]


def materialize_v2(plan: Plan, warehouse: Path, instance: dg.DagsterInstance):
    asset = build_model_asset(plan, "v2")
    return dg.materialize(
        [asset],
        partition_key="2024-01-02",
        instance=instance,
        resources={"warehouse": Warehouse(database=str(warehouse))},
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "the run did not fail"
    error = failures[0].step_failure_data.error
    return "\n".join(e.message for e in [error, error.cause] if e is not None)


def test_build_cannot_read_a_file_when_the_version_sql_is_swapped_after_load(
    plan_file: Path, warehouse_file: Path, secret: Path, instance: dg.DagsterInstance
) -> None:
    plan = load_plan(plan_file)
    seed_sources(warehouse_file)
    assert materialize_v2(plan, warehouse_file, instance).success  # positive control
    written = model_rows(warehouse_file)
    edit_sql(
        plan_file,
        "sql/v2.sql",
        "AS order_date, region, 1 AS orders",
        f"AS order_date, (SELECT content FROM read_text('{secret}')) AS region, 1 AS orders",
    )

    result = materialize_v2(plan, warehouse_file, instance)

    assert not result.success
    assert "file system operations are disabled" in failure_message(result)
    assert model_rows(warehouse_file) == written
    with duckdb.connect(str(warehouse_file)) as conn:
        assert conn.execute(
            "SELECT count(*) FROM models.daily_revenue__v2 WHERE region = ?", [SECRET]
        ).fetchone() == (0,)


def test_build_refuses_version_sql_swapped_to_several_statements_after_load(
    tmp_path: Path, plan_file: Path, warehouse_file: Path, instance: dg.DagsterInstance
) -> None:
    plan = load_plan(plan_file)
    seed_sources(warehouse_file)
    rows = seed_promotions(warehouse_file)
    copied = tmp_path / "copied.csv"
    (plan_file.parent / "sql" / "v2.sql").write_text(
        "SELECT 1) ; DELETE FROM backfill.promotions; "
        f"COPY backfill.promotions TO '{copied}'; DESCRIBE (SELECT 1"
    )

    result = materialize_v2(plan, warehouse_file, instance)

    assert not result.success
    assert ONE_QUERY in failure_message(result)
    assert promotions(warehouse_file) == rows
    assert not copied.exists()
    assert model_rows(warehouse_file) == 0


# --- 6. duplicate keys -------------------------------------------------------------------------


def test_duplicate_keys_at_the_end_of_the_file_are_refused_with_their_lines(
    plan_file: Path,
) -> None:
    """A second ``risk: low`` and ``approvers: []`` would silently drop the approval."""
    lines = plan_file.read_text().splitlines()
    risk_line = next(i for i, line in enumerate(lines, 1) if line.startswith("risk:"))
    approvers_line = next(i for i, line in enumerate(lines, 1) if line.startswith("approvers:"))
    plan_file.write_text("\n".join([*lines, "risk: low", "approvers: []"]) + "\n")

    message = assert_refused(plan_file, "risk", "approvers")
    assert f"written twice: line {risk_line} and line {len(lines) + 1}" in message
    assert f"written twice: line {approvers_line} and line {len(lines) + 2}" in message
    assert "Fix: keep one of the two" in message


def test_a_duplicate_key_deep_in_the_plan_is_named_by_its_path(plan_file: Path) -> None:
    text = plan_file.read_text()
    nested = text.replace(
        "    measure: net_revenue\n", "    measure: net_revenue\n    measure: orders\n"
    )
    assert nested != text
    plan_file.write_text(nested)
    message = assert_refused(plan_file, "checks.trend.measure")
    assert "written twice" in message


def test_a_duplicate_key_inside_a_list_item_is_named_by_its_path(plan_file: Path) -> None:
    text = plan_file.read_text()
    doubled = text.replace("    sql: sql/v2.sql\n", "    sql: sql/v2.sql\n    sql: x.sql\n")
    assert doubled != text
    plan_file.write_text(doubled)
    assert_refused(plan_file, "versions.1.sql")


def test_yaml_merge_keys_are_not_duplicates(plan_file: Path) -> None:
    """``<<: *anchor`` then an override is YAML's own way to reuse a mapping."""
    text = plan_file.read_text()
    merged = text.replace(
        "window:\n  start: 2024-01-01", "window:\n  <<: {start: 2023-01-01}\n  start: 2024-01-01"
    )
    assert merged != text
    plan_file.write_text(merged)
    assert load_plan(plan_file).spec.window.start == dt.date(2024, 1, 1)


def test_a_sibling_plan_with_duplicate_keys_is_skipped_by_the_others(tmp_path: Path) -> None:
    """``catalog`` reads sibling plans to compare names and sources; a sibling whose duplicate
    ``name`` would make it look like this plan is refused on its own, and this one loads."""
    first = copy_plan(tmp_path / "a_revenue")
    second = copy_plan(tmp_path / "b_revenue")
    text = second.read_text().replace("name: daily_revenue\n", "name: b_revenue\n", 1)
    second.write_text(text + "name: daily_revenue\n")

    found = load_catalog(tmp_path)

    assert [plan.path for plan in found.plans] == [first]
    message = str(found.errors[second])
    assert str(second) in message and "field 'name': is written twice" in message


# --- 7. physical table names -------------------------------------------------------------------


def test_version_names_equal_ignoring_case_are_refused(plan_file: Path) -> None:
    mutate(
        plan_file,
        lambda data: (data["versions"][1].update(name="Legacy"), data.update(candidate="Legacy")),
    )
    message = assert_refused(plan_file, "versions")
    assert "'legacy' and 'Legacy'" in message and "ignores case" in message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("fct", "orders__v2"), ("fct__orders", "v2"), id="double-underscore"),
        pytest.param(("fct", "Orders__v2"), ("FCT__orders", "v2"), id="and-case"),
    ],
)
def test_plans_writing_the_same_table_are_both_refused(
    tmp_path: Path, first: tuple[str, str], second: tuple[str, str]
) -> None:
    paths = []
    for folder, (name, version) in zip(("a", "b"), (first, second), strict=True):
        path = copy_plan(tmp_path / folder)
        mutate(
            path,
            lambda data, name=name, version=version: (
                data.update(name=name, candidate=version),
                data["versions"][1].update(name=version),
            ),
        )
        paths.append(path)

    found = load_catalog(tmp_path)

    assert found.plans == []
    for path, other in (paths, paths[::-1]):
        message = str(found.errors[path])
        assert "field 'versions'" in message and "models.fct__orders__v2" in message.lower()
        assert str(other) in message and "Fix:" in message


def test_plan_names_equal_ignoring_case_are_both_refused(tmp_path: Path) -> None:
    first = copy_plan(tmp_path / "a")
    second = copy_plan(tmp_path / "b")
    mutate(second, lambda data: data.update(name="Daily_Revenue"))

    found = load_catalog(tmp_path)

    assert found.plans == []
    for path, other in ((first, second), (second, first)):
        message = str(found.errors[path])
        assert "field 'name'" in message and str(other) in message and "ignores case" in message


# --- 8. duplicate measures and groups ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "repeated"),
    [
        ("measures", ["orders", "net_revenue", "orders"], "['orders']"),
        ("by", ["month", "region", "region"], "['region']"),
        ("by", ["month", "Region", "region"], "['region']"),
    ],
)
def test_repeated_reconciliation_entries_are_refused(
    plan_file: Path, key: str, value: list[str], repeated: str
) -> None:
    mutate(plan_file, lambda data: data["checks"]["reconciliation"].update({key: value}))
    message = assert_refused(plan_file, f"checks.reconciliation.{key}")
    assert f"repeats {repeated}" in message


# --- 9. measures must be numbers ---------------------------------------------------------------


def cast_net_revenue_to_text(plan_file: Path) -> None:
    for relative in ("sql/legacy.sql", "sql/v2.sql"):
        edit_sql(
            plan_file,
            relative,
            "AS DECIMAL(18, 2)) AS net_revenue",
            "AS VARCHAR) AS net_revenue",
        )


def test_a_measure_returned_as_text_is_refused_at_load(plan_file: Path) -> None:
    cast_net_revenue_to_text(plan_file)
    message = assert_refused(
        plan_file, "checks.reconciliation.measures[net_revenue]", "checks.trend.measure"
    )
    assert "net_revenue is VARCHAR in the versions' output; a measure must be a number" in message
    assert "Fix: cast the measure to a number in every version's SQL" in message


def test_a_measure_returned_as_text_is_refused_at_build(
    plan_file: Path, warehouse_file: Path
) -> None:
    plan = load_plan(plan_file)
    cast_net_revenue_to_text(plan_file)
    with duckdb.connect(str(warehouse_file)) as conn:
        generate(conn, dt.date(2024, 1, 1), dt.date(2024, 1, 3), orders_per_day=20, seed=3)
        try:
            build_window(conn, plan, "v2", dt.date(2024, 1, 1), dt.date(2024, 1, 4), "run-1")
        except BuildError as error:
            message = str(error)
        else:
            pytest.fail("the build wrote a text measure")
        assert conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'daily_revenue__v2'"
        ).fetchone() == (0,)
    assert "checks.reconciliation.measures[net_revenue]" in message and "VARCHAR" in message


# --- 10. malformed files -----------------------------------------------------------------------


def _bomb() -> str:
    """Nine levels of nine aliases: a billion values once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join([*lines, "downstream: *a8", ""])


MALFORMED = [
    pytest.param("name: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested", id="deep-lists"),
    pytest.param(
        "checks:\n" + "".join(" " * i + "a:\n" for i in range(1, 2_000)), "nested", id="deep-maps"
    ),
    pytest.param(_bomb(), "aliases", id="alias-bomb"),
    pytest.param("name: !!python/object/apply:os.system ['touch pwned']\n", "tag", id="python-tag"),
    pytest.param(bytes(range(256)) * 8, "UTF-8", id="binary"),
    pytest.param("name: a\x00b\n", "unacceptable character", id="nul-byte"),
    pytest.param("", "empty", id="empty"),
    pytest.param("# only a comment\n", "empty", id="comment-only"),
    pytest.param("- name: daily_revenue\n", "a list", id="top-level-list"),
    pytest.param("daily_revenue\n", "a str", id="top-level-text"),
    pytest.param("name: a\n---\nname: b\n", "single document", id="two-documents"),
]


@pytest.mark.parametrize(("content", "reason"), MALFORMED)
def test_a_malformed_plan_file_is_a_plan_error_naming_the_file(
    tmp_path: Path, plan_file: Path, content: str | bytes, reason: str
) -> None:
    if isinstance(content, bytes):
        plan_file.write_bytes(content)
    else:
        plan_file.write_text(content)

    started = time.monotonic()
    message = refusal(lambda: load_plan(plan_file))
    assert time.monotonic() - started < 5

    assert message.startswith(f"Plan {plan_file} cannot be loaded")
    assert reason in message and "Fix:" in message
    assert not (Path.cwd() / "pwned").exists()


@pytest.mark.parametrize(("content", "reason"), MALFORMED)
def test_a_malformed_sibling_plan_fails_alone(
    tmp_path: Path, content: str | bytes, reason: str
) -> None:
    """``catalog`` reads every sibling plan; a malformed one is skipped there and refused by its
    own load, and the good plan loads."""
    good = copy_plan(tmp_path / "a_revenue")
    bad = copy_plan(tmp_path / "b_broken")
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)

    found = load_catalog(tmp_path)

    assert [plan.path for plan in found.plans] == [good]
    assert set(found.errors) == {bad}
    assert str(found.errors[bad]).startswith(f"Plan {bad} cannot be loaded")
    assert reason in str(found.errors[bad])


def test_yaml_anchors_within_reason_still_load(plan_file: Path) -> None:
    """Positive control for the alias limit: reusing a value with an anchor is fine."""
    data = yaml.safe_load(plan_file.read_text())
    text = plan_file.read_text().replace(
        f"owner: {data['owner']}", f"owner: &owner {data['owner']}"
    )
    plan_file.write_text(text + "rollback_contact: *owner\n")
    message = assert_refused(plan_file, "rollback_contact")
    assert "is not a plan field" in message
