"""Backfill plans: the runbook's preflight inventory as a validated YAML file.

A plan is a ``plan.yaml`` beside its SQL files, usually in a ``defs/<name>/`` folder of a Dagster
project whose ``defs.yaml`` makes it a ``backfill_assets.BackfillPlan`` component. Loading it
validates every field and the SQL itself (each SQL file must be exactly one read-only query, by
DuckDB's own parser, and each version's query is bound against the sources' columns in an
in-memory DuckDB without file or extension access), so a plan that would fail at run time
refuses to load instead. Every problem is reported in one ``PlanError`` that names the file, the
field and the fix.
"""

import datetime as dt
import json
import os
import re
import threading
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
from pydantic import Field, GetCoreSchemaHandler, ValidationError, field_validator, model_validator
from pydantic_core import core_schema

from backfill_assets import lake as lakes
from backfill_assets.partitions import WEEKDAYS, Cadence, Partition
from backfill_assets.sources import Source
from backfill_assets.spec import Identifier, Scalar, Text, YamlError, distinct, read_yaml
from backfill_assets.spec import Strict as _Strict
from backfill_assets.spec import identifier as _identifier
from backfill_assets.warehouse import SCHEMAS, qualified, quote

# A measure name that means "count of output rows" rather than a column.
ROWS = "rows"
# Reconciliation groups that are not output columns: the partition, and its day or month.
TIME_GROUPS = ("partition", "day", "month")
# The columns a plan's source_slice SQL returns, one row per (partition, source row).
SLICE_COLUMNS = ("partition_start", "source", "loaded_at", "row_hash")


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
    """The model's partitions: one per hour, day, week or month of ``timezone``, from
    ``start`` (a day; midnight of it for hourly) up to the one holding ``end`` (a day,
    inclusive) or, without ``end``, up to the last complete one: a model that keeps growing
    leaves it unset; a model whose history is closed (the example data ends in 2025) sets it, so
    the UI does not list partitions that will never have data as missing."""

    start: dt.date
    end: dt.date | None = None
    cadence: Literal["hourly", "daily", "weekly", "monthly"] = "daily"
    timezone: Text = "UTC"
    week_start: Literal[WEEKDAYS] = "monday"  # type: ignore[valid-type]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as UTC or Europe/Berlin"
            ) from None
        return value

    @property
    def of(self) -> Cadence:
        return Cadence(self.cadence, self.timezone, self.week_start)


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
        return distinct(value)

    @field_validator("measures")
    @classmethod
    def _measures_once(cls, value: list[str]) -> list[str]:
        return distinct(value)


class KnownRecord(_Strict):
    """A hand-verified row of the candidate: its key and the values it must have."""

    key: dict[Identifier, Scalar] = Field(min_length=1)
    expect: dict[Identifier, Scalar] = Field(min_length=1)


class Trend(_Strict):
    """Cliff/spike detection on the candidate's series of partitions (median absolute deviation
    from a rolling median over ``window_partitions``; with ``seasonality`` N, each partition is
    compared with the partitions N, 2N, ... before and after it, so a weekly cycle in daily
    data is not a jump)."""

    measure: Identifier
    window_partitions: int = Field(default=28, ge=5, le=1000)
    seasonality: int | None = Field(default=None, ge=2, le=1000)
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
    """How many rows a built partition must have at least."""

    min_rows_per_partition: int = Field(default=1, ge=0)


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


CONSUMER_KINDS = ("dashboard", "export", "model", "feature")
FORWARD_ONLY = "forward_only"
STRATEGIES = ("full_rebuild", "partition_repair", "column_enrichment", "dual_run", FORWARD_ONLY)


class ConsumerSpec(_Strict):
    """A consumer of the published view as a plan writes it: who reads the view and, optionally,
    the query it runs there (``sql``: a file holding one read-only SELECT over
    ``analytics.<plan>``) and what that query's result must keep (``min_rows``, ``columns``).

    ``kind`` and ``owner`` have no default: the mapping form must name them. The text form
    (``- "dashboard: Daily events"``) is a consumer with only a name, kind and owner None.
    """

    name: Text
    kind: Literal[CONSUMER_KINDS] | None  # type: ignore[valid-type]
    owner: Text | None
    sql: Text | None = None
    min_rows: int = Field(default=1, ge=0)
    columns: list[Identifier] = []

    @model_validator(mode="after")
    def _expectations_need_a_query(self) -> "ConsumerSpec":
        stray = [f for f in ("min_rows", "columns") if f in self.model_fields_set]
        if stray and self.sql is None:
            raise ValueError(f"{stray} describe the result of its query; add sql or remove them")
        return self

    @field_validator("columns")
    @classmethod
    def _columns_once(cls, value: list[str]) -> list[str]:
        return distinct(value)


