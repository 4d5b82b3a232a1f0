"""``backfill-assets demo``: the whole safe-backfill story on the embedded warehouse.

1. seed two years of raw orders, refunds and customers (the same rows for the same seed, so a
   second run finds every partition current and rebuilds and publishes nothing);
2. start ``dagster dev`` (webserver + daemon) on the project's Dagster home and launch ONE
   partition backfill of legacy and v2 of every plan over its window, exactly as the UI does;
   the daemon splits it into runs of ``chunk`` partitions, one writer at a time;
3. run every plan's window-check job, then its promotion job for the candidate (with an
   approval from a plan approver where the plan is ``risk: high``);
4. stop ``dagster dev`` (the warehouse is read only once no run can be writing), print the
   window checks, write the reconciliation reports, print the cutover summaries and the status,
   and say how to open the UI, where the backfill, runs, checks and promotions are visible.
"""

import time
from pathlib import Path

import dagster as dg
import duckdb

from backfill_assets import evidence, settings
from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.component.models import partition_key
from backfill_assets.definitions import defs as lazy_defs
from backfill_assets.example.dagster_dev import DagsterDev
from backfill_assets.example.generator import generate
from backfill_assets.plan import Plan
from backfill_assets.preflight import preflight
from backfill_assets.publish import evaluate_gate, published_version
from backfill_assets.reconcile import reconcile
from backfill_assets.report import verdict, write_html
from backfill_assets.status import status_text
from backfill_assets.window_checks import run_window_checks


def _connect() -> duckdb.DuckDBPyConnection:
    from backfill_assets.cli import connect

    return connect()


def load_definitions() -> dg.Definitions:
    """The code location's definitions, as ``dagster dev`` would load them."""
    return lazy_defs()


def _backfill(dev: DagsterDev, plans: tuple[Plan, ...]) -> bool:
    """One backfill of every version of every plan over its window, each in its own cadence."""
    ranges = [
        (
            [version, plan.name],
            partition_key(plan, plan.window_start),
            partition_key(plan, plan.window_partitions[-1]),
        )
        for plan in plans
        for version in plan.version_names
    ]
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    backfill_id = dev.launch_ranges(ranges, f"demo: {len(ranges)} models {first}..{last}")
    print(f"      backfill {backfill_id}: {', '.join('/'.join(r[0]) for r in ranges)}")
    started, shown = time.perf_counter(), -1
    while not (state := dev.backfill(backfill_id)).finished:
        done = sum(r["status"] == "SUCCESS" for r in state.runs)
        if done != shown:
            elapsed = time.perf_counter() - started
            print(
                f"      {done} runs done, {len(state.runs)} launched ({elapsed:.0f}s)", flush=True
            )
            shown = done
        time.sleep(3)
    failed = [r for r in state.runs if r["status"] != "SUCCESS"]
    print(
        f"      backfill {state.status.lower()}: {len(state.runs)} runs in "
        f"{time.perf_counter() - started:.0f}s" + (f", {len(failed)} failed" if failed else "")
    )
    return not failed and state.status in {"COMPLETED", "COMPLETED_SUCCESS"}


def _run_job(dev: DagsterDev, plan: Plan, job: str, run_config: dict | None = None) -> bool:
    """Launch a job, wait for it, and say how it ended; a failed run says why."""
    run_id = dev.launch_job(f"{job}_{plan.name}_job", run_config)
    status = dev.wait_run(run_id)
    print(f"      {job}_{plan.name}_job: {status.lower()}")
    if status != "SUCCESS":
        for reason in dev.failure_reasons(run_id):
            print("        " + reason.replace("\n", "\n        "))
    return status == "SUCCESS"


def _left_to_build(conn: duckdb.DuckDBPyConnection, plans: tuple[Plan, ...]) -> list[Plan]:
    """The plans with a partition of a version not current (never built, or built from other
    sources or code): a demo run again on the same data rebuilds nothing."""
    return [p for p in plans if any(w.to_build for w in preflight(conn, p).work)]


