"""``backfill-assets demo``: the whole safe-backfill story on the embedded warehouse, or with
``--lake`` on a DuckLake (``lake.lake_in_use``: the configured one, else an embedded PostgreSQL
catalog beside the warehouse file, with its own Dagster home and several writers at a time).

1. seed two years of raw orders, refunds and customers (the same rows for the same seed, so a
   second run finds every partition current and rebuilds and publishes nothing);
2. start the Dagster webserver on the project's Dagster home and launch ONE partition backfill
   of legacy and v2 of every plan over its window, exactly as the UI does, then the daemon
   (``DagsterDev(daemon_after_launch=True)``: its first look finds the backfill, with no wait
   for its 30 s loop); the daemon splits the backfill into runs of ``chunk`` partitions, one
   writer at a time on the DuckDB file (``settings.writer_pool_limit``: several on a lake);
3. run every plan's window-check job, then its promotion job for the candidate (with an
   approval from a plan approver where the plan is ``risk: high``);
4. stop the webserver and daemon (the warehouse is read only once no run can be writing), print the
   window checks, write the reconciliation reports, print the cutover summaries and the status,
   and say how to open the UI, where the backfill, runs, checks and promotions are visible.
"""

import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb

from backfill_assets import evidence, settings
from backfill_assets import lake as lakes
from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.component.models import partition_key
from backfill_assets.definitions import defs as lazy_defs
from backfill_assets.enrichment import changed_columns
from backfill_assets.example.dagster_dev import BackfillState, DagsterDev
from backfill_assets.example.generator import generate
from backfill_assets.instance import InstanceStorageError, instance_storage
from backfill_assets.plan import Plan
from backfill_assets.preflight import preflight
from backfill_assets.progress import ProgressLine, duration, progress_text
from backfill_assets.publish import evaluate_gate, published_version
from backfill_assets.reconcile import reconcile
from backfill_assets.report import verdict, write_html
from backfill_assets.status import status_text
from backfill_assets.window_checks import run_window_checks

WIDTH = 100  # the longest line the demo prints (a path or URL longer than that stays whole)


def wrap(text: str, indent: str = "", hang: str = "  ") -> str:
    """``text`` with ``indent`` before every line, each line wider than ``WIDTH`` broken at
    spaces; a continued line keeps the line's own indentation plus ``hang`` (two spaces past
    a ``- `` bullet or in a table row). Markdown tables become rows of cells joined by
    `` | ``, without their separator rows, so a row can be wrapped too."""
    out = []
    for line in text.split("\n"):
        if set(line.strip()) <= set("|-: ") and "|-" in line:
            continue  # a table's separator row: |---|---|
        row = line.startswith("| ") and line.rstrip().endswith("|")
        if row:
            line = line.strip()[2:-2].strip()  # "| a | b |" -> "a | b", wrapped as one text
        body = line.lstrip(" ")
        lead = indent + line[: len(line) - len(body)]
        more = "  " if row or body.startswith(("- ", "* ")) else hang
        out.append(
            textwrap.fill(
                body,
                WIDTH,
                initial_indent=lead,
                subsequent_indent=lead + more,
                break_long_words=False,
                break_on_hyphens=False,
            )
            if body
            else ""
        )
    return "\n".join(out)


def say(text: str, indent: str = "", hang: str = "  ") -> None:
    """Print ``wrap(text, indent, hang)``."""
    print(wrap(text, indent, hang), flush=True)


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
            plan.asset_path(version),
            partition_key(plan, plan.window_start),
            partition_key(plan, plan.window_partitions[-1]),
        )
        for plan in plans
        for version in plan.version_names
    ]
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    started = time.monotonic()
    backfill_id = dev.launch_ranges(ranges, f"demo: {len(ranges)} models {first}..{last}")
    say(f"backfill {backfill_id}: {', '.join('/'.join(r[0]) for r in ranges)}", "      ")
    line = ProgressLine()

    def show(state: BackfillState) -> None:
        if not state.finished:  # the finished state gets its own line below
            line.update("      " + _progress(state, time.monotonic() - started))

    # Every run finished is the end of the work: the daemon would mark the backfill completed
    # on its next look, up to 30 s later, and the window checks need not wait for that.
    state = dev.wait_backfill(backfill_id, timeout=None, progress=show, runs_only=True)
    failed = [r for r in state.runs if r["status"] != "SUCCESS"]
    line.finish(
        f"      backfill: {len(state.runs):,} runs for {state.targeted:,} partitions finished in "
        f"{duration(time.monotonic() - started)}"
        + (f", {len(failed):,} runs failed" if failed else ", every run succeeded")
    )
    return not failed