class Consumer(str):
    """A downstream consumer. As text it is the label plans always wrote, ``<kind>: <name>``
    (or the text itself for a consumer written as text), so every list of consumers (preflight,
    the cutover summary, the UI) reads as before; its fields say who owns it and what it runs.
    """

    declared: ConsumerSpec

    def __new__(cls, declared: ConsumerSpec) -> "Consumer":
        label = f"{declared.kind}: {declared.name}" if declared.kind else declared.name
        consumer = super().__new__(cls, label)
        consumer.declared = declared
        return consumer

    def __reduce__(self) -> tuple:
        return Consumer, (self.declared,)

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def kind(self) -> str | None:
        return self.declared.kind

    @property
    def owner(self) -> str | None:
        return self.declared.owner

    @property
    def sql(self) -> str | None:
        return self.declared.sql

    @property
    def min_rows(self) -> int:
        return self.declared.min_rows

    @property
    def columns(self) -> list[str]:
        return list(self.declared.columns)

    @staticmethod
    def _as_mapping(value: Any) -> Any:
        """Text is a consumer with only a name; a ``Consumer`` keeps what it declared."""
        if isinstance(value, Consumer):
            return value.declared
        if isinstance(value, str):
            return {"name": value, "kind": None, "owner": None}
        return value

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(
            cls._as_mapping,
            core_schema.no_info_after_validator_function(
                cls, handler.generate_schema(ConsumerSpec)
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda consumer: consumer.declared.model_dump(exclude_none=True)
            ),
        )


class BreakingChange(_Strict):
    """A change to the published columns that the plan owns up to: a column the candidate
    no longer returns (``removed``) or returns with another type (``retyped``), and why. The
    schema contract lets it through and the cutover summary announces it."""

    column: Identifier
    change: Literal["removed", "retyped"]
    reason: Text


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
    downstream: list[Consumer]
    breaking_changes: list[BreakingChange] = []
    rollback: Text
    strategy: Literal[STRATEGIES]  # type: ignore[valid-type]
    cutoff: dt.date | None = None
    shadow_partitions: int | None = Field(default=None, ge=1, le=10_000)
    chunk: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("sources", mode="before")
    @classmethod
    def _table_shorthand(cls, value: Any) -> Any:
        """``- raw.airlines`` is short for ``- {table: raw.airlines}`` (a dimension)."""
        if isinstance(value, list):
            return [{"table": item} if isinstance(item, str) else item for item in value]
        return value


# What to write instead, per field; shown after the problem.
_FIXES = {
    "name": "name: daily_events (a plain SQL name, unique among plans)",
    "grain": "grain: One row per event day and category.",
    "unique_key": "unique_key: [event_date, category] (columns of every version's output)",
    "partition_column": "partition_column: event_date (the output's DATE column holding each "
    "row's partition; a TIMESTAMP of the UTC hour for hourly plans)",
    "partitions": "partitions: {cadence: daily, start: 2024-01-01, timezone: UTC} (cadence "
    "hourly | daily | weekly | monthly; week_start for weekly; end: the last day covered, "
    "optional, not before window.end)",
    "window": "window: {start: 2024-01-01, end: 2025-12-31} (inside the partitions, end >= start)",
    "sources": "sources: - {table: raw.events, event_time: event_ts, loaded_at: ingested_at, "
    "required: [event_id]} (one entry per table the SQL reads; dimensions without event_time)",
    "source_slice": "source_slice: sql/source_slice.sql (returns partition_start, source, "
    "loaded_at, row_hash), or leave it out to use the sources' event_time",
    "lookback": "lookback: 0 (partitions after its own that a source row can change)",
    "versions": "versions: - {name: v2, sql: sql/v2.sql, code_version: v2-1, change: ...}",
    "baseline": "baseline: legacy (the name of one of the versions)",
    "candidate": "candidate: v2 (the name of another version)",
    "checks": "checks: {null_rates: {...}, reconciliation: {...}, trend: {...}}",
    "owner": "owner: team-or-person@example.com",
    "approvers": "approvers: [data-lead@example.com] (required when risk is high)",
    "risk": "risk: low | high",
    "downstream": "downstream: [dashboard: Daily events] (may be [] when nothing reads it), or "
    "per consumer {name: Daily events, kind: dashboard | export | model | feature, owner: "
    "team@example.com, sql: sql/dashboard.sql (one SELECT over analytics.<plan>), min_rows: 1, "
    "columns: [event_date]}",
    "breaking_changes": "breaking_changes: - {column: amount, change: removed | retyped, "
    "reason: why consumers must adapt} (only for a change to the published columns you mean)",
    "rollback": "rollback: what to do to undo the change, in words",
    "strategy": "strategy: full_rebuild | partition_repair | column_enrichment | dual_run | "
    "forward_only (with cutoff: <the first day the candidate serves>)",
    "cutoff": "cutoff: 2024-07-01 (forward_only only: the first day of the partition from which "
    "the candidate is built and served; the baseline serves the window before it)",
    "shadow_partitions": "shadow_partitions: 7 (partitions after the promoted window during "
    "which the baseline keeps being built and reconciled with the published version; in the "
    "plan's cadence: days for a daily plan)",
    "chunk": "chunk: 31 (partitions per run; default 168 hourly, 31 daily, 13 weekly, 6 monthly)",
}


# Fields that plans written for earlier versions of the project used, and their names now.
RENAMED = {
    "chunk_days": "chunk",
    "window_days": "window_partitions",
    "min_rows_per_day": "min_rows_per_partition",
}

