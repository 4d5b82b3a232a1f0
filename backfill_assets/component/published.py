"""The published view of each plan, the window checks that guard it, and its cutover jobs.

- ``analytics/<plan>``: the view ``analytics.<plan>``; materializing it only makes sure the view
  exists (on the baseline until a promotion). Promotions and rollbacks record materializations
  of it, with the cutover summary as metadata.
- Window checks of ``analytics/<plan>``: whether a version (the candidate unless configured) is
  fit to publish, over the plan's whole window. They sit on the published asset, not on the
  partitioned models, so a chunked backfill does not re-run them for every chunk. They run in
  ``window_checks_<plan>_job``, launched by ``window_checks_<plan>_sensor`` once writes to the
  plan have settled, and every morning by ``monitor_<plan>_schedule`` for the published
  version. Each evaluation is recorded with the state it was made in
  (``backfill.window_verdicts``); the promotion job reuses it when nothing the checks read
  changed since (its log row and materialization say ``verdict_reused_from``), and evaluates
  them itself otherwise. A plan with ``shadow_partitions`` adds
  ``shadow_reconciles_with_baseline`` (``shadow.py``): evaluated on the published version, it
  reconciles the new partitions built by both versions and retires the baseline at the end.
- ``promote_<plan>_job`` and ``rollback_<plan>_job``: the cutover and its undo. A promotion
  prepares everything that could fail (the gate, the cutover summary, its folder) before it
  commits, so a failed run changed nothing and a run that committed succeeds: a summary file
  that cannot be written after the commit is a warning saying how to write it again. A
  rollback goes back to the version the last promotion replaced, or to any version published
  before (``to_version``, or ``to_log_row``: a row of ``backfill.promotions``); it re-checks
  that version's evidence and its consumers' queries and is refused when a partition or a
  consumer of it fails, unless forced with a reason.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from backfill_assets import evidence
from backfill_assets.component.resources import read_session, session
from backfill_assets.cutover import cutover_summary, prepare_folder, summary_path, write_summary
from backfill_assets.plan import Plan
from backfill_assets.publish import (
    PublishError,
    commit_promotion,
    ensure_view,
    evaluate_window,
    prepare_promotion,
    published_version,
    rollback,
)
from backfill_assets.reconcile import Reconciliation
from backfill_assets.report import reconciliation_markdown
from backfill_assets.settings import reports_dir
from backfill_assets.shadow import shadow_check
from backfill_assets.window_checks import WindowCheck, window_check_names

PUBLISHED = "published"  # window-check config: the version users see now
SETTLE_SECONDS = 60  # quiet time after the last write before window checks run
SCHEDULE_TAG = "dagster/schedule_name"  # the tag Dagster puts on runs a schedule launched

CHECK_DESCRIPTIONS = {  # {word}: the plan's partition, day, hour, week or month
    "window_is_complete": "Every {word} of the window has evidence and enough rows; a failure "
    "names the {word}s never built or too thin.",
    "every_partition_passed_checks": "Every {word} of the window passed its own checks (unique "
    "key, null rates, known records); a failure names the {word}s and the checks.",
    "built_with_current_code": "Every {word} was built with the plan's current code_version; a "
    "failure names the {word}s built with older code.",
    "built_from_current_sources": "No source row of any {word} changed since it was built; a "
    "failure names the {word}s to rebuild.",
    "sources_are_valid": "No source row leaves a required column empty; a failure names the "
    "columns and rows.",
    "reconciles_with_baseline": "Every difference from the baseline is explained by a named "
    "rule within the tolerance; a failure names the groups with an unexplained residual.",
    "trend_has_no_unexplained_jumps": "No {word} jumps away from the median around it (of the "
    "same phase, with seasonality); a failure names the {word}s.",
    "enrichment_coverage_met": "Rows per {word} equal the baseline and the new column is filled "
    "often enough; a failure names the {word}s and the coverage.",
    "schema_contract_kept": "The version keeps every column of the published version's table "
    "with its type, unless the plan declares the change under breaking_changes (then the "
    "cutover summary announces it); added columns are fine. A failure names each removed or "
    "retyped column.",
    "downstream_queries_work": "Each consumer query declared under downstream runs against the "
    "version as if it were published (the view re-pointed in a transaction that is always "
    "rolled back), returns at least min_rows rows and keeps its columns; a failure names the "
    "consumer and why. Its totals before and after are in the metadata.",
    "is_fresh": "A warning: the newest {word} built is not older than the newest complete "
    "source {word}.",
    "shadow_reconciles_with_baseline": "Shadow period: after a promotion, the {word}s after the "
    "window built by both the published version and the baseline reconcile (every difference "
    "explained by a rule); a failure names the groups. When every shadow {word} is compared the "
    "baseline is retired (no longer built, table kept) and backfill.shadow_periods records it.",
}


def check_description(plan: Plan, name: str) -> str:
    """What a window check proves and what its failure means, in the plan's words."""
    for rule in plan.spec.checks.referential_integrity:
        if rule.name == name:
            kind = "blocks promotion" if rule.severity == "error" else "a warning"
            return f"Referential integrity ({kind}): {rule.description}"
    return CHECK_DESCRIPTIONS.get(name, name).format(word=plan.cadence.word)


