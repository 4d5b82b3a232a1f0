"""Running model builds through Dagster from a script: one ranged run per chunk of days.

This is what a backfill launched from the UI does under ``BackfillPolicy.multi_run(chunk_days)``
(one run per chunk, each tagged with its partition range), executed in this process against a
real Dagster instance, so the runs, materializations and check results show up in the UI.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from backfill_assets.partitions import chunks, range_tags
from backfill_assets.plan import Plan


@dataclass(frozen=True)
class ChunkRun:
    """One run of one chunk."""

    plan: str
    first: dt.date
    last: dt.date
    run_id: str
    success: bool
    seconds: float


def model_keys(plan: Plan, versions: list[str] | None = None) -> list[dg.AssetKey]:
    return [dg.AssetKey([v, plan.name]) for v in (versions or plan.version_names)]


def run_chunks(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    plan: Plan,
    first: dt.date,
    last: dt.date,
    versions: list[str] | None = None,
    chunk_days: int | None = None,
    tags: dict[str, str] | None = None,
    progress: Callable[[ChunkRun], None] | None = None,
) -> list[ChunkRun]:
    """Build ``first``..``last`` for the plan's versions, one Dagster run per chunk."""
    job = defs.resolve_implicit_global_asset_job_def()
    selection = model_keys(plan, versions)
    runs = []
    for chunk_first, chunk_last in chunks(first, last, chunk_days or plan.spec.chunk_days):
        started = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=selection,
            tags={**(tags or {}), **range_tags(chunk_first, chunk_last)},
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        run = ChunkRun(
            plan.name,
            chunk_first,
            chunk_last,
            result.run_id,
            result.success,
            time.perf_counter() - started,
        )
        runs.append(run)
        if progress:
            progress(run)
    return runs
