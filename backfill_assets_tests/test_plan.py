"""Plan loading: a broken plan is refused with one PlanError naming the file, the field and a fix.

Every test copies the shipped ``daily_revenue`` plan folder into ``tmp_path``, breaks one thing
(or a few) in ``plan.yaml`` or its SQL files, and checks what the user would read.
"""

import datetime as dt
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from backfill_assets.catalog import SHIPPED_DEFS as PLANS_DIR
from backfill_assets.catalog import load_catalog
from backfill_assets.plan import PlanError, load_plan
from backfill_assets_tests.helpers import plan_named, shipped_plans

SHIPPED_FOLDER = PLANS_DIR / "daily_revenue"

# Every field of a plan file that has no default; removing one must name it.
REQUIRED_FIELDS = [
    "name",
    "description",
    "grain",
    "unique_key",
    "partition_column",
    "partitions",
    "window",
    "sources",
    "versions",
    "baseline",
    "candidate",
    "checks",
    "owner",
    "risk",
    "downstream",
    "rollback",
    "strategy",
]

Mutation = Callable[[dict[str, Any]], None]


class SqlExecuted(AssertionError):
    """Raised by the guard when validation opens a DuckDB connection."""


def copy_plan(destination: Path) -> Path:
    """Copy the shipped daily_revenue plan folder.

    Args:
        destination: The folder to create; it must not exist yet.

    Returns:
        The path of the copied ``plan.yaml``.
    """
    shutil.copytree(SHIPPED_FOLDER, destination)
    return destination / "plan.yaml"


def mutate(path: Path, change: Mutation) -> None:
    """Rewrite a plan file after changing its parsed fields in place.

    Args:
        path: The ``plan.yaml`` to rewrite.
        change: Called with the parsed mapping; it edits the mapping in place.
    """
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_sql(path: Path, relative: str, old: str, new: str) -> None:
    """Replace text in one SQL file beside a plan.

    Args:
        path: The plan's ``plan.yaml``.
        relative: The SQL file, relative to the plan folder.
        old: Text that must occur in the file.
        new: What to write instead of every occurrence of ``old``.
    """
    sql_file = path.parent / relative
    text = sql_file.read_text()
    assert old in text, f"{old!r} is not in {sql_file}; the test no longer breaks anything"
    sql_file.write_text(text.replace(old, new))


def refusal(load: Callable[[], object]) -> str:
    """Run a load that must raise PlanError and return its message.

    The exception is not kept (no ``pytest.raises(...) as``): holding it keeps pydantic's
    validator frames alive until exit, and DuckDB's bindings then print leak warnings.

    Args:
        load: A call such as ``lambda: load_plan(path)``.

    Returns:
        The PlanError message.
    """
    try:
        load()
    except PlanError as error:
        return str(error)
    pytest.fail("expected a PlanError, the plan loaded")


def assert_refused(path: Path, *fields: str) -> str:
    """Load a plan and check it is refused with one message naming exactly these fields.

    Args:
        path: The ``plan.yaml`` to load.
        *fields: The fields the message must name, one problem each.

    Returns:
        The error message, for further assertions.
    """
    message = refusal(lambda: load_plan(path))
    assert str(path) in message
    assert f"({len(fields)} problem(s))" in message, message
    named = re.findall(r"^  - field '([^']*)': .*\. Fix: \S", message, flags=re.MULTILINE)
    assert sorted(named) == sorted(fields), message
    assert message.count("Fix:") == len(fields), message
    return message


def set_item(*keys: str | int, value: Any) -> Mutation:
    """A mutation that sets one (possibly nested) field.

    Args:
        *keys: The path to the field, e.g. ``"window", "start"``.
        value: The new value.

    Returns:
        The mutation.
    """

    def change(data: dict[str, Any]) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """A valid copy of the shipped daily_revenue plan, ready to be broken."""
    return copy_plan(tmp_path / "daily_revenue")


@pytest.fixture
def no_sql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any DuckDB connection fail, so a test can show no SQL ran."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise SqlExecuted("validation opened a DuckDB connection")

    monkeypatch.setattr(duckdb, "connect", refuse)


def today_utc() -> dt.date:
    """Today's UTC date, the day load_plan compares window.end against."""
    return dt.datetime.now(dt.UTC).date()


# --- positive controls -------------------------------------------------------------------------


def test_shipped_plans_load_with_two_versions_each() -> None:
    plans = {plan.name: plan for plan in shipped_plans()}
    assert sorted(plans) == ["daily_revenue", "fct_orders", "monthly_active_customers"]
    for plan in plans.values():
        assert plan.version_names == ["legacy", "v2"]
        assert plan.spec.baseline == "legacy"
        assert plan.spec.candidate == "v2"


