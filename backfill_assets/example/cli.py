"""The example's commands: ``seed`` and ``arrive`` write its source data, ``demo`` runs the
whole story. Registered on the ``backfill-assets`` command by ``register_example_commands``."""

import argparse
import datetime as dt
import sys
import time

from backfill_assets import settings
from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.cli import connect, connect_existing, parse_date, use_project_dagster_home


def cmd_seed(args: argparse.Namespace) -> int:
    from backfill_assets.example.generator import generate

    started = time.perf_counter()
    with connect() as conn:
        summary = generate(conn, args.start, args.end, args.orders_per_day, args.seed)
    print(
        f"seeded {settings.warehouse_path()}: {summary.start}..{summary.end}, "
        f"{summary.orders:,} order rows, {summary.refunds:,} refunds, "
        f"{summary.customers:,} customer history rows in {time.perf_counter() - started:.1f}s"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from backfill_assets.example.demo import run_demo

    if not args.lake:
        use_project_dagster_home()
        return run_demo(orders_per_day=args.orders_per_day, seed=args.seed)
    # The lake (configured, or embedded beside the warehouse file and stopped at the end) is
    # in the environment before the Dagster home is chosen: the lake has a home of its own.
    from backfill_assets import lake as lakes

    try:
        with lakes.lake_in_use(settings.lake_root()):
            use_project_dagster_home()
            return run_demo(orders_per_day=args.orders_per_day, seed=args.seed)
    except lakes.LakeError as error:
        print(f"backfill-assets demo --lake: {error}", file=sys.stderr)
        return 1


def cmd_arrive(args: argparse.Namespace) -> int:
    from backfill_assets.example.late_rows import append_late_rows, pick_days

    plans = load_catalog(SHIPPED_DEFS).plans
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    # Late rows need earlier ones: a missing warehouse is an error, not a new empty file.
    with connect_existing() as conn:
        days = pick_days(conn, first, last, args.days, args.seed)
        if not days:
            print("no source days to add late rows to: seed or load data first", file=sys.stderr)
            return 1
        arrival = append_late_rows(conn, days, args.rows, args.seed)
    print(
        f"appended {arrival.orders} late orders, {arrival.resent} re-sent orders and "
        f"{arrival.refunds} late refunds for {', '.join(str(d) for d in arrival.days)}"
    )
    print("each plan's late-data sensor will request a repair of exactly those days.")
    return 0


def register_example_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``seed``, ``demo`` and ``arrive`` to the command's subcommands."""
    seed = sub.add_parser("seed", help="write a generated raw data set into the warehouse")
    seed.add_argument("--start", type=parse_date, default=dt.date(2024, 1, 1))
    seed.add_argument("--end", type=parse_date, default=dt.date(2025, 12, 31))
    seed.add_argument("--orders-per-day", type=int, default=200)
    seed.add_argument("--seed", type=int, default=42)
    seed.set_defaults(func=cmd_seed)

    demo = sub.add_parser("demo", help="seed, backfill both plans, check, promote, summarize")
    demo.add_argument("--orders-per-day", type=int, default=200)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument(
        "--lake",
        action="store_true",
        help="on a DuckLake with a PostgreSQL catalog, several writers at once: the one "
        "BACKFILL_LAKE_CATALOG names, else an embedded one beside the warehouse file "
        "(needs the lake set: pip install -e '.[lake]' in a venv of its own)",
    )
    demo.set_defaults(func=cmd_demo)

    arrive = sub.add_parser("arrive", help="append late rows for past days (demos, tests)")
    arrive.add_argument("--days", type=int, default=3)
    arrive.add_argument("--rows", type=int, default=5)
    arrive.add_argument("--seed", type=int, default=1)
    arrive.set_defaults(func=cmd_arrive)
