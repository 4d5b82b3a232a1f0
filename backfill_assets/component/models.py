"""Versioned, partitioned model assets: one per plan and version, plus its sources.

``models/<plan>__<version>`` (e.g. ``models/daily_revenue__v2``) writes the table of that name.
Its partitions follow the plan's cadence (hourly, daily, weekly or monthly, in its time zone). A
run covers a range of partitions (``BackfillPolicy.multi_run(chunk)``), builds it with one SQL
statement and writes rows and evidence in one transaction (``build.py``).

Each partition's checks (``partition_checks.py``) are reported to Dagster as one blocking check
per partition, ``partition_checks_passed``, whose metadata names the sub-checks that failed and
their figures. One evaluation per partition (rather than one per sub-check) keeps the event
log, which is the slowest part of a backfill, to a third of the writes; the evidence table
keeps every sub-check's verdict.
"""

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from backfill_assets.build import build_window
from backfill_assets.component.resources import session
from backfill_assets.partition_checks import PartitionChecks, partition_check_names
from backfill_assets.partitions import WEEKDAYS, Partition
from backfill_assets.plan import Plan
from backfill_assets.publish import serves
from backfill_assets.sources import Source

PARTITION_CHECKS_PASSED = "partition_checks_passed"
# What each per-partition sub-check proves, for the check's description in the UI.
SUB_CHECK_MEANINGS = {
    "grain_is_unique": "no unique_key value repeats",
    "null_rates_within_limits": "every column's share of NULLs is within the plan's limit",
    "known_records_match": "the plan's hand-verified rows have exactly the expected values",
}
# The tags a run launched by a backfill policy carries instead of ``dagster/partition``; an
# in-process run passes the same tags to build a chunk of partitions in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def partitions_def(plan: Plan) -> dg.TimeWindowPartitionsDefinition:
    """The plan's partitions in Dagster: its cadence and time zone from its first partition; a
    partition exists once it is complete, up to the one holding ``partitions.end`` if set."""
    cadence, start, last = plan.cadence, plan.spec.partitions.start, plan.spec.partitions.end
    zone = cadence.timezone
    if cadence.name == "hourly":
        end = f"{last + dt.timedelta(days=1):%Y-%m-%d}-00:00" if last else None
        return dg.HourlyPartitionsDefinition(
            start_date=f"{start:%Y-%m-%d}-00:00", end_date=end, timezone=zone
        )
    end = cadence.next(cadence.floor(last)).isoformat() if last else None
    if cadence.name == "weekly":
        # Dagster counts week days from Sunday (0); ours from Monday.
        offset = (WEEKDAYS.index(cadence.week_start) + 1) % 7
        return dg.WeeklyPartitionsDefinition(
            start_date=start.isoformat(), end_date=end, timezone=zone, day_offset=offset
        )
    if cadence.name == "monthly":
        return dg.MonthlyPartitionsDefinition(
            start_date=start.isoformat(), end_date=end, timezone=zone
        )
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end, timezone=zone)


def partition_key(plan: Plan, partition: Partition) -> str:
    """Dagster's key of one of the plan's partitions (``2024-03-01``, ``2024-11-03-01:00-0500``)."""
    moment = plan.cadence.utc(partition).replace(tzinfo=dt.UTC)
    return partitions_def(plan).get_partition_key_for_timestamp(moment.timestamp())


def range_tags(first: str | Partition, last: str | Partition) -> dict[str, str]:
    """Tags for one run over the partitions ``first``..``last`` (both inclusive; Dagster keys,
    or dates of a daily, weekly or monthly plan)."""
    keys = [k if isinstance(k, str) else k.isoformat() for k in (first, last)]
    if keys[1] < keys[0]:
        raise ValueError(
            f"range {keys[0]}..{keys[1]} is reversed; the last partition must not precede the first"
        )
    return {RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[1]}


def model_key(plan: Plan, version: str) -> dg.AssetKey:
    return dg.AssetKey(plan.asset_path(version))


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


def partition_metadata(part: PartitionChecks, held: bool) -> dict[str, dg.MetadataValue]:
    """What one partition's evaluation shows: its rows, and for a failing one, why."""
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(part.row_count),
        "failed_checks": dg.MetadataValue.text(", ".join(part.failed_checks()) or "none"),
    }
    for name in part.failed_checks():
        details = {k: v for k, v in part.checks[name].items() if k != "passed"}
        metadata[name] = dg.MetadataValue.json(json.loads(json.dumps(details, default=str)))
    if held:
        metadata["published_rows_kept"] = dg.MetadataValue.text(
            "this version is published: the partition's previous rows were kept "
            "(write-audit-publish)"
        )
    return metadata


def role(plan: Plan, version: str) -> str:
    """What a version is to its plan, shown as a tag on its asset: baseline, candidate or other.
    Which one is published is data, not code: the published asset's materializations carry it."""
    if version == plan.spec.baseline:
        return "baseline"
    return "candidate" if version == plan.spec.candidate else "other"