def test_copied_plan_loads_unchanged(plan_file: Path) -> None:
    plan = load_plan(plan_file)
    assert plan.path == plan_file
    assert plan.spec == plan_named("daily_revenue").spec


def test_copied_plan_rewritten_by_the_mutation_helper_still_loads(plan_file: Path) -> None:
    mutate(plan_file, lambda data: None)
    assert load_plan(plan_file).spec == plan_named("daily_revenue").spec


def test_valid_plan_binds_its_sql_in_duckdb(plan_file: Path, no_sql: None) -> None:
    # Shows the no_sql guard is effective: a valid plan does reach DuckDB.
    with pytest.raises(SqlExecuted):
        load_plan(plan_file)


# --- missing and unknown fields ----------------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_missing_required_field_is_named(plan_file: Path, field: str) -> None:
    mutate(plan_file, lambda data: data.pop(field))
    message = assert_refused(plan_file, field)
    assert f"field '{field}': is missing" in message


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(set_item("approvers", value=[]), id="empty"),
        pytest.param(lambda data: data.pop("approvers"), id="absent"),
    ],
)
def test_high_risk_plan_without_approvers_names_approvers(
    plan_file: Path, change: Mutation
) -> None:
    mutate(plan_file, change)
    message = assert_refused(plan_file, "approvers")
    assert "high-risk plan needs at least one approver" in message


def test_low_risk_plan_may_have_no_approvers(plan_file: Path) -> None:
    mutate(plan_file, lambda data: data.update(risk="low", approvers=[]))
    assert load_plan(plan_file).spec.approvers == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(set_item("colour", value="blue"), "colour", id="top-level"),
        pytest.param(set_item("window", "colour", value="blue"), "window.colour", id="nested"),
    ],
)
def test_unknown_field_is_named_as_not_a_plan_field(
    plan_file: Path, change: Mutation, field: str
) -> None:
    mutate(plan_file, change)
    message = assert_refused(plan_file, field)
    assert f"field '{field}': is not a plan field" in message


# --- the window --------------------------------------------------------------------------------


def test_impossible_window_date_names_window_start(plan_file: Path) -> None:
    mutate(plan_file, set_item("window", "start", value="2024-13-45"))
    message = assert_refused(plan_file, "window.start")
    assert "valid date" in message


def test_unquoted_impossible_window_date_is_a_plan_error(plan_file: Path) -> None:
    text = plan_file.read_text()
    broken = text.replace("window:\n  start: 2024-01-01", "window:\n  start: 2024-13-45")
    assert broken != text
    plan_file.write_text(broken)
    assert_refused(plan_file, "window.start")


def test_window_end_before_start_names_window(plan_file: Path) -> None:
    mutate(plan_file, set_item("window", "end", value=dt.date(2023, 12, 31)))
    message = assert_refused(plan_file, "window")
    assert "end 2023-12-31 is before start 2024-01-01" in message


def test_window_start_before_partitions_start_names_window_start(plan_file: Path) -> None:
    mutate(plan_file, set_item("window", "start", value=dt.date(2023, 12, 1)))
    message = assert_refused(plan_file, "window.start")
    assert "before partitions.start 2024-01-01" in message


def open_ended(data: dict[str, Any]) -> None:
    data["partitions"].pop("end", None)


@pytest.mark.parametrize("days_ahead", [0, 30], ids=["today", "next-month"])
def test_window_end_not_yet_complete_names_window_end(plan_file: Path, days_ahead: int) -> None:
    end = today_utc() + dt.timedelta(days=days_ahead)
    mutate(plan_file, open_ended)  # partitions that continue up to the last complete one
    mutate(plan_file, set_item("window", "end", value=end))
    message = assert_refused(plan_file, "window.end")
    assert f"the day holding {end} is not complete yet" in message


def test_window_ending_yesterday_loads(plan_file: Path) -> None:
    end = today_utc() - dt.timedelta(days=1)
    mutate(plan_file, open_ended)  # partitions that continue up to the last complete one
    mutate(plan_file, set_item("window", "end", value=end))
    assert load_plan(plan_file).spec.window.end == end