# Problems whose fix is the same whatever field has them.
NOT_ONE_QUERY = "is not exactly one read-only query"
NOT_A_NUMBER = "a measure must be a number"
_PROBLEM_FIXES = {
    NOT_ONE_QUERY: "write one SELECT (WITH ... SELECT ... allowed) that only reads tables; no "
    "other statement (DELETE, COPY, ATTACH, INSTALL, SET, ...) and no second statement after ';'",
    NOT_A_NUMBER: "cast the measure to a number in every version's SQL, e.g. "
    "CAST(net_revenue AS DECIMAL(18, 2)), or measure another column (or rows)",
}


def _fix_for(field: str, problem: str = "") -> str:
    for phrase, fix in _PROBLEM_FIXES.items():
        if phrase in problem:
            return fix
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
        """A SQL file of the plan, read now and checked again: a run reads the file when it
        starts, and the file may have changed since the plan loaded."""
        fields = {path: field for field, path in sql_files(self.spec).items()}
        text, problem = read_query(self.folder / relative)
        if problem:
            raise PlanError(_format(self.path, [(fields.get(relative, relative), problem)]))
        return text

    def version_sql(self, name: str) -> str:
        return self.read_sql(self.version(name).sql)

    @cached_property
    def source_slice_sql(self) -> str | None:
        """The plan's own source-slice SQL, or None when the sources' event_time defines it."""
        return self.read_sql(self.spec.source_slice) if self.spec.source_slice else None

    @property
    def sources(self) -> list[Source]:
        return list(self.spec.sources)

    @property
    def consumer_queries(self) -> list[Consumer]:
        """The downstream consumers that declare the query they run on the published view."""
        return [consumer for consumer in self.spec.downstream if consumer.sql]

    def consumer_sql(self, consumer: Consumer) -> str:
        """A consumer's query, read now and checked again (``read_sql``,
        ``consumer_reads_problem``), and reading this plan's view ``analytics.<plan>``."""
        assert consumer.sql is not None
        text = self.read_sql(consumer.sql)
        problem = consumer_reads_problem(self.name, text)
        read = {(schema, table.casefold()) for schema, table in tables_read(text)[0]}
        if not problem and ("analytics", self.name.casefold()) not in read:
            problem = (
                f"it does not read analytics.{self.name}, the view it is declared a consumer "
                "of, so it cannot show what publishing a version changes for it"
            )
        if problem:
            field = f"downstream[{consumer.name}].sql"
            raise PlanError(_format(self.path, [(field, problem)]))
        return text

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

    def asset_path(self, version: str) -> list[str]:
        """A version's asset key in Dagster, mirroring its table: ``models/<name>__<version>``.

        The UI labels a node with the key's last part, so each version (and the published view,
        ``analytics/<name>``) reads differently in the graph."""
        return ["models", self.table_name(version)]

    @property
    def published_path(self) -> list[str]:
        return ["analytics", self.name]

    @property
    def view(self) -> str:
        return qualified("analytics", self.name)

    @property
    def partition_column(self) -> str:
        return quote(self.spec.partition_column)

    @property
    def cadence(self) -> Cadence:
        return self.spec.partitions.of

    @property
    def chunk(self) -> int:
        """Partitions per backfill run."""
        return self.spec.chunk or DEFAULT_CHUNK[self.cadence.name]

    @property
    def window_start(self) -> Partition:
        """The first partition of the window."""
        return bounds(self.spec.partitions.of, self.spec.window.start, self.spec.window.end)[0]

    @property
    def window_end(self) -> Partition:
        """The partition after the window's last (the window is ``[window_start, window_end)``)."""
        return bounds(self.spec.partitions.of, self.spec.window.start, self.spec.window.end)[1]

    @property
    def window_partitions(self) -> list[Partition]:
        return self.cadence.starts(self.window_start, self.window_end)

    @property
    def window_size(self) -> int:
        """How many partitions the window holds."""
        return len(self.window_partitions)

    @property
    def first_partition(self) -> Partition:
        return bounds(self.cadence, self.spec.partitions.start, self.spec.partitions.start)[0]

    @property
    def forward_only(self) -> bool:
        return self.spec.strategy == FORWARD_ONLY and self.spec.cutoff is not None

    @property
    def cutoff(self) -> Partition | None:
        """The first partition a forward-only candidate is built and served from (None for
        every other strategy)."""
        if not self.forward_only:
            return None
        return bounds(self.cadence, self.spec.cutoff, self.spec.cutoff)[0]

    def served_spans(self, version: str) -> list[tuple[str, "Plan"]]:
        """What ``analytics.<plan>`` shows while ``version`` is published: each version it reads
        and the plan over the span it reads it for. One span (the window) unless the plan is
        forward-only and ``version`` is not the baseline: then the baseline before the cutoff
        and ``version`` from it."""
        cutoff, window = self.spec.cutoff, self.spec.window
        if not self.forward_only or version == self.spec.baseline or cutoff <= window.start:
            return [(version, self)]
        if cutoff > window.end:
            return [(self.spec.baseline, self)]
        before = self.with_window(window.start, cutoff - dt.timedelta(days=1))
        return [(self.spec.baseline, before), (version, self.with_window(cutoff, window.end))]

    def discontinuity(self, version: str) -> str | None:
        """The sentence naming a forward-only plan's break in history when ``version`` is
        published (None for other plans, and for the baseline, which the view reads whole)."""
        if self.cutoff is None or version == self.spec.baseline:
            return None
        cutoff = self.cadence.label(self.cutoff)
        return (
            f"forward-only cutoff {cutoff}: analytics.{self.name} serves {self.spec.baseline} "
            f"before {cutoff} and {version} from {cutoff} on; figures before and after the "
            "cutoff follow different definitions and are not comparable across it"
        )

    @property
    def shadow_span(self) -> tuple[Partition, Partition] | None:
        """The partitions ``[start, end)`` a shadow period covers: the ``shadow_partitions``
        partitions after the window's last (None without a shadow period)."""
        count = self.spec.shadow_partitions
        if not count:
            return None
        end = self.window_end
        for _ in range(count):
            end = self.cadence.next(end)
        return self.window_end, end

    def with_window(self, start: dt.date, end: dt.date) -> "Plan":
        """The same plan over another window (for samples, tests and what-if runs)."""
        window = Window(start=start, end=end)
        if start < self.spec.partitions.start:
            raise PlanError(f"window {start}..{end} starts before the partitions of {self.name}")
        return Plan(spec=self.spec.model_copy(update={"window": window}), path=self.path)