def refuse_before_cutoff(plan: Plan, version: str, start: Partition) -> None:
    """A forward-only plan builds versions other than its baseline from the cutoff only: the
    view serves the baseline before it, so a run starting earlier is refused, naming the fix,
    before anything is written."""
    cutoff = plan.cutoff
    if cutoff is None or version == plan.spec.baseline or start >= cutoff:
        return
    label = plan.cadence.label
    raise dg.Failure(
        description=(
            f"{plan.name}/{version}: the plan is forward_only with cutoff {label(cutoff)}: "
            f"{version} is built and served from {label(cutoff)} on (before it "
            f"analytics.{plan.name} serves {plan.spec.baseline}), and this run starts at "
            f"{label(start)}. Nothing was written. Fix: backfill {version} from "
            f"{partition_key(plan, cutoff)}."
        )
    )


def _evaluations(key: dg.AssetKey, keys: list[str], result) -> Iterator[dg.AssetCheckEvaluation]:
    """The per-partition check's verdict on each partition of the run, with its figures."""
    for partition_key_, part in zip(keys, result.partitions, strict=True):
        yield dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=PARTITION_CHECKS_PASSED,
            passed=part.passed,
            partition=partition_key_,
            blocking=True,
            metadata=partition_metadata(part, part.partition in result.held),
        )


def _failed_chunk(context: dg.AssetExecutionContext, key: dg.AssetKey, keys: list[str], result):
    """A chunk with a partition that failed its checks: each partition's verdict is reported,
    then the run fails before any materialization is recorded, so Dagster marks the chunk's
    partitions failed, the backfill page counts them and "re-execute from failure" rebuilds
    exactly this chunk. The rows stay written (evidence records the failed checks), for
    inspection; a published version's failing partitions keep their previous rows."""
    yield from _evaluations(key, keys, result)
    failing = result.failing
    named = [k for k, part in zip(keys, result.partitions, strict=True) if not part.passed]
    details = "; ".join(
        f"{k}: {', '.join(part.failed_checks())}"
        for k, part in zip(keys, result.partitions, strict=True)
        if not part.passed
    )
    raise dg.Failure(
        description=(
            f"{PARTITION_CHECKS_PASSED}: {len(failing)} of {len(keys)} partition(s) of "
            f"{key.to_user_string()} failed their checks: {details}. Nothing of this run "
            "counts as materialized; fix the cause, then re-execute the backfill from failure "
            "(it rebuilds exactly this chunk)."
        ),
        metadata={"failing_partitions": ", ".join(named[:50])},
    )


def build_model_asset(plan: Plan, version: str) -> dg.AssetsDefinition:
    """The asset of one version of a plan."""
    key = model_key(plan, version)
    partitions = partitions_def(plan)
    cadence = plan.cadence
    spec = plan.version(version)
    sub_checks = partition_check_names(plan, version)

    @dg.asset(
        key=key,
        group_name=plan.name,
        description=(
            f"{plan.spec.description} Version {version} ({role(plan, version)}): {spec.change} "
            f"Grain: {plan.spec.grain}"
        ),
        tags={"backfill_assets/role": role(plan, version)},
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(plan.chunk),
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
                description=(
                    f"Each {cadence.word} passes {', '.join(sub_checks)}: "
                    + "; ".join(SUB_CHECK_MEANINGS[c] for c in sub_checks)
                    + ". A failure names the sub-checks and their figures in its metadata."
                ),
            )
        ],
    )
    def _model(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        window = context.partition_time_window
        start, end = cadence.from_aware(window.start), cadence.from_aware(window.end)
        refuse_before_cutoff(plan, version, start)
        with session(warehouse) as conn:
            # Users see this version's rows (it is published, or it is a forward-only plan's
            # baseline serving the span before the cutoff): write-audit-publish.
            published = serves(conn, plan, version)
            result = build_window(conn, plan, version, start, end, context.run.run_id, published)
        keys = list(context.partition_keys)
        assert len(keys) == len(result.partitions), (keys, result.partitions)
        failing = result.failing
        word = cadence.word
        if failing:
            yield from _failed_chunk(context, key, keys, result)
            return
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "rows_in_run": result.rows,
                f"{word}s_in_run": len(result.partitions),
                "window": f"{keys[0]} .. {keys[-1]}",
                f"{word}s_failing_checks": len(failing),
                f"failing_{word}s": ", ".join(cadence.label(p.partition) for p in failing[:20])
                or "none",
                f"{word}s_kept_as_published": ", ".join(cadence.label(p) for p in result.held)
                or "none",
            },
        )
        yield from _evaluations(key, keys, result)
        for part in failing[:10]:
            context.log.warning(
                f"{cadence.label(part.partition)}: {', '.join(part.failed_checks())} failed: "
                + json.dumps({n: part.checks[n] for n in part.failed_checks()}, default=str)
            )
        yield dg.Output(
            None,
            output_name=context.assets_def.get_output_name_for_asset_check_key(
                dg.AssetCheckKey(key, PARTITION_CHECKS_PASSED)
            ),
        )

    return _model
