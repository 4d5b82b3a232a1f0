"""Before the backfill: the preflight report as an asset, and the canary sample as a job.

- ``preflight/<plan>__preflight``: materializing it evaluates the plan against the warehouse now and
  attaches the one-page backfill plan (inventory, work, ETA, blockers) as metadata.
- ``sample_<plan>_job``: builds and checks the canary sample of the window for the baseline and
  the candidate, records a materialization per built day, and fails when any day fails: the
  signal not to launch the full backfill. Its build times feed the preflight ETA.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.canary import canary_markdown, run_canary
from backfill_assets.component.models import partition_key
from backfill_assets.component.resources import session
from backfill_assets.plan import Plan
from backfill_assets.preflight import preflight


def build_preflight(plan: Plan) -> dg.Definitions:
    @dg.asset(
        key=["preflight", f"{plan.name}__preflight"],
        group_name=plan.name,
        description=f"The preflight report of the {plan.name} backfill: plan, work, ETA, blockers.",
        kinds={"duckdb"},
        pool="duckdb",
    )
    def _preflight(warehouse: DuckDBResource) -> dg.MaterializeResult:
        with session(warehouse) as conn:
            report = preflight(conn, plan)
        return dg.MaterializeResult(
            metadata={
                "ready": report.ready,
                "blockers": dg.MetadataValue.json(report.blockers),
                "report": dg.MetadataValue.md("```\n" + report.text() + "\n```"),
                **{
                    f"{plan.cadence.word}s_to_build_{w.version}": dg.MetadataValue.int(w.to_build)
                    for w in report.work
                },
            }
        )

    @dg.op(name=f"sample_{plan.name}", pool="duckdb")
    def _sample(context: dg.OpExecutionContext, warehouse: DuckDBResource) -> None:
        with session(warehouse) as conn:
            results = run_canary(conn, plan, context.run.run_id)
        for result in results:
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=plan.asset_path(result.version),
                    partition=partition_key(plan, result.partition),
                    description=f"canary sample {plan.cadence.word}",
                    metadata={"rows": result.rows, "build_seconds": round(result.seconds, 3)},
                )
            )
        summary = canary_markdown(plan, results)
        context.add_output_metadata({"canary": dg.MetadataValue.md(summary)})
        failed = [r for r in results if not r.passed]
        if failed:
            raise dg.Failure(
                description=(
                    f"canary failed on {len(failed)} {plan.cadence.word}(s): "
                    + ", ".join(
                        f"{r.version} {plan.cadence.label(r.partition)} "
                        f"({', '.join(r.failed_checks)})"
                        for r in failed[:10]
                    )
                    + "; do not launch the full backfill"
                ),
                metadata={"canary": dg.MetadataValue.md(summary)},
            )

    @dg.job(
        name=f"sample_{plan.name}_job",
        description=(
            f"Canary: build and check a stratified sample of the {plan.name} window (first and "
            "last partition, month ends and mid-months, 29 February, daylight-saving changes) "
            "for baseline and candidate."
        ),
    )
    def sample_job() -> None:
        _sample()

    return dg.Definitions(assets=[_preflight], jobs=[sample_job])