# Partitions per run when a plan does not say: a week of hours, a month of days, a quarter of
# weeks, half a year of months. A run costs ~4.5 s of start-up (queue, process, code load)
# however small it is; a chunk is also the unit a bad partition fails (docs/benchmarks.md,
# "Choice of chunk").
DEFAULT_CHUNK = {"hourly": 168, "daily": 31, "weekly": 13, "monthly": 6}


def bounds(cadence: Cadence, first_day: dt.date, last_day: dt.date) -> tuple[Partition, Partition]:
    """The half-open partition window covering the days ``first_day``..``last_day`` (both
    inclusive, local days): from the partition holding the first day to the one after the
    partition holding the last. For hourly, local midnights converted to UTC hours."""
    if cadence.is_hourly:
        start = Cadence("daily", cadence.timezone).utc(first_day)
        end = Cadence("daily", cadence.timezone).utc(last_day + dt.timedelta(days=1))
        return start, end
    return cadence.floor(first_day), cadence.next(cadence.floor(last_day))


NUMERIC = re.compile(
    r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)"
)


def rule_columns(spec: PlanSpec) -> list[str]:
    """What an explained-difference rule returns per row: the partition column (when the
    reconciliation groups by partition, day or month), its column groups, every measure."""
    recon = spec.checks.reconciliation
    time = [spec.partition_column] if any(b in TIME_GROUPS for b in recon.by) else []
    return [*time, *(b for b in recon.by if b not in TIME_GROUPS), *recon.measures]


def output_type_problems(spec: PlanSpec, columns: dict[str, str]) -> list[tuple[str, str]]:
    """Output columns whose type the checks cannot use: the partition column must be a DATE
    (a TIMESTAMP for hourly plans), every measure (reconciliation, trend) a number. Used at
    load and at every build."""
    problems = []
    expected = spec.partitions.of.column_type
    if columns.get(spec.partition_column) not in (None, expected):
        problems.append(
            (
                "partition_column",
                f"must be a {expected} column for {spec.partitions.cadence} partitions, is "
                f"{columns[spec.partition_column]}",
            )
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
                    f"{measure} is {kind} in the versions' output; {NOT_A_NUMBER}. "
                    f"Cast it in the SQL (CAST({measure} AS DECIMAL(18, 2)))",
                )
            )
    return problems


def window_params(sql: str, cadence: Cadence, start: Partition, end: Partition) -> dict:
    """The window parameters ``sql`` uses (DuckDB refuses values for parameters a statement
    does not have): ``$start``/``$end`` and ``$start_utc``/``$end_utc``."""
    return {
        name: value
        for name, value in cadence.params(start, end).items()
        if re.search(rf"\${name}\b", sql)
    }


def _describe(conn: duckdb.DuckDBPyConnection, sql: str, cadence: Cadence) -> dict[str, str]:
    """Bind a windowed query and return its output columns and types."""
    start = cadence.floor(dt.date(2024, 1, 1))
    params = window_params(sql, cadence, start, cadence.next(start))
    rows = conn.execute(f"DESCRIBE ({sql})", params).fetchall()
    return {row[0]: row[1] for row in rows}


