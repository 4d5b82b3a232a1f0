"""Versioned, daily-partitioned model assets: one per plan and version, plus its sources.

``<version>/<plan>`` (e.g. ``v2/daily_revenue``) writes ``models.<plan>__<version>``. A run
covers a range of days (``BackfillPolicy.multi_run(chunk_days)``), builds it with one SQL
statement and writes rows and evidence in one transaction (``build.py``).

Each day's partition checks (``partition_checks.py``) are reported to Dagster as one blocking
check per day, ``partition_checks_passed``, whose metadata names the sub-checks that failed and
their figures. One evaluation per day (rather than one per sub-check) keeps the event log, which
is the slowest part of a backfill, to a third of the writes; the evidence table keeps every
sub-check's verdict.
"""

import datetime as dt
import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.build import build_window
from backfill_assets.component.resources import session
from backfill_assets.partition_checks import DayChecks, partition_check_names
from backfill_assets.plan import Plan
from backfill_assets.publish import is_published
from backfill_assets.sources import Source

PARTITION_CHECKS_PASSED = "partition_checks_passed"
# The tags a run launched by a backfill policy carries instead of ``dagster/partition``; an
# in-process run passes the same tags to build a chunk of days in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def daily_partitions(plan: Plan) -> dg.DailyPartitionsDefinition:
    """UTC days from the plan's first partition; a day exists once it is complete."""
    return dg.DailyPartitionsDefinition(
        start_date=plan.spec.partitions.start.isoformat(), timezone="UTC"
    )


def range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    """Tags for one run over the days ``first``..``last`` (both inclusive)."""
    if last < first:
        raise ValueError(
            f"range {first}..{last} is reversed; the last day must not precede the first"
        )
    return {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}


def model_key(plan: Plan, version: str) -> dg.AssetKey:
    return dg.AssetKey([version, plan.name])


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def source_spec(source: Source) -> dg.AssetSpec:
    """A declared source table as an external asset. Plans that read the same table declare it
    the same way (``catalog.conflicts``), so their specs are equal and Dagster keeps one."""
    schema = source.table.split(".")[0]
    parts = [source.description or f"Source table {source.table}."]
    if source.event_time:
        parts.append(f"Event time: {source.event_time}.")
    else:
        parts.append("A dimension: every partition may read all of it.")
    if source.loaded_at:
        parts.append(f"Arrival time: {source.loaded_at}.")
    return dg.AssetSpec(
        source_key(source.table), group_name=schema, kinds={"duckdb"}, description=" ".join(parts)
    )


def day_metadata(day: DayChecks, held: bool) -> dict[str, dg.MetadataValue]:
    """What one day's evaluation shows: its rows, and for a failing day, why."""
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(day.row_count),
        "failed_checks": dg.MetadataValue.text(", ".join(day.failed_checks()) or "none"),
    }
    for name in day.failed_checks():
        details = {k: v for k, v in day.checks[name].items() if k != "passed"}
        metadata[name] = dg.MetadataValue.json(json.loads(json.dumps(details, default=str)))
    if held:
        metadata["published_rows_kept"] = dg.MetadataValue.text(
            "this version is published: the day's previous rows were kept (write-audit-publish)"
        )
    return metadata


def build_model_asset(plan: Plan, version: str) -> dg.AssetsDefinition:
    """The asset of one version of a plan."""
    key = model_key(plan, version)
    partitions = daily_partitions(plan)
    spec = plan.version(version)
    sub_checks = partition_check_names(plan, version)

    @dg.asset(
        key=key,
        group_name=plan.name,
        description=(
            f"{plan.spec.description} Version {version}: {spec.change} Grain: {plan.spec.grain}"
        ),
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(plan.spec.chunk_days),
        code_version=spec.code_version,
        kinds={"duckdb"},
        pool="duckdb",
        deps=[source_key(s.table) for s in plan.sources],
        metadata={
            "table": f"models.{plan.table_name(version)}",
            "unique_key": ", ".join(plan.spec.unique_key),
            "owner": plan.spec.owner,
            "plan": plan.path.name,
        },
        check_specs=[
            dg.AssetCheckSpec(
                PARTITION_CHECKS_PASSED,
                asset=key,
                blocking=True,
                partitions_def=partitions,
                description=f"Each day passes {', '.join(sub_checks)} (details in metadata).",
            )
        ],
    )
    def _model(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        with session(warehouse) as conn:
            published = is_published(conn, plan, version)
            result = build_window(conn, plan, version, start, end, context.run.run_id, published)
        failing = result.failing_days
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "rows_in_run": result.rows,
                "days_in_run": len(result.days),
                "window": f"{start} .. {end}",
                "days_failing_checks": len(failing),
                "failing_days": ", ".join(d.day.isoformat() for d in failing[:20]) or "none",
                "days_kept_as_published": ", ".join(str(d) for d in result.held) or "none",
            },
        )
        for day in result.days:
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=PARTITION_CHECKS_PASSED,
                passed=day.passed,
                partition=day.day.isoformat(),
                blocking=True,
                metadata=day_metadata(day, day.day in result.held),
            )
        for day in failing[:10]:
            context.log.warning(
                f"{day.day}: {', '.join(day.failed_checks())} failed: "
                + json.dumps({n: day.checks[n] for n in day.failed_checks()}, default=str)
            )
        yield dg.Output(
            None,
            output_name=context.assets_def.get_output_name_for_asset_check_key(
                dg.AssetCheckKey(key, PARTITION_CHECKS_PASSED)
            ),
        )

    return _model