# --- identifiers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "bad"),
    [
        pytest.param(
            set_item("unique_key", value=["order_date; DROP TABLE x", "region"]),
            "unique_key.0",
            "order_date; DROP TABLE x",
            id="unique_key-injection",
        ),
        pytest.param(
            set_item("name", value='daily"revenue'), "name", 'daily"revenue', id="name-quote"
        ),
        pytest.param(
            set_item("partition_column", value="order date"),
            "partition_column",
            "order date",
            id="column-space",
        ),
        pytest.param(
            set_item("versions", 1, "name", value="v2; DROP TABLE x"),
            "versions.1.name",
            "v2; DROP TABLE x",
            id="version-name-injection",
        ),
        pytest.param(
            set_item("checks", "trend", "measure", value="net_revenue--"),
            "checks.trend.measure",
            "net_revenue--",
            id="measure-comment",
        ),
        pytest.param(
            set_item("sources", value=["raw.orders; DROP TABLE x", "raw.refunds"]),
            "sources.0.table",
            "raw.orders; DROP TABLE x",
            id="source-injection",
        ),
    ],
)
def test_identifier_that_is_not_a_plain_sql_name_is_refused_before_any_sql_runs(
    plan_file: Path, no_sql: None, change: Mutation, field: str, bad: str
) -> None:
    mutate(plan_file, change)
    message = assert_refused(plan_file, field)
    assert repr(bad) in message
    assert "plain SQL name" in message or "schema-qualified table name" in message


def test_name_with_trailing_newline_is_not_a_plain_sql_name(plan_file: Path) -> None:
    mutate(plan_file, set_item("name", value="daily_revenue\n"))
    assert_refused(plan_file, "name")


def test_unique_key_column_not_in_model_output_names_unique_key(plan_file: Path) -> None:
    mutate(plan_file, set_item("unique_key", value=["order_date", "country"]))
    message = assert_refused(plan_file, "unique_key")
    assert "['country'] not in the output of the versions" in message


def test_partition_column_that_is_not_a_date_names_partition_column(plan_file: Path) -> None:
    mutate(plan_file, set_item("partition_column", value="region"))
    message = assert_refused(plan_file, "partition_column")
    assert "must be a DATE column for daily partitions, is VARCHAR" in message


# --- SQL files ---------------------------------------------------------------------------------


def test_missing_version_sql_file_names_the_version(plan_file: Path) -> None:
    (plan_file.parent / "sql" / "v2.sql").unlink()
    message = assert_refused(plan_file, "versions[v2].sql")
    assert "cannot read" in message
    assert "v2.sql" in message


def test_version_sql_reading_a_missing_column_does_not_bind(plan_file: Path) -> None:
    edit_sql(plan_file, "sql/v2.sql", "amount", "amount_eur")
    message = assert_refused(plan_file, "versions[v2].sql")
    assert "does not bind" in message
    assert "amount_eur" in message


def test_version_sql_that_is_not_utf8_is_a_plan_error(plan_file: Path) -> None:
    sql_file = plan_file.parent / "sql" / "v2.sql"
    sql_file.write_bytes(sql_file.read_bytes() + "-- café\n".encode("latin-1"))
    assert_refused(plan_file, "versions[v2].sql")


def test_plan_file_that_is_not_utf8_is_a_plan_error(plan_file: Path) -> None:
    plan_file.write_bytes(plan_file.read_bytes() + "# café\n".encode("latin-1"))
    assert "Fix:" in refusal(lambda: load_plan(plan_file))


def test_sql_reading_an_undeclared_column_names_the_version(plan_file: Path) -> None:
    """The version SQL is bound against the declared columns: a column the SQL reads but the
    declaration lacks is refused at load, naming the SQL file's field."""
    mutate(
        plan_file, lambda data: data["sources"][0]["columns"].pop("region")
    )  # raw.orders without region
    message = assert_refused(plan_file, "versions[legacy].sql", "versions[v2].sql")
    assert 'column "region" not found' in message
    assert "declared columns" in message


def test_declared_column_missing_from_columns_names_the_source(plan_file: Path) -> None:
    mutate(plan_file, lambda data: data["sources"][1]["required"].append("refund_reason"))
    message = assert_refused(plan_file, "sources[1].columns")
    assert "['refund_reason']" in message


def test_a_source_declared_twice_is_refused(plan_file: Path) -> None:
    mutate(plan_file, lambda data: data["sources"].append(dict(data["sources"][0])))
    message = assert_refused(plan_file, "sources")
    assert "declared twice" in message


def test_sources_without_columns_or_warehouse_load_unbound(plan_file: Path) -> None:
    """With neither declared columns nor a warehouse table, the SQL cannot be bound at load;
    the plan loads and the build checks it against the warehouse."""
    mutate(plan_file, lambda data: [s.pop("columns") for s in data["sources"]])
    plan = load_plan(plan_file)
    assert [s.table for s in plan.sources] == ["raw.orders", "raw.refunds"]


# --- other field values ------------------------------------------------------------------------