class WindowCheckConfig(dg.Config):
    """Which version the window checks evaluate."""

    version: str = Field(
        default="",
        description="A version of the plan; empty means the plan's candidate, 'published' the "
        "version analytics.<plan> shows now.",
    )


class PromoteConfig(dg.Config):
    """What to publish, who approved it, and why."""

    version: str = Field(description="The version to publish, e.g. v2.")
    approved_by: str = Field(
        default="",
        description="Who approved; must be one of the plan's approvers to count as an approval "
        "(required for risk: high plans). Anyone else is recorded as who launched it.",
    )
    note: str = Field(default="", description="Why, for the log and the cutover summary.")


class RollbackConfig(dg.Config):
    """Who rolls back, why, and (optionally) to which earlier published version."""

    by: str = Field(description="Who is rolling back.")
    reason: str = Field(description="Why, for the log.")
    force: bool = Field(
        default=False,
        description="Roll back even if partitions of the target version (or its consumers' "
        "queries) now fail their checks; the log records that it was forced and which checks "
        "failed.",
    )
    to_version: str = Field(
        default="",
        description="Go back to this version, which must have been published before (the "
        "baseline or any version a promotion or rollback published). Empty: undo the latest "
        "promotion.",
    )
    to_log_row: int | None = Field(
        default=None,
        description="Go back to the version that row of the plan's backfill.promotions log "
        "published (1 = the plan's first move, oldest first). Instead of to_version.",
    )


def _plain(value):
    """A table cell as JSON-safe Python (dates as ISO text, NaN as None)."""
    if pd.isna(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int | str | bool):
        return value
    return str(value)


def reconciliation_table(recon: Reconciliation) -> dg.MetadataValue:
    """The full reconciliation table (worst residual first) as Dagster table metadata."""
    records = [
        dg.TableRecord({k: _plain(v) for k, v in row.items()})
        for row in recon.table.to_dict(orient="records")
    ]
    return dg.MetadataValue.table(records=records)


def published_key(plan: Plan) -> dg.AssetKey:
    return dg.AssetKey(plan.published_path)


