"""``backfill-assets demo``: the whole safe-backfill story on the embedded warehouse.

1. seed two years of raw orders, refunds and customers;
2. backfill legacy and v2 of every plan through Dagster, one run per ``chunk_days`` chunk;
3. run every plan's window checks and write its reconciliation report;
4. promote each plan's candidate with its promotion job (recording an approval from a plan
   approver where the plan is ``risk: high``) and print the cutover summaries;
5. print how to open the UI on the same instance and warehouse.
"""

import time

import dagster as dg
import duckdb

from backfill_assets import settings
from backfill_assets.catalog import shipped_plans
from backfill_assets.definitions import defs as lazy_defs
from backfill_assets.plan import Plan
from backfill_assets.reconcile import reconcile
from backfill_assets.report import verdict, write_html
from backfill_assets.runner import run_chunks
from backfill_assets.seed import generate
from backfill_assets.status import status_text

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _connect() -> duckdb.DuckDBPyConnection:
    from backfill_assets.cli import connect

    return connect()


def load_definitions() -> dg.Definitions:
    """The code location's definitions, as ``dagster dev`` would load them."""
    return lazy_defs()


def built_summary(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    """Per plan and version: days with evidence, rows, days failing a partition check."""
    return conn.execute(
        """
        SELECT model, version, count(*) AS days, sum(row_count) AS rows,
               count(*) FILTER (WHERE NOT checks_passed) AS failing_days
        FROM backfill.partition_evidence
        GROUP BY model, version
        ORDER BY model, version
        """
    ).fetchall()


def _print_chunk(run) -> None:
    status = "ok" if run.success else "FAILED (see the run in the UI)"
    print(f"      {run.first}..{run.last}  {run.seconds:5.1f}s  {status}", flush=True)


def _window_checks(defs: dg.Definitions, instance: dg.DagsterInstance, plan: Plan) -> int:
    """Run the plan's window-check job; write and name its reconciliation report."""
    job = defs.resolve_job_def(f"window_checks_{plan.name}_job")
    result = job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
    evaluations = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    print(f"      {plan.name} ({plan.spec.candidate}):")
    for evaluation in evaluations:
        state = "passed" if evaluation.passed else "FAILED"
        summary = evaluation.metadata["summary"].value
        print(f"        {evaluation.check_name:<32} {state:<7} {summary[:90]}")
    with _connect() as conn:
        recon = reconcile(conn, plan)
    path = write_html(recon, settings.reports_dir() / plan.name / "reconciliation.html")
    print(f"        reconciliation: {verdict(recon)}")
    print(f"        report: {path}")
    return 0 if result.success else 1


def _promote(defs: dg.Definitions, instance: dg.DagsterInstance, plan: Plan) -> int:
    """Promote the plan's candidate through its promotion job and print the cutover summary."""
    approver = plan.spec.approvers[0] if plan.spec.approvers else ""
    config = {
        "version": plan.spec.candidate,
        "approved_by": approver if plan.spec.risk == "high" else "",
        "note": "demo: backfilled, checked and reconciled end to end",
    }
    job = defs.resolve_job_def(f"promote_{plan.name}_job")
    result = job.execute_in_process(
        instance=instance,
        run_config={**QUIET, "ops": {f"promote_{plan.name}": {"config": config}}},
        raise_on_error=False,
    )
    if not result.success:
        failure = next((e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None)
        reason = failure.step_failure_data.user_failure_data if failure else None
        print(f"      {plan.name}: promotion refused:")
        print(f"        {reason.description if reason else 'see the run in the UI'}")
        return 1
    materialization = next(
        e.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    )
    print(f"      {plan.name}: published {plan.spec.candidate}; cutover summary:\n")
    summary = materialization.metadata["cutover_summary"].value
    print("        " + summary.replace("\n", "\n        "))
    print(f"        (saved at {materialization.metadata['cutover_summary_file'].value})\n")
    return 0


def run_demo(orders_per_day: int = 200, seed: int = 42) -> int:
    started = time.perf_counter()
    plans = shipped_plans()
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    print(f"warehouse:   {settings.warehouse_path()}")
    print(f"dagster home: {settings.dagster_home()}")

    print(f"\n[1/4] seeding {first}..{last} with {orders_per_day} orders a day (seed {seed})")
    with _connect() as conn:
        summary = generate(conn, first, last, orders_per_day, seed)
    print(f"      {summary.orders:,} order rows, {summary.refunds:,} refunds")

    defs = load_definitions()
    failed_runs = 0
    with dg.DagsterInstance.get() as instance:
        for plan in plans:
            window = plan.spec.window
            print(
                f"\n[2/4] backfilling {plan.name} {window.start}..{window.end} "
                f"({plan.window_days} days, versions {', '.join(plan.version_names)}) "
                f"in chunks of {plan.spec.chunk_days} days"
            )
            build_started = time.perf_counter()
            runs = run_chunks(defs, instance, plan, window.start, window.end, progress=_print_chunk)
            failed = [r for r in runs if not r.success]
            failed_runs += len(failed)
            print(
                f"      {len(runs)} runs in {time.perf_counter() - build_started:.0f}s"
                + (
                    f", {len(failed)} failed: {[f'{r.first}..{r.last}' for r in failed]}"
                    if failed
                    else ""
                )
            )

        with _connect() as conn:
            rows = built_summary(conn)
        print("\n      built:")
        print(f"      {'plan':<15} {'version':<8} {'days':>5} {'rows':>10} {'failing days':>13}")
        for model, version, days, count, failing in rows:
            print(f"      {model:<15} {version:<8} {days:>5} {count:>10,} {failing:>13}")

        print("\n[3/4] window checks and reconciliation")
        for plan in plans:
            failed_runs += _window_checks(defs, instance, plan)

        print("\n[4/4] promotion")
        for plan in plans:
            failed_runs += _promote(defs, instance, plan)

    with _connect() as conn:
        print("\nstatus:")
        print("  " + status_text(conn, list(plans)).replace("\n", "\n  "))
    print(f"\ndone in {time.perf_counter() - started:.0f}s")
    print(
        "\nOpen the UI on this warehouse and instance:\n"
        "  .venv/bin/backfill-assets ui        # then http://127.0.0.1:3000\n"
        "Runs, materializations and checks of this demo are under Runs and Assets."
    )
    return 1 if failed_runs else 0