def test_baseline_naming_no_version_names_baseline(plan_file: Path) -> None:
    mutate(plan_file, set_item("baseline", value="v1"))
    message = assert_refused(plan_file, "baseline")
    assert "'v1' is not one of the versions ['legacy', 'v2']" in message


def test_candidate_equal_to_baseline_names_candidate(plan_file: Path) -> None:
    mutate(plan_file, set_item("candidate", value="legacy"))
    message = assert_refused(plan_file, "candidate")
    assert "same version as the baseline" in message


@pytest.mark.parametrize("rate", [1.5, -0.1])
def test_null_rate_outside_zero_to_one_names_null_rates(plan_file: Path, rate: float) -> None:
    mutate(plan_file, set_item("checks", "null_rates", "region", value=rate))
    message = assert_refused(plan_file, "checks.null_rates")
    assert f"region: {rate} is not a rate between 0 and 1" in message


@pytest.mark.parametrize("days", [0, -1, 10_001])
def test_chunk_outside_one_to_10000_names_chunk(plan_file: Path, days: int) -> None:
    mutate(plan_file, set_item("chunk", value=days))
    assert_refused(plan_file, "chunk")


@pytest.mark.parametrize(
    ("field", "value"),
    [("risk", "medium"), ("risk", "High"), ("strategy", "big_bang")],
)
def test_value_outside_the_allowed_choices_is_named(
    plan_file: Path, field: str, value: str
) -> None:
    mutate(plan_file, set_item(field, value=value))
    assert_refused(plan_file, field)


@pytest.mark.parametrize("field", ["owner", "rollback", "grain"])
def test_blank_text_field_is_named(plan_file: Path, field: str) -> None:
    mutate(plan_file, set_item(field, value="   "))
    message = assert_refused(plan_file, field)
    assert "is empty" in message


# --- several problems, several plans -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        pytest.param(
            lambda data: (data.pop("owner"), data.pop("rollback")),
            ["owner", "rollback"],
            id="two-missing-fields",
        ),
        pytest.param(
            lambda data: data.update(risk="medium", chunk=0, colour="blue"),
            ["risk", "chunk", "colour"],
            id="three-bad-fields",
        ),
        pytest.param(
            lambda data: data.update(
                approvers=[], baseline="v1", sources=["raw.orders", "raw.orders"]
            ),
            ["approvers", "baseline", "sources"],
            id="three-cross-field-problems",
        ),
    ],
)
def test_several_problems_are_listed_in_one_message(
    plan_file: Path, change: Mutation, fields: list[str]
) -> None:
    mutate(plan_file, change)
    assert_refused(plan_file, *fields)


def test_sql_problems_are_reported_once_the_fields_are_valid(plan_file: Path) -> None:
    """Field problems come first (binding SQL needs valid fields); then the SQL's problems."""
    mutate(
        plan_file,
        lambda data: (data.pop("owner"), data.update(unique_key=["order_date", "country"])),
    )
    assert_refused(plan_file, "owner")
    mutate(plan_file, set_item("owner", value="someone@example.com"))
    assert_refused(plan_file, "unique_key")


def test_duplicate_plan_names_across_folders_name_both_files(tmp_path: Path) -> None:
    first = copy_plan(tmp_path / "a_revenue")
    second = copy_plan(tmp_path / "b_revenue")
    found = load_catalog(tmp_path)
    assert found.plans == []
    assert set(found.errors) == {first, second}
    message = str(found.errors[first])
    assert str(first) in message and str(second) in message
    assert "field 'name'" in message
    assert "'daily_revenue' is also the name of" in message
    assert "Fix:" in message


def test_distinct_plan_names_across_folders_all_load(tmp_path: Path) -> None:
    copy_plan(tmp_path / "a_revenue")
    renamed = copy_plan(tmp_path / "b_revenue")
    mutate(renamed, set_item("name", value="daily_revenue_copy"))
    found = load_catalog(tmp_path)
    assert found.errors == {}
    assert [plan.name for plan in found.plans] == ["daily_revenue", "daily_revenue_copy"]


def test_plans_declaring_one_table_differently_are_both_refused(tmp_path: Path) -> None:
    first = copy_plan(tmp_path / "a_revenue")
    second = copy_plan(tmp_path / "b_revenue")
    mutate(second, set_item("name", value="daily_revenue_copy"))
    mutate(second, lambda data: data["sources"][0].update(loaded_at="order_ts"))
    found = load_catalog(tmp_path)
    assert found.plans == []
    for path, other in ((first, second), (second, first)):
        message = str(found.errors[path])
        assert "raw.orders is declared differently by" in message and str(other) in message