def _progress(state: BackfillState, elapsed: float) -> str:
    """Partitions done of all targeted (each model's partition counts once), runs done of
    those launched so far (``+``: more to come), elapsed time and ETA."""
    return progress_text(
        state.materialized + state.failed,
        state.targeted,
        elapsed,
        failed=state.failed,
        runs_done=state.runs_done,
        runs_total=len(state.runs),
        more_runs=not state.all_runs_launched,
    )


def _run_jobs(dev: DagsterDev, jobs: list[tuple[str, dict | None]]) -> bool:
    """Launch the jobs together (the queue runs them in that order, one writer at a time, with
    no pause between them), wait for each and say how it ended; a failed run says why."""
    launched = [(job, dev.launch_job(job, config)) for job, config in jobs]
    ok = True
    for job, run_id in launched:
        status = dev.wait_run(run_id)
        print(f"      {job}: {status.lower()}")
        if status != "SUCCESS":
            for reason in dev.failure_reasons(run_id):
                say(reason, "        ")
        ok &= status == "SUCCESS"
    return ok


def _left_to_build(conn: duckdb.DuckDBPyConnection, plans: tuple[Plan, ...]) -> list[Plan]:
    """The plans with a partition of a version not current (never built, or built from other
    sources or code): a demo run again on the same data rebuilds nothing."""
    return [p for p in plans if any(w.to_build for w in preflight(conn, p).work)]


def approver(plan: Plan) -> str:
    """Who signs off an unattended promotion: a plan approver where the plan is ``risk:
    high``, nobody otherwise."""
    return plan.spec.approvers[0] if plan.spec.risk == "high" else ""


def promotion_config(
    plan: Plan, note: str = "demo: backfilled, checked and reconciled end to end"
) -> dict:
    """The run config of ``promote_<plan>_job`` promoting the candidate, approved by
    ``approver`` (the demo's, the benchmarks' and the lake tests' promotions)."""
    config = {"version": plan.spec.candidate, "approved_by": approver(plan), "note": note}
    return {"ops": {f"promote_{plan.name}": {"config": config}}}