def _cutoff_problems(spec: PlanSpec) -> list[tuple[str, str]]:
    """A forward-only plan names its cutoff: a partition's first day inside the window, after
    its first (before it the baseline is served, from it the candidate); no other plan does."""
    cutoff, cadence, window = spec.cutoff, spec.partitions.of, spec.window
    if spec.strategy != FORWARD_ONLY:
        if cutoff is not None:
            return [("cutoff", f"is only for strategy {FORWARD_ONLY}, not {spec.strategy}")]
        return []
    if cutoff is None:
        return [("cutoff", f"is missing: strategy {FORWARD_ONLY} needs the day served from")]
    problems = []
    if not cadence.is_hourly and cadence.floor(cutoff) != cutoff:
        problems.append(
            (
                "cutoff",
                f"{cutoff} is not the first day of a {cadence.word}; use {cadence.floor(cutoff)} "
                f"or {cadence.next(cadence.floor(cutoff))}",
            )
        )
    if not window.start < cutoff <= window.end:
        problems.append(
            (
                "cutoff",
                f"{cutoff} is not inside the window after its first day ({window.start} < "
                f"cutoff <= {window.end}): the baseline serves the window before the cutoff, "
                "the candidate the rest",
            )
        )
    return problems


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
    else:
        folded: dict[str, str] = {}
        for name in names:
            if name.casefold() in folded:
                problems.append(
                    (
                        "versions",
                        f"{folded[name.casefold()]!r} and {name!r} name the same table "
                        f"models.{spec.name}__{name} (DuckDB ignores case in names)",
                    )
                )
            folded.setdefault(name.casefold(), name)
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
    if spec.partitions.end is not None and spec.partitions.end < spec.window.end:
        problems.append(
            (
                "partitions.end",
                f"{spec.partitions.end} is before window.end {spec.window.end}; partitions must "
                f"cover the window: set it to {spec.window.end} or later, or remove it",
            )
        )
    cadence = spec.partitions.of
    first = spec.partitions.start
    if cadence.floor(first) != first and not cadence.is_hourly:
        problems.append(
            (
                "partitions.start",
                f"{first} is not the first day of a {cadence.word}; use {cadence.floor(first)} "
                f"or {cadence.next(cadence.floor(first))}",
            )
        )
    if cadence.floor(spec.window.start) != spec.window.start and not cadence.is_hourly:
        problems.append(
            (
                "window.start",
                f"{spec.window.start} is not the first day of a {cadence.word}; the window "
                f"starts at {cadence.floor(spec.window.start)} or "
                f"{cadence.next(cadence.floor(spec.window.start))}",
            )
        )
    last_end = bounds(cadence, spec.window.start, spec.window.end)[1]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if cadence.utc(last_end) > now:
        problems.append(
            (
                "window.end",
                f"the {cadence.word} holding {spec.window.end} is not complete yet (it ends "
                f"{cadence.utc(last_end):%Y-%m-%d %H:%M} UTC)",
            )
        )
    if spec.risk == "high" and not spec.approvers:
        problems.append(("approvers", "a high-risk plan needs at least one approver"))
    problems += _cutoff_problems(spec)
    by = spec.checks.reconciliation.by
    if "month" in by and cadence.name == "weekly":
        problems.append(
            (
                "checks.reconciliation.by",
                "weekly partitions do not nest in months; group by partition (or a column)",
            )
        )
    if "day" in by and cadence.name in ("weekly", "monthly"):
        problems.append(
            (
                "checks.reconciliation.by",
                f"a {cadence.word} holds several days; group by partition or month",
            )
        )
    tables = [source.table for source in spec.sources]
    if len(set(tables)) != len(tables):
        problems.append(("sources", f"a table is declared twice: {tables}"))
    queried = [c.name.casefold() for c in spec.downstream if c.sql]
    repeated = sorted({n for n in queried if queried.count(n) > 1})
    if repeated:
        problems.append(
            ("downstream", f"consumers with a query need distinct names; {repeated} repeat")
        )
    declared = [(b.column.casefold(), b.change) for b in spec.breaking_changes]
    twice = sorted({f"{c} {k}" for c, k in declared if declared.count((c, k)) > 1})
    if twice:
        problems.append(("breaking_changes", f"{twice} declared twice; declare each once"))
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

    texts: dict[str, str] = {}
    for field, relative in sql_files(spec).items():
        texts[field], problem = read_query(folder / relative)
        if not problem and field.startswith("downstream["):
            problem = consumer_reads_problem(spec.name, texts[field])
        if problem:
            problems.append((field, problem))
    if problems:
        return problems

    known = {
        source.table: source.columns if source.columns is not None else catalog.get(source.table)
        for source in spec.sources
    }
    if problems or any(columns is None for columns in known.values()):
        return problems

    conn = sql_sandbox()
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
                outputs[version.name] = _describe(conn, texts[field], spec.partitions.of)
            except duckdb.Error as error:
                problems.append((field, f"the SQL does not bind: {str(error).splitlines()[0]}"))
        if "source_slice" in texts:
            try:
                slice_columns = _describe(conn, texts["source_slice"], spec.partitions.of)
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

        # Versions may return different columns (a new version adds one, or drops one the
        # schema contract then holds it to), but every column a check reads must be in each.
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
        by_columns = [b for b in spec.checks.reconciliation.by if b not in TIME_GROUPS]
        needed["checks.reconciliation.by"] = by_columns
        for field, wanted in needed.items():
            # Known records describe the candidate; every other check reads every version.
            checked = [spec.candidate] if "known_records" in field else list(outputs)
            lacking = {v: [c for c in wanted if c not in outputs[v]] for v in checked}
            lacking = {v: cols for v, cols in lacking.items() if cols}
            if lacking:
                absent = list(dict.fromkeys(c for cols in lacking.values() for c in cols))
                which = "" if len(lacking) == len(checked) else f" ({', '.join(lacking)})"
                first = next(iter(lacking))
                problems.append(
                    (
                        field,
                        f"{absent} not in the output of the versions{which}; {first} returns "
                        f"{list(outputs[first])}",
                    )
                )
        problems += output_type_problems(spec, columns)
        problems += breaking_change_problems(spec, outputs)
        for index, record in enumerate(spec.checks.known_records):
            if spec.partition_column not in {**record.key, **record.expect}:
                problems.append(
                    (f"checks.known_records[{index}]", f"must name its {spec.partition_column}")
                )
        candidate_sql = texts[f"versions[{spec.candidate}].sql"]
        first = spec.partitions.of.floor(dt.date(2024, 1, 1))
        conn.execute(
            f"CREATE TABLE models.model AS SELECT * FROM ({candidate_sql}) LIMIT 0",
            window_params(candidate_sql, spec.partitions.of, first, spec.partitions.of.next(first)),
        )
        conn.execute("CREATE VIEW model AS SELECT * FROM models.model")
        for field, text in texts.items():
            if not field.startswith("checks."):
                continue
            try:
                cols = _describe(conn, text, spec.partitions.of)
            except duckdb.Error as error:
                problems.append((field, f"the SQL does not bind: {str(error).splitlines()[0]}"))
                continue
            if "referential_integrity" in field and not {"day", "key"} <= set(cols):
                problems.append((field, "the query must return columns day and key"))
            if "explained_differences" in field:
                wanted = rule_columns(spec)
                absent = [c for c in wanted if c not in cols]
                if absent:
                    problems.append(
                        (
                            field,
                            f"the rule must return {wanted} (the partition column, the "
                            f"reconciliation's column groups and every measure); {absent} "
                            f"missing, it returns {list(cols)}",
                        )
                    )
        if not problems:  # consumers are bound against the versions' output: it must be right
            problems += _consumer_problems(conn, spec, texts)
    finally:
        conn.close()
    return problems


