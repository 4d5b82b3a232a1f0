"""Versioned, daily-partitioned model assets: one per plan and version, plus the raw sources.

``<version>/<plan>`` (e.g. ``v2/daily_revenue``) writes ``models.<plan>__<version>``. A run
covers a range of days (``BackfillPolicy.multi_run(chunk_days)``), builds it with one SQL
statement and writes rows and evidence in one transaction (``build.py``).

Each day's partition checks (``partition_checks.py``) are reported to Dagster as one blocking
check per day, ``partition_checks_passed``, whose metadata names the sub-checks that failed and
their figures. One evaluation per day (rather than one per sub-check) keeps the event log, which
is the slowest part of a backfill, to a third of the writes; the evidence table keeps every
sub-check's verdict.
"""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.build import build_window
from backfill_assets.catalog import shipped_plans
from backfill_assets.partition_checks import DayChecks, partition_check_names
from backfill_assets.partitions import daily_partitions
from backfill_assets.plan import Plan
from backfill_assets.warehouse import RAW_TABLES, session

PARTITION_CHECKS_PASSED = "partition_checks_passed"


def model_key(plan: Plan, version: str) -> dg.AssetKey:
    return dg.AssetKey([version, plan.name])


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


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
        deps=[source_key(s) for s in plan.spec.sources],
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
            result = build_window(conn, plan, version, start, end, context.run.run_id)
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


@dg.definitions
def defs() -> dg.Definitions:
    plans = shipped_plans()
    sources = sorted({table for plan in plans for table in plan.spec.sources})
    source_specs = [
        dg.AssetSpec(
            source_key(table),
            group_name="raw",
            kinds={"duckdb"},
            description=f"Source table {table}: "
            + ", ".join(f"{c} {t}" for c, t in RAW_TABLES[table].items()),
        )
        for table in sources
    ]
    models = [build_model_asset(plan, version) for plan in plans for version in plan.version_names]
    return dg.Definitions(assets=[*source_specs, *models])
