"""Backfill plans: the runbook's preflight inventory as a validated YAML file.

A plan is a ``plan.yaml`` beside its SQL files, usually in a ``defs/<name>/`` folder of a Dagster
project whose ``defs.yaml`` makes it a ``backfill_assets.BackfillPlan`` component. Loading it
validates every field and the SQL itself (each version's query is bound against the sources'
columns in an in-memory DuckDB without file access), so a plan that would fail at run time
refuses to load instead. Every problem is reported in one ``PlanError`` that names the file, the
field and the fix.
"""

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import duckdb
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from backfill_assets.sources import Source
from backfill_assets.spec import Identifier, Scalar, Text
from backfill_assets.spec import Strict as _Strict
from backfill_assets.spec import identifier as _identifier
from backfill_assets.warehouse import qualified, quote

# A measure name that means "count of output rows" rather than a column.
ROWS = "rows"
# The columns a plan's source_slice SQL returns, one row per (partition day, source row).
SLICE_COLUMNS = ("day", "source", "loaded_at", "row_hash")


class PlanError(ValueError):
    """A plan file that cannot be used; the message names the file, the field and the fix."""


class Version(_Strict):
    """One version of the model's logic: its SQL, its code version, and why it exists."""

    name: Identifier
    sql: Text
    code_version: Text
    change: Text


class Window(_Strict):
    """The days the backfill covers, both ends inclusive."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> "Window":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class Partitions(_Strict):
    """The model's daily partitions: from ``start`` (UTC days) up to today."""

    start: dt.date
    cadence: Literal["daily"] = "daily"


class Rule(_Strict):
    """An explained difference: SQL that predicts part of the baseline→candidate gap."""

    name: Identifier
    description: Text
    sql: Text


class Reconciliation(_Strict):
    """Candidate vs baseline, aggregated by ``by`` and compared measure by measure."""

    by: list[str] = Field(min_length=1)
    measures: list[Identifier] = Field(min_length=1)
    tolerance: float = Field(ge=0)
    explained_differences: list[Rule] = []

    @field_validator("by")
    @classmethod
    def _by_names(cls, value: list[str]) -> list[str]:
        for item in value:
            _identifier(item)
        return value


class KnownRecord(_Strict):
    """A hand-verified row of the candidate: its key and the values it must have."""

    key: dict[Identifier, Scalar] = Field(min_length=1)
    expect: dict[Identifier, Scalar] = Field(min_length=1)


class Trend(_Strict):
    """Cliff/spike detection on the candidate's daily series (median absolute deviation)."""

    measure: Identifier
    window_days: int = Field(default=28, ge=7, le=366)
    max_deviations: float = Field(default=8.0, gt=0)


class IntegrityRule(_Strict):
    """SQL returning offending rows (``day``, ``key``) of the version being checked (``model``)."""

    name: Identifier
    description: Text
    sql: Text
    severity: Literal["error", "warn"] = "error"


class Enrichment(_Strict):
    """A column the candidate adds or changes: rows must not change, coverage must hold."""

    column: Identifier
    min_coverage: float = Field(ge=0, le=1)


class Completeness(_Strict):
    """How many rows a built day must have at least."""

    min_rows_per_day: int = Field(default=1, ge=0)


class Checks(_Strict):
    """The acceptance criteria: what must hold before the candidate may be published."""

    null_rates: dict[Identifier, float] = Field(min_length=1)
    known_records: list[KnownRecord] = []
    completeness: Completeness = Completeness()
    referential_integrity: list[IntegrityRule] = []
    reconciliation: Reconciliation
    trend: Trend
    enrichment: Enrichment | None = None

    @field_validator("null_rates")
    @classmethod
    def _rates(cls, value: dict[str, float]) -> dict[str, float]:
        for column, rate in value.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"{column}: {rate} is not a rate between 0 and 1")
        return value


class PlanSpec(_Strict):
    """The fields of a plan file, as written."""

    name: Identifier
    description: Text
    grain: Text
    unique_key: list[Identifier] = Field(min_length=1)
    partition_column: Identifier
    partitions: Partitions
    window: Window
    sources: list[Source] = Field(min_length=1)
    source_slice: Text | None = None
    lookback: int = Field(default=0, ge=0, le=366)
    versions: list[Version] = Field(min_length=2)
    baseline: Identifier
    candidate: Identifier
    checks: Checks
    owner: Text
    approvers: list[Text] = []
    risk: Literal["low", "high"]
    downstream: list[Text]
    rollback: Text
    strategy: Literal["full_rebuild", "partition_repair", "column_enrichment", "dual_run"]
    chunk_days: int = Field(ge=1, le=366)

    @field_validator("sources", mode="before")
    @classmethod
    def _table_shorthand(cls, value: Any) -> Any:
        """``- raw.airlines`` is short for ``- {table: raw.airlines}`` (a dimension)."""
        if isinstance(value, list):
            return [{"table": item} if isinstance(item, str) else item for item in value]
        return value