def _evaluation(
    key: dg.AssetKey, check: WindowCheck, reused_from: dict | None = None
) -> dg.AssetCheckEvaluation:
    """A check the promotion's gate evaluated, or reused from a recorded verdict (named in
    ``verdict_reused_from``, unless this check was evaluated again)."""
    metadata = check_metadata(check)
    if reused_from and check.name not in reused_from["rechecked"]:
        metadata["verdict_reused_from"] = dg.MetadataValue.json(reused_from)
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check.name,
        passed=check.passed,
        severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def check_metadata(check: WindowCheck) -> dict[str, dg.MetadataValue]:
    """Figures of a window check as Dagster metadata; reconciliation adds its full table."""
    metadata: dict[str, dg.MetadataValue] = {
        "version": dg.MetadataValue.text(check.version),
        "summary": dg.MetadataValue.text(check.summary),
    }
    for name, value in check.figures.items():
        if isinstance(value, (dict, list)):
            metadata[name] = dg.MetadataValue.json(value)
        elif isinstance(value, bool | int | float):
            metadata[name] = dg.MetadataValue.float(float(value))
        else:
            metadata[name] = dg.MetadataValue.text(str(value))
    if check.reconciliation is not None:
        metadata["reconciliation"] = reconciliation_table(check.reconciliation)
        metadata["reconciliation_summary"] = dg.MetadataValue.md(
            reconciliation_markdown(check.reconciliation)
        )
    return metadata


def discontinuity_metadata(plan: Plan, version: str) -> dict[str, dg.MetadataValue]:
    """A forward-only plan publishing ``version``: the view's break in history, named on the
    published asset's materialization (``discontinuity``, ``cutoff``)."""
    text = plan.discontinuity(version)
    if not text:
        return {}
    return {
        "discontinuity": dg.MetadataValue.text(text),
        "cutoff": dg.MetadataValue.text(plan.cadence.label(plan.cutoff)),
    }


