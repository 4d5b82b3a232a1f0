"""The ``backfill-assets`` command.

    backfill-assets check                      # every plan loads (for CI); exit 1 otherwise
    backfill-assets plan daily_revenue
    backfill-assets load raw.flights flights.parquet
    backfill-assets reconcile daily_revenue
    backfill-assets status
    backfill-assets ui
    backfill-assets seed / arrive / demo       # the shipped example's data and demo

Plans are found in the defs folder of the Dagster project the command runs in (``--defs`` or
``BACKFILL_DEFS`` to choose another; see ``catalog.default_defs_root``). Every command uses
``BACKFILL_WAREHOUSE`` and ``DAGSTER_HOME`` when set, else the project's own warehouse file and
Dagster home (see ``settings.py``).
"""

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from backfill_assets import settings
from backfill_assets.catalog import Catalog, load_catalog
from backfill_assets.warehouse import check_warehouse_name


def parse_date(text: str) -> dt.date:
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


def catalog(args: argparse.Namespace) -> Catalog:
    """The plans of the chosen defs folder."""
    return load_catalog(args.defs, settings.warehouse_path())


def use_project_dagster_home() -> Path:
    """Point ``DAGSTER_HOME`` at the project's instance unless the caller chose one."""
    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def cmd_load(args: argparse.Namespace) -> int:
    from backfill_assets.load import load_file

    declared = [s for p in catalog(args).plans for s in p.sources if s.table == args.table]
    source = declared[0] if declared else None
    with connect() as conn:
        count = load_file(
            conn,
            args.table,
            args.file,
            columns=source.columns if source else None,
            required=source.required if source else (),
        )
    print(f"loaded {count:,} rows into {args.table} from {args.file}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    found = catalog(args)
    for plan in found.plans:
        print(f"ok      {plan.name} ({plan.path})")
    for path, error in found.errors.items():
        print(f"BROKEN  {path}\n        " + str(error).replace("\n", "\n        "))
    if not found.plans and not found.errors:
        print(f"no BackfillPlan components under {args.defs or 'the defs folder'}")
    return 1 if found.errors else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from backfill_assets.reconcile import reconcile
    from backfill_assets.report import reconciliation_text, write_html

    plan = catalog(args).named(args.plan)
    with connect() as conn:
        recon = reconcile(conn, plan)
    print(reconciliation_text(recon))
    path = write_html(
        recon, args.html or settings.reports_dir() / plan.name / "reconciliation.html"
    )
    print(f"\nHTML report: {path}")
    return 0 if recon.passed else 1


def cmd_status(args: argparse.Namespace) -> int:
    from backfill_assets.status import status_text

    found = catalog(args)
    plans = [found.named(args.plan)] if args.plan else found.plans
    with connect() as conn:
        print(status_text(conn, plans))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from backfill_assets.plan import PlanError
    from backfill_assets.preflight import preflight

    try:
        plan = catalog(args).named(args.plan)
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
    root.add_argument(
        "--defs",
        type=Path,
        help="the defs folder whose BackfillPlan components to use (default: this project's)",
    )
    sub = root.add_subparsers(dest="command", required=True)
    from backfill_assets.example.cli import register_example_commands

    register_example_commands(sub)

    load = sub.add_parser(
        "load", help="replace a source table with a Parquet or CSV file, exactly or not at all"
    )
    load.add_argument("table", help="schema.table, e.g. raw.flights")
    load.add_argument("file", type=Path)
    load.set_defaults(func=cmd_load)

    check = sub.add_parser("check", help="load every plan; exit 1 naming any that does not")
    check.set_defaults(func=cmd_check)

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