# What to write instead, per field; shown after the problem.
_FIXES = {
    "name": "name: daily_revenue (a plain SQL name, unique among plans)",
    "grain": "grain: One row per order day and region.",
    "unique_key": "unique_key: [order_date, region] (columns of every version's output)",
    "partition_column": "partition_column: order_date (the event-time DATE column of the output)",
    "partitions": "partitions: {start: 2024-01-01}",
    "window": "window: {start: 2024-01-01, end: 2025-12-31} (inside the partitions, end >= start)",
    "sources": "sources: - {table: raw.events, event_time: event_ts, loaded_at: ingested_at, "
    "required: [event_id]} (one entry per table the SQL reads; dimensions without event_time)",
    "source_slice": "source_slice: sql/source_slice.sql (returns day, source, loaded_at, "
    "row_hash), or leave it out to use the sources' event_time",
    "lookback": "lookback: 0 (partitions after its own that a source row can change)",
    "versions": "versions: - {name: v2, sql: sql/v2.sql, code_version: v2-1, change: ...}",
    "baseline": "baseline: legacy (the name of one of the versions)",
    "candidate": "candidate: v2 (the name of another version)",
    "checks": "checks: {null_rates: {...}, reconciliation: {...}, trend: {...}}",
    "owner": "owner: team-or-person@example.com",
    "approvers": "approvers: [finance-lead@example.com] (required when risk is high)",
    "risk": "risk: low | high",
    "downstream": "downstream: [dashboard: Finance daily] (may be [] when nothing reads it)",
    "rollback": "rollback: what to do to undo the change, in words",
    "strategy": "strategy: full_rebuild | partition_repair | column_enrichment | dual_run",
    "chunk_days": "chunk_days: 31 (partitions per run, 1 to 366)",
}


def _fix_for(field: str) -> str:
    if field.endswith(".sql") or field == "source_slice":
        return (
            "correct the SQL, or the declared columns of the sources it reads (the SQL is "
            "bound against them, or against the warehouse's tables where none are declared)"
        )
    top = re.split(r"[.\[]", field)[0]
    return _FIXES.get(top, "remove it or correct it as the README's plan format shows")


@dataclass(frozen=True)
class Plan:
    """A validated plan, with the derived names the rest of the project uses."""

    spec: PlanSpec
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def version_names(self) -> list[str]:
        return [v.name for v in self.spec.versions]

    def version(self, name: str) -> Version:
        for version in self.spec.versions:
            if version.name == name:
                return version
        raise KeyError(f"plan {self.name} has no version {name!r}; it has {self.version_names}")

    def read_sql(self, relative: str) -> str:
        return (self.folder / relative).read_text()

    def version_sql(self, name: str) -> str:
        return self.read_sql(self.version(name).sql)

    @cached_property
    def source_slice_sql(self) -> str | None:
        """The plan's own source-slice SQL, or None when the sources' event_time defines it."""
        return self.read_sql(self.spec.source_slice) if self.spec.source_slice else None

    @property
    def sources(self) -> list[Source]:
        return list(self.spec.sources)

    def source(self, table: str) -> Source:
        for source in self.spec.sources:
            if source.table == table:
                return source
        raise KeyError(f"plan {self.name} declares no source {table!r}")

    def table_name(self, version: str) -> str:
        """The physical table of a version: ``models.<name>__<version>``."""
        return f"{self.name}__{self.version(version).name}"

    def model_table(self, version: str) -> str:
        return qualified("models", self.table_name(version))

    @property
    def view(self) -> str:
        return qualified("analytics", self.name)

    @property
    def partition_column(self) -> str:
        return quote(self.spec.partition_column)

    @property
    def window_days(self) -> int:
        return (self.spec.window.end - self.spec.window.start).days + 1

    def with_window(self, start: dt.date, end: dt.date) -> "Plan":
        """The same plan over another window (for samples, tests and what-if runs)."""
        window = Window(start=start, end=end)
        if start < self.spec.partitions.start:
            raise PlanError(f"window {start}..{end} starts before the partitions of {self.name}")
        return Plan(spec=self.spec.model_copy(update={"window": window}), path=self.path)


NUMERIC = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)"
)


