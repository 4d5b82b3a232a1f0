"""Sensors: repair days whose sources changed; re-check windows after their days are rewritten.

``late_data_sensor`` probes every source table (milliseconds), and for each plan whose sources
moved compares the built days with their sources (only the days that appended rows reach, when
the sources only grew; every day otherwise), asking for one run per changed (plan, day) that
rebuilds every built version of that day together. The run key carries
the new fingerprint, so the daemon launches each change once. At most ``max_repairs_per_tick``
new requests go out per tick, oldest day first; the rest wait for the next tick. A full scan of
every plan runs at least every ``full_scan_minutes``.

``window_checks_<plan>_sensor`` (in ``published.py``) re-runs a plan's window checks once its
evidence has settled after any write, so a repaired month never keeps a stale green.

Sensors are not serialized by the run pool, so they read the warehouse read-only and skip the
tick when a writer holds the file.
"""

import json
import time

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets.catalog import shipped_plans
from backfill_assets.defs.models import model_key
from backfill_assets.late import find_repairs, narrowed_days, source_probes
from backfill_assets.plan import Plan
from backfill_assets.warehouse import open_read_only

REPAIR_TAG = "backfill_assets/repair"
REMEMBERED_KEYS = 1000


class LateDataPolicy(dg.ConfigurableResource):
    """How much work one late-data sensor tick may do."""

    max_repairs_per_tick: int = Field(
        default=20, ge=1, description="New repair runs requested per tick at most."
    )
    full_scan_minutes: int = Field(
        default=60,
        ge=1,
        description="Compare every built day with its sources at least this often, even when "
        "the cheap per-table probes say nothing changed.",
    )


def plans_to_scan(
    plans: list[Plan], probes: dict[str, str], cursor: dict, full_scan_due: bool
) -> list[Plan]:
    """The plans whose sources moved since the last scan (all of them when a full scan is due
    or repairs are still waiting)."""
    if full_scan_due or cursor.get("waiting") or "probes" not in cursor:
        return plans
    before = cursor["probes"]
    return [p for p in plans if any(probes[t] != before.get(t) for t in p.spec.sources)]


def scope(scanned: list[Plan], narrowed: dict[str, list]) -> str:
    """What a tick compared: 'daily_revenue (3 days with new rows), fct_orders (whole window)'."""
    return ", ".join(
        f"{p.name} ({len(narrowed[p.name])} days with new rows)"
        if p.name in narrowed
        else f"{p.name} (whole window)"
        for p in scanned
    )


@dg.definitions
def defs() -> dg.Definitions:
    plans = list(shipped_plans())
    by_name = {plan.name: plan for plan in plans}
    sources = sorted({table for plan in plans for table in plan.spec.sources})
    models = [model_key(p, v) for p in plans for v in p.version_names]

    @dg.sensor(
        name="late_data_sensor",
        description=(
            "Requests a repair run for every built day whose source rows changed since it "
            "was built (late or re-sent rows), all built versions of the day together."
        ),
        target=dg.AssetSelection.assets(*models),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def late_data_sensor(
        context: dg.SensorEvaluationContext,
        warehouse: DuckDBResource,
        late_data: LateDataPolicy,
    ):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        full_scan_due = now - cursor.get("full_scan_at", 0) >= 60 * late_data.full_scan_minutes
        try:
            with open_read_only(warehouse.database) as conn:
                probes = source_probes(conn, sources)
                scanned = plans_to_scan(plans, probes, cursor, full_scan_due)
                narrowed = {}
                if scanned and not (full_scan_due or cursor.get("waiting")):
                    narrowed = narrowed_days(conn, scanned, cursor["probes"], probes)
                scan = find_repairs(conn, scanned, narrowed) if scanned else None
        except duckdb.Error as error:
            return dg.SkipReason(f"warehouse not readable now, trying next tick: {error}")
        if scan is None:
            return dg.SkipReason("no source table changed since the last scan")
        requested = set(cursor.get("requested", []))
        new = [r for r in scan.repairs if r.run_key not in requested]
        chosen = new[: late_data.max_repairs_per_tick]
        seen = scan.describe(chosen, already_requested=len(scan.repairs) - len(new))
        remembered = [*cursor.get("requested", []), *(r.run_key for r in chosen)]
        context.update_cursor(
            json.dumps(
                {
                    "seen": f"scanned {scope(scanned, narrowed)}: {seen}",
                    "requested": remembered[-REMEMBERED_KEYS:],
                    "waiting": len(new) - len(chosen),
                    "probes": probes,
                    # Only a comparison of every day of every plan resets the full-scan clock.
                    "full_scan_at": now
                    if len(scanned) == len(plans) and not narrowed
                    else cursor.get("full_scan_at", 0),
                }
            )
        )
        if not chosen:
            return dg.SkipReason(seen)
        context.log.info(seen)
        return [
            dg.RunRequest(
                run_key=repair.run_key,
                partition_key=repair.day.isoformat(),
                asset_selection=[model_key(by_name[repair.plan], v) for v in repair.versions],
                tags={REPAIR_TAG: "late_data", "backfill_assets/plan": repair.plan},
            )
            for repair in chosen
        ]

    return dg.Definitions(
        sensors=[late_data_sensor],
        resources={"late_data": LateDataPolicy()},
    )
