"""``backfill-assets demo``: the whole safe-backfill story on the embedded warehouse.

1. seed two years of raw orders, refunds and customers;
2. backfill legacy and v2 of every plan through Dagster, one run per ``chunk_days`` chunk;
3. print what was built, and how to open the UI on the same instance and warehouse.
"""

import time

import dagster as dg
import duckdb

from backfill_assets import settings
from backfill_assets.catalog import shipped_plans
from backfill_assets.definitions import defs as lazy_defs
from backfill_assets.runner import run_chunks
from backfill_assets.seed import generate


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


def run_demo(orders_per_day: int = 200, seed: int = 42) -> int:
    started = time.perf_counter()
    plans = shipped_plans()
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    print(f"warehouse:   {settings.warehouse_path()}")
    print(f"dagster home: {settings.dagster_home()}")

    print(f"\n[1/2] seeding {first}..{last} with {orders_per_day} orders a day (seed {seed})")
    with _connect() as conn:
        summary = generate(conn, first, last, orders_per_day, seed)
    print(f"      {summary.orders:,} order rows, {summary.refunds:,} refunds")

    defs = load_definitions()
    failed_runs = 0
    with dg.DagsterInstance.get() as instance:
        for plan in plans:
            window = plan.spec.window
            print(
                f"\n[2/2] backfilling {plan.name} {window.start}..{window.end} "
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
    print("\nbuilt:")
    print(f"  {'plan':<15} {'version':<8} {'days':>5} {'rows':>10} {'failing days':>13}")
    for model, version, days, count, failing in rows:
        print(f"  {model:<15} {version:<8} {days:>5} {count:>10,} {failing:>13}")
    print(f"\ndone in {time.perf_counter() - started:.0f}s")
    print(
        "\nOpen the UI on this warehouse and instance:\n"
        "  .venv/bin/backfill-assets ui        # then http://127.0.0.1:3000\n"
        "Runs, materializations and checks of this demo are under Runs and Assets."
    )
    return 1 if failed_runs else 0