def output_type_problems(spec: PlanSpec, columns: dict[str, str]) -> list[tuple[str, str]]:
    """Output columns whose type the checks cannot use: the partition column must be a DATE,
    and every measure (reconciliation, trend) a number. Used at load and at every build."""
    problems = []
    if columns.get(spec.partition_column) not in (None, "DATE"):
        problems.append(
            ("partition_column", f"must be a DATE column, is {columns[spec.partition_column]}")
        )
    measures = {
        f"checks.reconciliation.measures[{m}]": m for m in spec.checks.reconciliation.measures
    }
    measures["checks.trend.measure"] = spec.checks.trend.measure
    for field, measure in measures.items():
        kind = columns.get(measure)
        if measure != ROWS and kind is not None and not NUMERIC.fullmatch(kind):
            problems.append(
                (
                    field,
                    f"{measure} is {kind} in the versions' output; a measure must be a number. "
                    f"Cast it in the SQL (CAST({measure} AS DECIMAL(18, 2)))",
                )
            )
    return problems


def _describe(conn: duckdb.DuckDBPyConnection, sql: str) -> dict[str, str]:
    """Bind a windowed query (``$start``/``$end``) and return its output columns and types."""
    params = {"start": dt.date(2024, 1, 1), "end": dt.date(2024, 1, 2)}
    rows = conn.execute(f"DESCRIBE ({sql})", params).fetchall()
    return {row[0]: row[1] for row in rows}


def _validate_semantics(
    spec: PlanSpec, folder: Path, catalog: dict[str, dict[str, str]]
) -> list[tuple[str, str]]:
    """Checks that need more than one field, or the SQL: a list of (field, problem).

    The SQL is bound against the sources' columns: their declared ``columns``, else what
    ``catalog`` (the warehouse) says. When neither knows a source, the SQL cannot be bound
    here; the build checks it against the warehouse instead.
    """
    problems: list[tuple[str, str]] = []
    names = [v.name for v in spec.versions]
    if len(set(names)) != len(names):
        problems.append(("versions", f"version names repeat: {names}"))
    for field in ("baseline", "candidate"):
        if getattr(spec, field) not in names:
            problems.append((field, f"{getattr(spec, field)!r} is not one of the versions {names}"))
    if spec.baseline == spec.candidate:
        problems.append(("candidate", "is the same version as the baseline"))
    if spec.window.start < spec.partitions.start:
        problems.append(
            (
                "window.start",
                f"{spec.window.start} is before partitions.start {spec.partitions.start}",
            )
        )
    today = dt.datetime.now(dt.UTC).date()
    if spec.window.end >= today:
        problems.append(
            ("window.end", f"{spec.window.end} is not a complete UTC day yet (today is {today})")
        )
    if spec.risk == "high" and not spec.approvers:
        problems.append(("approvers", "a high-risk plan needs at least one approver"))
    tables = [source.table for source in spec.sources]
    if len(set(tables)) != len(tables):
        problems.append(("sources", f"a table is declared twice: {tables}"))
    for index, source in enumerate(spec.sources):
        if source.columns is not None:
            undeclared = [c for c in source.declared_names() if c not in source.columns]
            if undeclared:
                problems.append(
                    (
                        f"sources[{index}].columns",
                        f"{undeclared} are named by the declaration of {source.table} but not "
                        "listed in its columns",
                    )
                )

    files = {"source_slice": spec.source_slice} if spec.source_slice else {}
    files.update({f"versions[{v.name}].sql": v.sql for v in spec.versions})
    rules = spec.checks.reconciliation.explained_differences
    files.update(
        {f"checks.reconciliation.explained_differences[{r.name}].sql": r.sql for r in rules}
    )
    ri = spec.checks.referential_integrity
    files.update({f"checks.referential_integrity[{r.name}].sql": r.sql for r in ri})
    texts: dict[str, str] = {}
    for field, relative in files.items():
        path = folder / relative
        try:
            texts[field] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or error
            problems.append((field, f"cannot read {path} as UTF-8 text: {reason}"))
    if problems:
        return problems

    known = {
        source.table: source.columns if source.columns is not None else catalog.get(source.table)
        for source in spec.sources
    }
    if problems or any(columns is None for columns in known.values()):
        return problems

    conn = duckdb.connect(config={"enable_external_access": False})
    try:
        conn.execute("CREATE SCHEMA models")
        for table, columns in known.items():
            schema, name = table.split(".")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            typed = ", ".join(f"{quote(c)} {t}" for c, t in columns.items())
            try:
                conn.execute(f"CREATE TABLE {qualified(schema, name)} ({typed})")
            except duckdb.Error as error:
                first = str(error).splitlines()[0]
                return [("sources", f"the columns of {table} are not valid DuckDB types: {first}")]
        outputs: dict[str, dict[str, str]] = {}
        for version in spec.versions:
            field = f"versions[{version.name}].sql"
            try:
                outputs[version.name] = _describe(conn, texts[field])
            except duckdb.Error as error:
                problems.append((field, f"the SQL does not bind: {str(error).splitlines()[0]}"))
        if "source_slice" in texts:
            try:
                slice_columns = _describe(conn, texts["source_slice"])
                missing = set(SLICE_COLUMNS) - set(slice_columns)
                if missing:
                    problems.append(
                        ("source_slice", f"the query must return columns {sorted(missing)}")
                    )
            except duckdb.Error as error:
                problems.append(
                    ("source_slice", f"the SQL does not bind: {str(error).splitlines()[0]}")
                )
        if problems:
            return problems

        column_sets = {tuple(cols) for cols in outputs.values()}
        if len(column_sets) > 1:
            problems.append(
                (
                    "versions",
                    "versions return different columns: "
                    + "; ".join(f"{k}: {list(v)}" for k, v in outputs.items()),
                )
            )
        columns = outputs[spec.candidate] if spec.candidate in outputs else {}
        needed = {
            "unique_key": spec.unique_key,
            "partition_column": [spec.partition_column],
            "checks.null_rates": list(spec.checks.null_rates),
            "checks.reconciliation.measures": [
                m for m in spec.checks.reconciliation.measures if m != ROWS
            ],
            "checks.trend.measure": [m for m in [spec.checks.trend.measure] if m != ROWS],
        }
        if spec.checks.enrichment:
            needed["checks.enrichment.column"] = [spec.checks.enrichment.column]
        for index, record in enumerate(spec.checks.known_records):
            needed[f"checks.known_records[{index}]"] = [*record.key, *record.expect]
        by_columns = [b for b in spec.checks.reconciliation.by if b not in ("month", "day")]
        needed["checks.reconciliation.by"] = by_columns
        for field, wanted in needed.items():
            absent = [c for c in wanted if c not in columns]
            if absent:
                problems.append(
                    (
                        field,
                        f"{absent} not in the output of the versions; they return {list(columns)}",
                    )
                )
        problems += output_type_problems(spec, columns)
        for index, record in enumerate(spec.checks.known_records):
            if spec.partition_column not in {**record.key, **record.expect}:
                problems.append(
                    (f"checks.known_records[{index}]", f"must name its {spec.partition_column}")
                )
        conn.execute(
            "CREATE TABLE models.model AS SELECT * FROM ("
            + texts[f"versions[{spec.candidate}].sql"]
            + ") LIMIT 0",
            {"start": dt.date(2024, 1, 1), "end": dt.date(2024, 1, 2)},
        )
        conn.execute("CREATE VIEW model AS SELECT * FROM models.model")
        for field, text in texts.items():
            if not field.startswith("checks."):
                continue
            try:
                cols = _describe(conn, text)
            except duckdb.Error as error:
                problems.append((field, f"the SQL does not bind: {str(error).splitlines()[0]}"))
                continue
            if "referential_integrity" in field and not {"day", "key"} <= set(cols):
                problems.append((field, "the query must return columns day and key"))
    finally:
        conn.close()
    return problems


