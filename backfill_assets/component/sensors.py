"""The late-data sensor of one plan: repair the partitions whose sources changed since built.

``late_data_<plan>_sensor`` probes the plan's source tables (milliseconds), and when they moved
compares the built partitions with their sources (only the partitions appended rows reach, when
the sources only grew by rows with a later ``loaded_at``; every built partition otherwise),
asking for one run per changed partition that rebuilds every built version of it together. The
run key carries the new fingerprint, so the daemon launches each change once. At most
``max_repairs_per_tick`` new requests go out per tick, oldest first; the rest wait for the next
tick. A full comparison runs at least every ``full_scan_minutes``.

Each plan has its own sensor, so plans with different partitions, or a plan whose source table
is missing, do not affect each other. Sensors are not serialized by the run pool: they read the
warehouse read-only and skip the tick when a writer holds the file.
"""

import json
import time

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets.component.models import model_key, partition_key, partitions_def
from backfill_assets.component.resources import read_session
from backfill_assets.late import find_repairs, narrowed, source_probes
from backfill_assets.plan import Plan
from backfill_assets.shadow import new_partition_builds
from backfill_assets.sources import source_problems

REPAIR_TAG = "backfill_assets/repair"
PLAN_TAG = "backfill_assets/plan"
NEW_PARTITION_TAG = "backfill_assets/new_partition"
REMEMBERED_KEYS = 1000
NEW_PER_TICK = 20  # new-partition runs requested per tick at most, oldest first


class LateDataPolicy(dg.Model, dg.Resolvable):
    """How much work one late-data sensor tick may do (``late_data:`` in ``defs.yaml``)."""

    max_repairs_per_tick: int = Field(
        default=20, ge=1, description="New repair runs requested per tick at most."
    )
    full_scan_minutes: int = Field(
        default=60,
        ge=1,
        description="Compare every built partition with its sources at least this often, even when "
        "the cheap per-table probes say nothing changed.",
    )


def late_data_sensor(plan: Plan, policy: LateDataPolicy) -> dg.SensorDefinition:
    """The plan's late-data sensor."""
    models = [model_key(plan, v) for v in plan.version_names]

    @dg.sensor(
        name=f"late_data_{plan.name}_sensor",
        description=(
            f"Requests a repair run for every built {plan.cadence.word} of {plan.name} whose "
            "source rows changed since it was built (late or re-sent rows), all built versions "
            "of it together."
        ),
        target=dg.AssetSelection.assets(*models),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        full_scan_due = now - cursor.get("full_scan_at", 0) >= 60 * policy.full_scan_minutes
        try:
            with read_session(warehouse) as conn:
                problems = source_problems(conn, plan.sources)
                if problems:
                    return dg.SkipReason("; ".join(problems))
                probes = source_probes(conn, [plan])
                before = cursor.get("probes")
                moved = before is None or probes != before
                scan_all = full_scan_due or cursor.get("waiting") or before is None
                if not (moved or scan_all):
                    return dg.SkipReason("no source table changed since the last scan")
                only = {} if scan_all else narrowed(conn, [plan], before, probes)
                scan = find_repairs(conn, [plan], only)
        except duckdb.Error as error:
            return dg.SkipReason(f"warehouse not readable now, trying next tick: {error}")
        requested = set(cursor.get("requested", []))
        new = [r for r in scan.repairs if r.run_key not in requested]
        chosen = new[: policy.max_repairs_per_tick]
        seen = scan.describe(chosen, already_requested=len(scan.repairs) - len(new))
        scope = (
            f"{len(only[plan.name])} {plan.cadence.word}s with new rows"
            if plan.name in only
            else "whole window"
        )
        remembered = [*cursor.get("requested", []), *(r.run_key for r in chosen)]
        context.update_cursor(
            json.dumps(
                {
                    "seen": f"scanned {plan.name} ({scope}): {seen}",
                    "requested": remembered[-REMEMBERED_KEYS:],
                    "waiting": len(new) - len(chosen),
                    "probes": probes,
                    # Only a comparison of every built partition resets the full-scan clock.
                    "full_scan_at": now if not only else cursor.get("full_scan_at", 0),
                }
            )
        )
        if not chosen:
            return dg.SkipReason(seen)
        context.log.info(seen)
        return [
            dg.RunRequest(
                run_key=repair.run_key,
                partition_key=partition_key(plan, repair.partition),
                asset_selection=[model_key(plan, v) for v in repair.versions],
                tags={REPAIR_TAG: "late_data", PLAN_TAG: repair.plan},
            )
            for repair in chosen
        ]

    return _sensor


def new_partitions_sensor(plan: Plan) -> dg.SensorDefinition:
    """The plan's ``new_partitions_<plan>_sensor`` (plans with ``shadow_partitions``): after a
    promotion, one run per new complete partition, building the published version and, while
    the partition lies in the shadow period, the baseline beside it (``shadow.py``)."""
    models = [model_key(plan, v) for v in plan.version_names]
    partitions = partitions_def(plan)
    cadence = plan.cadence

    @dg.sensor(
        name=f"new_partitions_{plan.name}_sensor",
        description=(
            f"After a promotion of {plan.name}: requests one run per new complete "
            f"{cadence.word} after the published window, building the published version, and "
            f"the baseline as well for the {plan.spec.shadow_partitions} {cadence.word}(s) of "
            "the shadow period (reconciled every morning by the monitoring schedule)."
        ),
        target=dg.AssetSelection.assets(*models),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBResource):
        newest = partitions.get_last_partition_key()
        last = (
            cadence.from_aware(partitions.time_window_for_partition_key(newest).start)
            if newest is not None
            else None
        )
        try:
            with read_session(warehouse) as conn:
                wanted, reason = new_partition_builds(conn, plan, last)
        except duckdb.Error as error:
            return dg.SkipReason(f"warehouse not readable now, trying next tick: {error}")
        cursor = json.loads(context.cursor) if context.cursor else {}
        requested = set(cursor.get("requested", []))
        requests = []
        for partition, versions in wanted:
            key = partition_key(plan, partition)
            run_key = f"{plan.name}:new:{'+'.join(versions)}:{key}"
            if run_key in requested:
                continue
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=key,
                    asset_selection=[model_key(plan, v) for v in versions],
                    tags={NEW_PARTITION_TAG: "+".join(versions), PLAN_TAG: plan.name},
                )
            )
        chosen = requests[:NEW_PER_TICK]
        remembered = [*cursor.get("requested", []), *(r.run_key for r in chosen)]
        context.update_cursor(json.dumps({"requested": remembered[-REMEMBERED_KEYS:]}))
        if not chosen:
            return dg.SkipReason(reason or f"every new {cadence.word} already requested")
        context.log.info(
            f"{plan.name}: requesting {len(chosen)} new {cadence.word}(s): "
            + ", ".join(r.run_key for r in chosen)
        )
        return chosen

    return _sensor
