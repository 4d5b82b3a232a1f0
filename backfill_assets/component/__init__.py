"""``backfill_assets.BackfillPlan``: one backfill plan as Dagster definitions, from YAML.

A team adopts the project in its own Dagster project by adding a folder per model under its
``defs/``::

    defs/flights_on_time/
        defs.yaml        # type: backfill_assets.BackfillPlan / attributes: {plan: plan.yaml}
        plan.yaml        # the plan (see the README's field table)
        sql/*.sql        # version, rule and check SQL, relative to the plan

``dg scaffold defs backfill_assets.BackfillPlan <name>`` writes a working skeleton. Each
instance builds, for its plan only: the source specs it reads, one partitioned asset per version
with its per-day check, the preflight asset and canary job, the published view with its window
checks, the promotion, rollback and window-check jobs, the window-check sensor, the monitoring
schedule and the late-data sensor (and, with ``shadow_partitions``, the new-partitions sensor
that builds the published version and its shadow). Every instance shares one ``warehouse``
resource (the DuckDB file ``BACKFILL_WAREHOUSE``) and the in-process executor.

A plan that does not load does not take the others down: its instance logs the error and
contributes one asset, ``plan_errors/<folder>``, whose description is the error and whose
materialization fails with it, so the UI shows what to fix while every healthy plan keeps
working. ``backfill-assets check`` exits non-zero on any broken plan, for CI.
"""

import logging
import re
from pathlib import Path

import dagster as dg
from pydantic import Field

from backfill_assets.catalog import load_checked, owned_sources, plan_files
from backfill_assets.component.models import build_model_asset, source_spec
from backfill_assets.component.preflight import build_preflight
from backfill_assets.component.published import build_published
from backfill_assets.component.resources import shared_warehouse
from backfill_assets.component.scaffold import BackfillPlanScaffolder
from backfill_assets.component.sensors import (
    LateDataPolicy,
    late_data_sensor,
    new_partitions_sensor,
)
from backfill_assets.plan import Plan, PlanError
from backfill_assets.settings import warehouse_path

log = logging.getLogger("backfill_assets")

PLAN_ERRORS = "plan_errors"


def plan_definitions(
    plan: Plan, late_data: LateDataPolicy, sources: list[str] | None = None
) -> dg.Definitions:
    """Every definition of one valid plan; ``sources``: the source tables whose asset specs it
    defines (default all; a source shared with an earlier plan is that plan's)."""
    models = [build_model_asset(plan, version) for version in plan.version_names]
    specs = [source_spec(s) for s in plan.sources if sources is None or s.table in sources]
    own = dg.Definitions(
        assets=[*specs, *models],
        sensors=[
            late_data_sensor(plan, late_data),
            *([new_partitions_sensor(plan)] if plan.spec.shadow_partitions else []),
        ],
        resources={"warehouse": shared_warehouse(warehouse_path())},
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(own, build_preflight(plan), build_published(plan))


def broken_plan_definitions(name: str, error: PlanError) -> dg.Definitions:
    """What a plan that does not load shows in the UI: one asset that states the error."""
    message = str(error)
    log.error("backfill plan %s is not loaded: %s", name, message)

    @dg.asset(
        key=[PLAN_ERRORS, re.sub(r"\W", "_", name)],
        group_name=PLAN_ERRORS,
        description=f"This plan does not load, so none of its assets exist. {message}",
        metadata={"error": dg.MetadataValue.md(f"```\n{message}\n```")},
    )
    def _broken() -> None:
        raise dg.Failure(description=message)

    return dg.Definitions(assets=[_broken])


@dg.scaffold_with(BackfillPlanScaffolder)
class BackfillPlan(dg.Component, dg.Model, dg.Resolvable):
    """A backfill plan: versions of a model as partitioned assets, checks, promotion, repairs."""

    plan: str = Field(
        default="plan.yaml",
        description="The plan file, relative to this defs.yaml; SQL paths in it are relative "
        "to the plan file.",
    )
    late_data: LateDataPolicy = Field(
        default_factory=LateDataPolicy,
        description="How much one tick of the plan's late-data sensor may do.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        plans = plan_files(context.defs_module_path)
        try:
            plan = load_checked(Path(folder) / self.plan, plans, warehouse_path())
        except PlanError as error:
            return broken_plan_definitions(folder.name, error)
        sources = owned_sources(plan, plans)
        return plan_definitions(plan, self.late_data, sources)