def _format(path: Path, problems: list[tuple[str, str]]) -> str:
    lines = [f"Plan {path} cannot be loaded ({len(problems)} problem(s)):"]
    for field, problem in problems:
        lines.append(f"  - field '{field}': {problem}. Fix: {_fix_for(field)}")
    return "\n".join(lines)


def _pydantic_field(error: dict[str, Any]) -> str:
    parts = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    return ".".join(parts) or "(file)"


class _PlanLoader(yaml.SafeLoader):
    """YAML that leaves an impossible date (2024-13-45) as text, so the field is named."""


def _lenient_timestamp(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_PlanLoader.add_constructor("tag:yaml.org,2002:timestamp", _lenient_timestamp)


def load_plan(path: Path, catalog: dict[str, dict[str, str]] | None = None) -> Plan:
    """Load and validate one plan file; raise ``PlanError`` naming every problem.

    ``catalog`` maps source tables to their warehouse columns, for sources declared without
    ``columns`` (see ``_validate_semantics``).

    Field problems are all reported together; the SQL files are bound once the fields are valid
    (binding needs a valid plan), and their problems are then reported together.
    """
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlanLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PlanError(
            f"Plan {path} cannot be loaded: the file is not readable YAML ({error}). "
            "Fix: write the plan as a YAML mapping of the fields in the README."
        ) from error
    if not isinstance(raw, dict):
        raise PlanError(f"Plan {path} cannot be loaded: expected a mapping of plan fields.")
    try:
        spec = PlanSpec.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            message = item["msg"]
            if item["type"] == "missing":
                message = "is missing"
            elif item["type"] == "extra_forbidden":
                message = "is not a plan field"
            problems.append((_pydantic_field(item), message))
        raise PlanError(_format(path, problems)) from None
    problems = _validate_semantics(spec, path.parent, catalog or {})
    if problems:
        raise PlanError(_format(path, problems))
    return Plan(spec=spec, path=path)