def _consumer_problems(
    conn: duckdb.DuckDBPyConnection, spec: PlanSpec, texts: dict[str, str]
) -> list[tuple[str, str]]:
    """Consumer queries bound against ``analytics.<plan>`` as each version would publish it.

    A query that binds against no version is broken as written; one that binds against some
    only is what the ``downstream_queries_work`` window check is for (a consumer reading a
    column the candidate drops must block the promotion, not the plan)."""
    # A query that reads another plan's view cannot be bound here (that view's columns are
    # not known); it is checked when it runs.
    own = ("analytics", spec.name.casefold())
    consumers = [
        c
        for c in spec.downstream
        if c.sql
        and all(
            schema != "analytics" or (schema, table.casefold()) == own
            for schema, table in tables_read(texts[_consumer_field(c)])[0]
        )
    ]
    if not consumers:
        return []
    view = qualified("analytics", spec.name)
    conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    bound: dict[str, dict[str, dict[str, str]]] = {c.name: {} for c in consumers}
    errors: dict[str, str] = {}
    for version in spec.versions:
        sql = texts[f"versions[{version.name}].sql"]
        first = spec.partitions.of.floor(dt.date(2024, 1, 1))
        conn.execute(
            f"CREATE OR REPLACE TABLE {view} AS SELECT * FROM ({sql}) LIMIT 0",
            window_params(sql, spec.partitions.of, first, spec.partitions.of.next(first)),
        )
        for consumer in consumers:
            try:
                rows = conn.execute(f"DESCRIBE ({texts[_consumer_field(consumer)]})").fetchall()
            except duckdb.Error as error:
                errors.setdefault(consumer.name, str(error).splitlines()[0])
                continue
            bound[consumer.name][version.name] = {row[0]: row[1] for row in rows}
    problems = []
    for consumer in consumers:
        field = _consumer_field(consumer)
        results = bound[consumer.name]
        if not results:
            problems.append(
                (
                    field,
                    f"the SQL does not bind against {spec.name}'s output in any version: "
                    f"{errors[consumer.name]}",
                )
            )
            continue
        returned = {c for cols in results.values() for c in cols}
        absent = [c for c in consumer.columns if c not in returned]
        if absent:
            problems.append(
                (
                    f"downstream[{consumer.name}].columns",
                    f"{absent} are not returned by the query in any version; it returns "
                    f"{list(next(iter(results.values())))}",
                )
            )
    return problems


def _consumer_field(consumer: Consumer) -> str:
    return f"downstream[{consumer.name}].sql"


def breaking_change_problems(
    spec: PlanSpec, outputs: dict[str, dict[str, str]]
) -> list[tuple[str, str]]:
    """Declared breaking changes that no version makes (a misspelt column, a change long
    gone): a declaration lets a change through the schema contract, so it must name one."""
    problems = []
    for index, declared in enumerate(spec.breaking_changes):
        column = declared.column.casefold()  # DuckDB ignores case in names
        types = {
            v: t for v, cols in outputs.items() for c, t in cols.items() if c.casefold() == column
        }
        if declared.change == "removed" and (not types or len(types) == len(outputs)):
            where = "no version returns it" if not types else "every version returns it"
            problems.append(
                (
                    f"breaking_changes[{index}]",
                    f"{declared.column} is declared removed but {where}; declare a column one "
                    "version returns and another does not",
                )
            )
        if declared.change == "retyped" and len(set(types.values())) < 2:
            problems.append(
                (
                    f"breaking_changes[{index}]",
                    f"{declared.column} is declared retyped but the versions returning it "
                    f"return it as {sorted(set(types.values())) or 'nothing'}",
                )
            )
    return problems


