"""The ``backfill-assets`` command.

    backfill-assets plan daily_revenue
    backfill-assets seed --start 2024-01-01 --end 2025-12-31 --orders-per-day 200 --seed 42
    backfill-assets load --orders orders.parquet --refunds refunds.csv --customers customers.csv
    backfill-assets demo
    backfill-assets reconcile daily_revenue
    backfill-assets status
    backfill-assets arrive --days 3 --rows 5
    backfill-assets ui

Every command uses ``BACKFILL_WAREHOUSE`` and ``DAGSTER_HOME`` when set, else the project's own
warehouse file and Dagster home (see ``settings.py``).
"""

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from backfill_assets import settings
from backfill_assets.seed import generate, load_source_files
from backfill_assets.warehouse import check_warehouse_name


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write it as YYYY-MM-DD"
        ) from None


def connect() -> duckdb.DuckDBPyConnection:
    """Open the configured warehouse file, creating its folder on first use."""
    path = Path(settings.warehouse_path())
    check_warehouse_name(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path))


def use_project_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at the project's instance unless the caller chose one."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def cmd_seed(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    with connect() as conn:
        summary = generate(conn, args.start, args.end, args.orders_per_day, args.seed)
    print(
        f"seeded {settings.warehouse_path()}: {summary.start}..{summary.end}, "
        f"{summary.orders:,} order rows, {summary.refunds:,} refunds, "
        f"{summary.customers:,} customer history rows in {time.perf_counter() - started:.1f}s"
    )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    files = {
        table: path
        for table, path in (
            ("raw.orders", args.orders),
            ("raw.refunds", args.refunds),
            ("raw.customers", args.customers),
        )
        if path
    }
    if not files:
        print("nothing to load: give --orders, --refunds and/or --customers", file=sys.stderr)
        return 2
    with connect() as conn:
        counts = load_source_files(conn, files)
    for table, count in counts.items():
        print(f"loaded {count:,} rows into {table}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from backfill_assets.demo import run_demo

    use_project_dagster_home()
    return run_demo(orders_per_day=args.orders_per_day, seed=args.seed)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from backfill_assets.catalog import plan_named
    from backfill_assets.reconcile import reconcile
    from backfill_assets.report import reconciliation_text, write_html

    plan = plan_named(args.plan)
    with connect() as conn:
        recon = reconcile(conn, plan)
    print(reconciliation_text(recon))
    path = write_html(
        recon, args.html or settings.reports_dir() / plan.name / "reconciliation.html"
    )
    print(f"\nHTML report: {path}")
    return 0 if recon.passed else 1


def cmd_status(args: argparse.Namespace) -> int:
    from backfill_assets.catalog import plan_named, shipped_plans
    from backfill_assets.status import status_text

    plans = [plan_named(args.plan)] if args.plan else list(shipped_plans())
    with connect() as conn:
        print(status_text(conn, plans))
    return 0


def cmd_arrive(args: argparse.Namespace) -> int:
    from backfill_assets.catalog import shipped_plans
    from backfill_assets.late import append_late_rows, pick_days

    plans = shipped_plans()
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    with connect() as conn:
        days = pick_days(conn, first, last, args.days, args.seed)
        if not days:
            print("no source days to add late rows to: seed or load data first", file=sys.stderr)
            return 1
        arrival = append_late_rows(conn, days, args.rows, args.seed)
    print(
        f"appended {arrival.orders} late orders, {arrival.resent} re-sent orders and "
        f"{arrival.refunds} late refunds for {', '.join(str(d) for d in arrival.days)}"
    )
    print("late_data_sensor will request a repair of exactly those days for each built version.")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from backfill_assets.catalog import plan_named
    from backfill_assets.plan import PlanError
    from backfill_assets.preflight import preflight

    try:
        plan = plan_named(args.plan)
    except PlanError as error:
        print(f"NOT READY: the plan does not load.\n{error}")
        return 1
    with connect() as conn:
        report = preflight(conn, plan)
    print(report.text())
    return 0 if report.ready else 1


def cmd_ui(args: argparse.Namespace) -> int:
    home = use_project_dagster_home()
    settings.set_writer_pool_limit(home)
    os.environ.setdefault("BACKFILL_WAREHOUSE", settings.warehouse_path())
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(settings.PROJECT_DIR / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(f"DAGSTER_HOME={home} BACKFILL_WAREHOUSE={os.environ['BACKFILL_WAREHOUSE']}")
    print(" ".join(command))
    return subprocess.call(command, cwd=settings.PROJECT_DIR)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="backfill-assets", description=__doc__.split("\n")[0])
    sub = root.add_subparsers(dest="command", required=True)

    seed = sub.add_parser("seed", help="write a generated raw data set into the warehouse")
    seed.add_argument("--start", type=_date, default=dt.date(2024, 1, 1))
    seed.add_argument("--end", type=_date, default=dt.date(2025, 12, 31))
    seed.add_argument("--orders-per-day", type=int, default=200)
    seed.add_argument("--seed", type=int, default=42)
    seed.set_defaults(func=cmd_seed)

    load = sub.add_parser("load", help="replace raw tables with Parquet or CSV files")
    load.add_argument("--orders", type=Path)
    load.add_argument("--refunds", type=Path)
    load.add_argument("--customers", type=Path)
    load.set_defaults(func=cmd_load)

    demo = sub.add_parser("demo", help="seed, backfill both plans, check, promote, summarize")
    demo.add_argument("--orders-per-day", type=int, default=200)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)

    reconcile = sub.add_parser("reconcile", help="print and write the reconciliation report")
    reconcile.add_argument("plan")
    reconcile.add_argument("--html", type=Path, help="where to write the HTML report")
    reconcile.set_defaults(func=cmd_reconcile)

    status = sub.add_parser("status", help="days built, failing and stale; what is published")
    status.add_argument("plan", nargs="?")
    status.set_defaults(func=cmd_status)

    plan = sub.add_parser("plan", help="preflight: the backfill plan, its cost and its blockers")
    plan.add_argument("plan")
    plan.set_defaults(func=cmd_plan)

    arrive = sub.add_parser("arrive", help="append late rows for past days (demos, tests)")
    arrive.add_argument("--days", type=int, default=3)
    arrive.add_argument("--rows", type=int, default=5)
    arrive.add_argument("--seed", type=int, default=1)
    arrive.set_defaults(func=cmd_arrive)

    ui = sub.add_parser("ui", help="start the Dagster UI and daemon on this project")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, duckdb.Error) as error:
        print(f"backfill-assets {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
