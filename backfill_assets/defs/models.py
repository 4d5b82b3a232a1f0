"""Versioned, daily-partitioned model assets: one per plan and version, plus the raw sources.

``<version>/<plan>`` (e.g. ``v2/daily_revenue``) writes ``models.<plan>__<version>``. A run
covers a range of days (``BackfillPolicy.multi_run(chunk_days)``), builds it with one SQL
statement and writes rows and evidence in one transaction (``build.py``). Its per-partition
checks are reported for every day of the range.
"""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.build import build_window
from backfill_assets.catalog import shipped_plans
from backfill_assets.partition_checks import partition_check_names
from backfill_assets.partitions import daily_partitions
from backfill_assets.plan import Plan
from backfill_assets.warehouse import RAW_TABLES

CHECK_DESCRIPTIONS = {
    "grain_is_unique": "No unique-key value repeats within the day.",
    "null_rates_within_limits": "Each column's share of NULLs is within the plan's limit.",
    "known_records_match": "The plan's hand-verified rows have exactly the expected values.",
}


def model_key(plan: Plan, version: str) -> dg.AssetKey:
    return dg.AssetKey([version, plan.name])


def source_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


def _check_metadata(day_checks: dict) -> dict:
    return {k: v for k, v in day_checks.items() if k != "passed" and v not in ([], {}, None)}


def build_model_asset(plan: Plan, version: str) -> dg.AssetsDefinition:
    """The asset of one version of a plan."""
    key = model_key(plan, version)
    partitions = daily_partitions(plan)
    check_names = partition_check_names(plan, version)
    spec = plan.version(version)

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
            "plan": str(plan.path.name),
        },
        check_specs=[
            dg.AssetCheckSpec(
                name,
                asset=key,
                blocking=True,
                partitions_def=partitions,
                description=CHECK_DESCRIPTIONS[name],
            )
            for name in check_names
        ],
    )
    def _model(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        window = context.partition_time_window
        start, end = window.start.date(), window.end.date()
        with warehouse.get_connection() as conn:
            result = build_window(conn, plan, version, start, end, context.run_id)
        failing = result.failing_days
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "rows_in_run": result.rows,
                "days_in_run": len(result.days),
                "window": f"{start} .. {end}",
                "days_failing_checks": len(failing),
                "failing_days": ", ".join(d.day.isoformat() for d in failing[:20]) or "none",
            },
        )
        for name in check_names:
            for day in result.days:
                verdict = day.checks[name]
                yield dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=name,
                    passed=verdict["passed"],
                    partition=day.day.isoformat(),
                    blocking=True,
                    metadata={
                        k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v
                        for k, v in _check_metadata(verdict).items()
                    },
                )
            failed = [d for d in result.days if not d.checks[name]["passed"]]
            if failed:
                context.log.warning(
                    f"{name} failed on {len(failed)} day(s): "
                    f"{', '.join(d.day.isoformat() for d in failed[:10])}; first: "
                    + json.dumps(failed[0].checks[name], default=str)
                )
            yield dg.Output(
                None,
                output_name=context.assets_def.get_output_name_for_asset_check_key(
                    dg.AssetCheckKey(key, name)
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