def _format(path: Path, problems: list[tuple[str, str]], fix: str | None = None) -> str:
    """One line per problem, each with its fix (``fix`` when every problem has the same one)."""
    lines = [f"Plan {path} cannot be loaded ({len(problems)} problem(s)):"]
    for field, problem in problems:
        lines.append(f"  - field '{field}': {problem}. Fix: {fix or _fix_for(field, problem)}")
    return "\n".join(lines)


def _pydantic_field(error: dict[str, Any]) -> str:
    parts = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
    return ".".join(parts) or "(file)"


def sql_files(spec: PlanSpec) -> dict[str, str]:
    """Every SQL file of a plan, relative to it, by the field that names it."""
    files = {"source_slice": spec.source_slice} if spec.source_slice else {}
    files.update({f"versions[{v.name}].sql": v.sql for v in spec.versions})
    rules = spec.checks.reconciliation.explained_differences
    files.update(
        {f"checks.reconciliation.explained_differences[{r.name}].sql": r.sql for r in rules}
    )
    ri = spec.checks.referential_integrity
    files.update({f"checks.referential_integrity[{r.name}].sql": r.sql for r in ri})
    files.update({_consumer_field(c): c.sql for c in spec.downstream if c.sql})
    return files


def sql_sandbox(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB without file or extension access (no ``read_csv``, ``ATTACH``,
    ``COPY ... TO``, ``INSTALL``/``LOAD``; it cannot be switched back on), where plan SQL is
    parsed and bound at load."""
    config: dict[str, Any] = {"enable_external_access": False}
    if threads:
        config["threads"] = threads
    return duckdb.connect(config=config)


# One parsing sandbox per thread of a process (opening one takes ~16 ms; a code location's
# load parses a few dozen SQL files). Parsing binds nothing, so it keeps no state between uses.
_parsing = threading.local()


def _parser(fresh: bool = False) -> duckdb.DuckDBPyConnection:
    if fresh or getattr(_parsing, "pid", None) != os.getpid():  # a forked child opens its own
        _parsing.parser, _parsing.pid = sql_sandbox(threads=1), os.getpid()
    return _parsing.parser


def syntax_tree(text: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``text`` (``json_serialize_sql``), parsed in a sandbox."""
    sql = "SELECT json_serialize_sql(?)"
    try:
        row = _parser().execute(sql, [text]).fetchone()
    except duckdb.Error:  # a sandbox DuckDB gave up on: once more, on a new one
        row = _parser(fresh=True).execute(sql, [text]).fetchone()
    return json.loads(row[0])


# The syntax-tree node of a statement that changes data. DuckDB's statement type of
# ``WITH gone AS (DELETE ... RETURNING *) SELECT * FROM gone`` is SELECT; its tree holds a
# DELETE_QUERY_NODE (so do INSERT, UPDATE and MERGE_INTO).
_CHANGES_DATA = re.compile(r"(?P<kind>[A-Z_]+)_QUERY_NODE")


def sql_problem(text: str) -> str | None:
    """Why ``text`` is not exactly one read-only query, by DuckDB's own parser; None if it is.

    The file's own text is checked, not the statements the project wraps it in (``SELECT * FROM
    (<sql>)``): a text that closes the parenthesis to run statements of its own is not one query.
    """
    try:
        kinds = [statement.type.name for statement in duckdb.extract_statements(text)]
    except (duckdb.Error, ValueError) as error:  # ValueError: a type the client cannot name
        return f"DuckDB's parser refuses its text ({str(error).splitlines()[0]})"
    if len(kinds) != 1:
        listed = f"({', '.join(kinds)})" if kinds else "(only comments)"
        return f"it holds {len(kinds) or 'no'} statements {listed}"
    if kinds[0] != "SELECT":
        kind = kinds[0].replace("_", " ")
        return f"it is {'an' if kind[0] in 'AEIOU' else 'a'} {kind} statement"
    tree = syntax_tree(text)
    if tree.get("error"):
        return f"DuckDB cannot read it as a query ({tree.get('error_message')})"
    reached = lakes.reach_problems(tree)
    if reached:
        return (
            f"it calls {', '.join(reached)}, which reach{'es' if len(reached) == 1 else ''} "
            "past the tables it reads (the "
            "warehouse's catalog, another database, or SQL hidden in a string)"
        )
    nodes: list[Any] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            found = _CHANGES_DATA.fullmatch(str(node.get("type", "")))
            if found:
                return f"it changes data ({found['kind']})"
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return None


# Table functions that read a relation named inside a string, out of sight of the check below.
_HIDDEN_READS = ("query", "query_table")
# Schemas of the project a consumer query may not read: versions' tables and the project's own
# records. (``analytics`` holds the published views, which is what consumers read.)
_INTERNAL = tuple(schema for schema in SCHEMAS if schema != "analytics")


def tables_read(text: str) -> tuple[set[tuple[str, str]], set[str]]:
    """The ``(schema, table)`` names a query reads (schema casefolded, "" when unqualified, as
    well as CTE names) and the table functions it calls that hide what they read."""
    tree = syntax_tree(text)
    read: set[tuple[str, str]] = set()
    hidden: set[str] = set()
    nodes: list[Any] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                read.add((str(node.get("schema_name") or "").casefold(), str(node["table_name"])))
            elif node.get("type") == "TABLE_FUNCTION":
                function = str((node.get("function") or {}).get("function_name", ""))
                if function.casefold() in _HIDDEN_READS:
                    hidden.add(function)
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return read, hidden


def consumer_reads_problem(name: str, text: str) -> str | None:
    """Why a consumer's query (already one read-only query, ``sql_problem``) may not run as a
    consumer of ``analytics.<name>``; None when it may.

    It reads published views (``analytics.*``) and the team's own tables, never the project's
    internals (``models``: the versions' tables, ``backfill``: evidence and the log), and never
    through ``query()``/``query_table()``, which would hide what it reads. That it reads its
    own plan's view is checked when it runs (``Plan.consumer_sql``): a plan folder copied under
    another name must still load.
    """
    read, hidden = tables_read(text)
    if hidden:
        return f"it reads through {sorted(hidden)}, which hide the table read; name the table"
    internal = sorted(f"{schema}.{table}" for schema, table in read if schema in _INTERNAL)
    if internal:
        return (
            f"it reads {internal}, tables of the project itself; a consumer query reads "
            f"published views such as analytics.{name} (and the team's own tables) only"
        )
    return None


def read_query(path: Path) -> tuple[str, str | None]:
    """A plan SQL file's query, ready to be wrapped as ``(<sql>)``, and why it cannot be used
    (None when it can).

    A final ``;`` (and any comment after it) is dropped and a newline ends the text, so a file
    written as usual, ending in ``;`` or a ``-- comment``, still wraps.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        return "", f"cannot read {path} as UTF-8 text: {reason}"
    query, problem = _wrappable(text)
    if problem:
        return "", f"{path} {NOT_ONE_QUERY}: {problem}"
    return query, None


@lru_cache(maxsize=256)
def _wrappable(text: str) -> tuple[str, str | None]:
    """``read_query`` of one text. The file is read every time (an edit is what the next build
    runs); a text is parsed once per process: every build reads its version's SQL again, and
    the parse took ~4 ms of a one-day repair's ~0.1 s."""
    problem = sql_problem(text)
    if problem:
        return "", problem
    tokens = [t for t in duckdb.tokenize(text) if t[1] != duckdb.token_type.comment]
    encoded = text.encode()  # the tokens' positions are byte offsets
    if tokens and encoded[tokens[-1][0] : tokens[-1][0] + 1] == b";":
        text = encoded[: tokens[-1][0]].decode()
    return text.rstrip() + "\n", None


_DUPLICATE_FIX = "keep one of the two lines and delete the other"
_MAPPING_FIX = (
    "write the plan as one YAML mapping of the fields in the README (dg scaffold defs "
    "backfill_assets.BackfillPlan <name> writes one)"
)


def read_plan_file(path: Path) -> dict[str, Any]:
    """A plan file's fields as written, or a ``PlanError`` naming the file and the fix (for a
    key written twice, each key and its lines)."""
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PlanError(
            f"Plan {path} cannot be loaded: the file cannot be read ({error.strerror or error}). "
            f"Fix: {_MAPPING_FIX}."
        ) from None
    except UnicodeDecodeError as error:
        raise PlanError(
            f"Plan {path} cannot be loaded: the file is not UTF-8 text ({error}). "
            f"Fix: {_MAPPING_FIX}."
        ) from None
    except YamlError as error:
        if error.duplicates:
            raise PlanError(_format(path, error.duplicates, _DUPLICATE_FIX)) from None
        raise PlanError(
            f"Plan {path} cannot be loaded: the file is not readable YAML ({error}). "
            f"Fix: {_MAPPING_FIX}."
        ) from None
    if not isinstance(raw, dict):
        found = "nothing (the file is empty)" if raw is None else f"a {type(raw).__name__}"
        raise PlanError(
            f"Plan {path} cannot be loaded: expected a mapping of plan fields, found {found}. "
            f"Fix: {_MAPPING_FIX}."
        )
    return raw


def load_plan(path: Path, catalog: dict[str, dict[str, str]] | None = None) -> Plan:
    """Load and validate one plan file; raise ``PlanError`` naming every problem.

    ``catalog`` maps source tables to their warehouse columns, for sources declared without
    ``columns`` (see ``_validate_semantics``).

    Field problems are all reported together; the SQL files are bound once the fields are valid
    (binding needs a valid plan), and their problems are then reported together.
    """
    path = Path(path)
    raw = read_plan_file(path)
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
                renamed = RENAMED.get(str(item["loc"][-1]))
                if renamed:
                    message += f"; it was renamed to {renamed!r}"
            problems.append((_pydantic_field(item), message))
        raise PlanError(_format(path, problems)) from None
    problems = _validate_semantics(spec, path.parent, catalog or {})
    if problems:
        raise PlanError(_format(path, problems))
    return Plan(spec=spec, path=path)