def build_published(plan: Plan) -> dg.Definitions:
    """The published asset, its window checks and its jobs, for one plan."""
    key = published_key(plan)

    @dg.asset(
        key=key,
        group_name=plan.name,
        description=(
            f"The published {plan.name}: a view over the promoted version's table. Which "
            f"version it serves is the `published_version` of its latest materialization (each "
            f"promotion and rollback records one). {plan.spec.description}"
        ),
        kinds={"duckdb"},
        pool="duckdb",
        deps=[dg.AssetKey(plan.asset_path(v)) for v in plan.version_names],
        metadata={"view": f"analytics.{plan.name}", "downstream": ", ".join(plan.spec.downstream)},
    )
    def _published(warehouse: DuckDBResource) -> dg.MaterializeResult:
        with session(warehouse) as conn:
            version = ensure_view(conn, plan)
        return dg.MaterializeResult(
            metadata={"published_version": version, **discontinuity_metadata(plan, version)}
        )

    @dg.multi_asset_check(
        name=f"{plan.name}_window_checks",
        specs=[
            dg.AssetCheckSpec(name, asset=key, description=check_description(plan, name))
            for name in window_check_names(plan)
        ],
        pool="duckdb",
    )
    def _window_checks(
        context: dg.AssetCheckExecutionContext,
        config: WindowCheckConfig,
        warehouse: DuckDBResource,
    ):
        with session(warehouse) as conn:
            version = config.version or plan.spec.candidate
            published = published_version(conn, plan)
            if version == PUBLISHED:
                version = published
            # Always evaluated here (this job is how the checks are brought up to date), and
            # recorded with its state key for the promotion to reuse.
            evaluation = evaluate_window(
                conn,
                plan,
                version,
                published,
                context.run.run_id,
                context.run.job_name,
                reuse=False,
            )
            context.log.info(evaluation.note())
            results = list(evaluation.checks)
            if plan.spec.shadow_partitions:
                results.append(shadow_check(conn, plan, version, context.run.run_id))
        for check in results:
            context.log.info(f"{check.name} ({check.version}): {check.summary}")
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=check.name,
                passed=check.passed,
                severity=(
                    dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN
                ),
                metadata=check_metadata(check),
            )

    @dg.op(name=f"promote_{plan.name}", pool="duckdb", out={})  # events only, no output
    def _promote(
        context: dg.OpExecutionContext, config: PromoteConfig, warehouse: DuckDBResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.AssetMaterialization]:
        refusal: PublishError | None = None
        gate = None
        with session(warehouse) as conn:
            try:
                gate, pending = prepare_promotion(
                    conn, plan, config.version, config.approved_by, config.note, context.run.run_id
                )
                # Everything that can fail happens before the commit, so a failed run changed
                # nothing: the summary's text and a folder that can take it.
                summary = cutover_summary(plan, gate, pending)
                folder = reports_dir()
                try:
                    prepare_folder(folder, plan)
                except OSError as error:
                    raise PublishError(
                        f"{plan.name}: promotion of {config.version} not started, nothing "
                        f"changed: the cutover summary cannot be written to "
                        f"{folder / plan.name} ({error}). Fix: make that a writable folder "
                        "(or point BACKFILL_WAREHOUSE at a warehouse whose folder has a "
                        "usable reports/), then launch the promotion again.",
                        gate,
                    ) from error
                entry = commit_promotion(conn, plan, pending)
            except PublishError as error:
                refusal, gate = error, error.gate
        # The window checks the gate evaluated show up on analytics/<plan>, refused or not.
        # Yielded, not logged with context.log_event: Dagster drops an op's logged events when
        # the op then fails, and a refusal is when the failing checks matter most.
        evaluation = gate.evaluation if gate else None
        reused_from = evaluation.reused_from if evaluation else None
        if evaluation is not None:
            context.log.info(evaluation.note())
        for check in gate.checks if gate else []:
            yield _evaluation(key, check, reused_from)
        if refusal is not None:
            problems = gate.problems if gate and gate.problems else [str(refusal)]
            raise dg.Failure(description=str(refusal), metadata={"problems": problems})
        # The view has moved: from here on nothing may fail the run.
        metadata: dict[str, dg.MetadataValue] = {
            "published_version": dg.MetadataValue.text(entry.version),
            "previous_version": dg.MetadataValue.text(entry.previous_version or ""),
            "action": dg.MetadataValue.text("promote"),
            "actor": dg.MetadataValue.text(entry.actor),
            "cutover_summary": dg.MetadataValue.md(summary),
            "window_checks": dg.MetadataValue.text(evaluation.note() if evaluation else ""),
            **discontinuity_metadata(plan, entry.version),
        }
        if reused_from:
            metadata["verdict_reused_from"] = dg.MetadataValue.json(reused_from)
        try:
            path = write_summary(folder, plan, entry, summary)
        except Exception as error:  # whatever it is: the promotion is done; warn, do not fail
            warning = (
                f"{plan.name}: published {entry.version}, but the cutover summary was not "
                f"written to {summary_path(folder, plan, entry)}: {error}. The promotion is "
                f"done and logged. Fix: make room in (or repair) that folder, then run "
                f"`backfill-assets cutover {plan.name}` to write the summary from the log (it "
                f"is also attached to this run's materialization of analytics/{plan.name})."
            )
            context.log.warning(warning)
            metadata["cutover_summary_not_written"] = dg.MetadataValue.text(warning)
        else:
            context.log.info(f"{plan.name}: published {entry.version}; cutover summary at {path}")
            metadata["cutover_summary_file"] = dg.MetadataValue.path(str(path))
        yield dg.AssetMaterialization(
            asset_key=key, description=f"promoted {entry.version}", metadata=metadata
        )

    @dg.op(name=f"rollback_{plan.name}", pool="duckdb")
    def _rollback(
        context: dg.OpExecutionContext, config: RollbackConfig, warehouse: DuckDBResource
    ) -> None:
        try:
            with session(warehouse) as conn:
                entry = rollback(
                    conn,
                    plan,
                    config.by,
                    config.reason,
                    context.run.run_id,
                    force=config.force,
                    to_version=config.to_version.strip() or None,
                    to_log_row=config.to_log_row,
                )
        except PublishError as error:
            raise dg.Failure(description=str(error)) from error
        failing = entry.evidence.get("failing_checks", {})
        if failing:
            context.log.warning(
                f"{plan.name}: rollback to {entry.version} forced by {entry.actor} although "
                f"{len(failing)} check(s) fail: "
                + "; ".join(f"{name}: {summary}" for name, summary in failing.items())
            )
        context.log.info(f"{plan.name}: rolled back to {entry.version} by {entry.actor}")
        context.log_event(
            dg.AssetMaterialization(
                asset_key=key,
                description=f"rolled back to {entry.version}",
                metadata={
                    "published_version": entry.version,
                    "previous_version": entry.previous_version or "",
                    "action": "rollback",
                    "by": entry.actor,
                    "reason": entry.reason,
                    "forced": bool(entry.evidence.get("forced")),
                    "failing_checks": dg.MetadataValue.json(failing),
                    "returns_to": dg.MetadataValue.json(entry.evidence["returns_to"]),
                    **discontinuity_metadata(plan, entry.version),
                },
            )
        )

    @dg.job(
        name=f"promote_{plan.name}_job",
        description=(
            f"Publish a version of {plan.name} if every check passed for every "
            f"{plan.cadence.word} of the window"
            + (" and a plan approver approved it." if plan.spec.risk == "high" else ".")
        ),
    )
    def promote_job() -> None:
        _promote()

    @dg.job(
        name=f"rollback_{plan.name}_job",
        description=(
            f"Point analytics.{plan.name} back at the version the last promotion replaced, or "
            "at an earlier published version (to_version, to_log_row), if its evidence and "
            "consumers still pass."
        ),
    )
    def rollback_job() -> None:
        _rollback()

    window_job = dg.define_asset_job(
        f"window_checks_{plan.name}_job",
        selection=dg.AssetSelection.checks(_window_checks),
        description=f"Evaluate the window checks of {plan.name} (after a backfill).",
    )

    @dg.sensor(
        name=f"window_checks_{plan.name}_sensor",
        description=(
            f"Runs window_checks_{plan.name}_job once writes to {plan.name} have settled "
            "(a backfill or a repair finished), so the checks never show a stale green."
        ),
        target=window_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _after_writes(context: dg.SensorEvaluationContext, warehouse: DuckDBResource):
        try:
            with read_session(warehouse) as conn:
                last, settled = evidence.last_write(conn, plan, SETTLE_SECONDS)
        except duckdb.Error as error:
            return dg.SkipReason(f"warehouse not readable now, trying next tick: {error}")
        if last is None:
            return dg.SkipReason(f"nothing of {plan.name} built yet")
        if context.cursor == str(last):
            return dg.SkipReason(f"window checks already requested after the write at {last}")
        if not settled:
            return dg.SkipReason(f"writes at {last} still settling ({SETTLE_SECONDS}s)")
        context.update_cursor(str(last))
        # Someone already evaluated the candidate's checks after that write (the job launched by
        # hand, or a promotion, which evaluates them itself): another run would only repeat it.
        # The monitoring schedule's runs check the published version, so they do not count.
        since = last.replace(tzinfo=dt.UTC)
        for job_name in (window_job.name, promote_job.name):
            records = context.instance.get_run_records(
                dg.RunsFilter(job_name=job_name, created_after=since), limit=10
            )
            if any(SCHEDULE_TAG not in r.dagster_run.tags for r in records):
                return dg.SkipReason(f"{job_name} already ran after the write at {last}")
        return dg.RunRequest(run_key=f"{plan.name}:{last}")

    monitor = dg.ScheduleDefinition(
        name=f"monitor_{plan.name}_schedule",
        description=(
            f"After cutover: every morning, re-evaluate the window checks (and freshness) of the "
            f"version analytics.{plan.name} publishes."
        ),
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        target=window_job,
        run_config={"ops": {f"{plan.name}_window_checks": {"config": {"version": PUBLISHED}}}},
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return dg.Definitions(
        assets=[_published],
        asset_checks=[_window_checks],
        jobs=[promote_job, rollback_job, window_job],
        sensors=[_after_writes],
        schedules=[monitor],
    )