def _promotion_config(plan: Plan) -> dict:
    """Promote the candidate; a high-risk plan records an approval from a plan approver."""
    config = {
        "version": plan.spec.candidate,
        "approved_by": plan.spec.approvers[0] if plan.spec.risk == "high" else "",
        "note": "demo: backfilled, checked and reconciled end to end",
    }
    return {"ops": {f"promote_{plan.name}": {"config": config}}}


def _report(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Print the window checks and the cutover summary; write the reconciliation report."""
    print(f"\n  {plan.name}: window checks of {plan.spec.candidate}")
    for check in run_window_checks(conn, plan, plan.spec.candidate):
        state = "passed" if check.passed else ("warning" if not check.blocking else "FAILED")
        print(f"    {check.name:<32} {state:<7} {check.summary[:88]}")
    recon = reconcile(conn, plan)
    path = write_html(recon, settings.reports_dir() / plan.name / "reconciliation.html")
    print(f"    reconciliation: {verdict(recon)}\n    report: {path}")
    summaries = sorted((settings.reports_dir() / plan.name).glob("cutover-*.md"))
    if published_version(conn, plan) == plan.spec.candidate and summaries:
        print(f"\n  {plan.name}: cutover summary ({summaries[-1]})\n")
        print("    " + summaries[-1].read_text().replace("\n", "\n    "))
    else:
        approver = _promotion_config(plan)["ops"][f"promote_{plan.name}"]["config"]["approved_by"]
        gate = evaluate_gate(conn, plan, plan.spec.candidate, approver)
        print("\n    " + gate.report().replace("\n", "\n    "))


def run_demo(orders_per_day: int = 200, seed: int = 42) -> int:
    started = time.perf_counter()
    plans = tuple(load_catalog(SHIPPED_DEFS).plans)
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    home = Path(settings.dagster_home())
    print(f"warehouse:    {settings.warehouse_path()}")
    print(f"dagster home: {home}")

    print(f"\n[1/4] seeding {first}..{last} with {orders_per_day} orders a day (seed {seed})")
    with _connect() as conn:
        summary = generate(conn, first, last, orders_per_day, seed)
        print(f"      {summary.orders:,} order rows, {summary.refunds:,} refunds")
        to_build = _left_to_build(conn, plans)
        published = [p for p in plans if published_version(conn, p) == p.spec.candidate]

    print("\n[2/4] starting dagster dev (webserver + daemon) on 127.0.0.1")
    ok = True
    with DagsterDev(home, settings.warehouse_path()) as dev:
        if to_build:
            print(f"      {dev.url} is up; backfilling as the UI does (Assets → Materialize)")
            ok &= _backfill(dev, tuple(to_build))
        else:
            print(
                f"      {dev.url} is up; nothing to backfill: every partition of every plan is "
                "already built from these sources with this code"
            )
        print("\n[3/4] window checks, then promotion, each a job run through the same API")
        for plan in plans:
            ok &= _run_job(dev, plan, "window_checks")
        for plan in plans:
            if plan in published:
                print(
                    f"      promote_{plan.name}_job: not needed, {plan.spec.candidate} is "
                    "already published"
                )
            else:
                ok &= _run_job(dev, plan, "promote", _promotion_config(plan))
        print("      stopping dagster dev")

    print("\n[4/4] results")
    with _connect() as conn:
        print(f"\n  {'plan':<25} {'version':<8} {'partitions':>10} {'rows':>10} {'failing':>8}")
        for model, version, partitions, count, failing in evidence.summary(conn):
            print(f"  {model:<25} {version:<8} {partitions:>10} {count:>10,} {failing:>8}")
        for plan in plans:
            _report(conn, plan)
        print("status:")
        print("  " + status_text(conn, list(plans)).replace("\n", "\n  "))
    print(f"\ndone in {time.perf_counter() - started:.0f}s")
    print(
        "\nOpen the UI on this warehouse and instance:\n"
        "  .venv/bin/backfill-assets ui        # then http://127.0.0.1:3000\n"
        "The demo's backfill is under Runs → Backfills; its runs, the checks on every\n"
        "asset and the promotions (materializations of analytics/*) are all there."
    )
    return 0 if ok else 1