def _report(conn: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Print the window checks and the cutover summary; write the reconciliation report."""
    print(f"\n  {plan.name}: window checks of {plan.spec.candidate}")
    for check in run_window_checks(conn, plan, plan.spec.candidate):
        state = "passed" if check.passed else ("warning" if not check.blocking else "FAILED")
        # The summary wraps under itself, so the names and verdicts stay a column.
        head = f"    {check.name:<32} {state:<7} "
        say(head + check.summary, hang=" " * (len(head) - 4))
    recon = reconcile(conn, plan)
    changes = changed_columns(conn, plan)
    path = write_html(recon, settings.reports_dir() / plan.name / "reconciliation.html", changes)
    say(f"reconciliation: {verdict(recon)}", "    ")
    print(f"    report: {path}")  # a path is not wrapped: it stays one thing to copy
    summaries = sorted((settings.reports_dir() / plan.name).glob("cutover-*.md"))
    if published_version(conn, plan) == plan.spec.candidate and summaries:
        print(f"\n  {plan.name}: cutover summary\n  {summaries[-1]}\n")
        say(summaries[-1].read_text(), "    ", hang="")  # paragraphs stay flush
    else:
        gate = evaluate_gate(conn, plan, plan.spec.candidate, approver(plan))
        print()
        say(gate.report(), "    ")


def run_demo(orders_per_day: int = 200, seed: int = 42) -> int:
    started = time.perf_counter()
    plans = tuple(load_catalog(SHIPPED_DEFS).plans)
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    home = Path(settings.dagster_home())
    lake = lakes.from_env()
    writers = settings.writer_pool_limit()
    print(f"warehouse:    {lake.describe() if lake else settings.warehouse_path()}")
    print(f"dagster home: {home} ({settings.dagster_storage()} storage)")
    print(
        f"writers:      {writers} run(s) at a time "
        + (f"({settings.LAKE_WRITERS_ENV})" if lake else "(one writing process per DuckDB file)")
    )

    print(f"\n[1/4] seeding {first}..{last} with {orders_per_day} orders a day (seed {seed})")
    with _connect() as conn:
        summary = generate(conn, first, last, orders_per_day, seed)
        print(f"      {summary.orders:,} order rows, {summary.refunds:,} refunds")
        to_build = _left_to_build(conn, plans)
        published = [p for p in plans if published_version(conn, p) == p.spec.candidate]

    print("\n[2/4] starting the Dagster webserver on 127.0.0.1; the daemon starts at the launch")
    ok = True
    try:
        with (
            instance_storage(home) as storage,
            DagsterDev(
                storage.home, settings.warehouse_path(), env=storage.env, daemon_after_launch=True
            ) as dev,
        ):
            if to_build:
                print(f"      {dev.url} is up; backfilling as the UI does (Assets → Materialize)")
                ok &= _backfill(dev, tuple(to_build))
            else:
                print(f"      {dev.url} is up")
                say(
                    "nothing to backfill: every partition of every plan is already built from "
                    "these sources with this code",
                    "      ",
                )
            print("\n[3/4] window checks, then promotion, each a job run through the same API")
            jobs = [(f"window_checks_{plan.name}_job", None) for plan in plans]
            for plan in plans:
                if plan in published:
                    print(
                        f"      promote_{plan.name}_job: not needed, {plan.spec.candidate} is "
                        "already published"
                    )
                else:
                    jobs.append((f"promote_{plan.name}_job", promotion_config(plan)))
            ok &= _run_jobs(dev, jobs)
            print("      stopping the webserver and daemon")
    except InstanceStorageError as error:
        print(f"      {error}")
        return 1

    print("\n[4/4] results")
    with _connect() as conn:
        print(f"\n  {'plan':<25} {'version':<8} {'partitions':>10} {'rows':>10} {'failing':>8}")
        for model, version, partitions, count, failing in evidence.summary(conn):
            print(f"  {model:<25} {version:<8} {partitions:>10,} {count:>10,} {failing:>8,}")
        for plan in plans:
            _report(conn, plan)
        print("status:")
        say(status_text(conn, list(plans)), "  ")
    print(f"\ndone in {duration(time.perf_counter() - started)}")
    print(
        "\nOpen the UI on this warehouse and instance:\n"
        f"  {_ui_command(lake is not None)}    # then http://127.0.0.1:3000\n"
        "The demo's backfill is under Runs → Backfills; its runs, the checks on every\n"
        "asset and the promotions (materializations of analytics/*) are all there."
    )
    if lake is not None:
        say(
            "On the lake: the same lake, Dagster home and writer pool; "
            + (
                "the embedded catalog runs while the UI does."
                if lake.data_path == str(settings.lake_root() / lakes.DATA_FOLDER)
                else f"keep {lakes.CATALOG_ENV} and {lakes.DATA_PATH_ENV} set."
            )
        )
    return 0 if ok else 1


def _ui_command(lake: bool) -> str:
    """The command that opens the UI on what the demo built: the same installed command
    (``.venv-lake/bin/backfill-assets`` for the lake), with ``--lake`` on a lake."""
    command = Path(sys.argv[0]) if Path(sys.argv[0]).name == "backfill-assets" else None
    if command is None:
        shown = "backfill-assets"
    elif command.is_absolute() and command.is_relative_to(Path.cwd()):
        shown = str(command.relative_to(Path.cwd()))
    else:
        shown = str(command)
    return f"{shown} ui" + (" --lake" if lake else "")
