"""The ``backfill-assets`` command.

    backfill-assets check                      # every plan loads (for CI); exit 1 otherwise
    backfill-assets plan daily_revenue
    backfill-assets load raw.flights flights.parquet
    backfill-assets reconcile daily_revenue
    backfill-assets affected daily_revenue --where "region = 'emea'" [--launch]
    backfill-assets cutover daily_revenue       # write the latest cutover summary again
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

from backfill_assets import lake as lakes
from backfill_assets import settings
from backfill_assets.catalog import Catalog, default_defs_root, load_catalog
from backfill_assets.warehouse import (
    WarehouseBusyError,
    WarehouseFileError,
    check_warehouse_name,
    open_checked,
    open_read_only,
    retry_while_locked,
)


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; write it as YYYY-MM-DD"
        ) from None


LOCK_WAIT_SECONDS = 60  # how long a command waits for a run or sensor to let go of the file


def waiting(opener, seconds: float = LOCK_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """``opener()``, retried while another process (a run or a sensor of ``dagster dev``)
    holds the warehouse file; a missing or damaged file fails at once."""
    return retry_while_locked(opener, settings.warehouse_path(), seconds, "run the command again")


def connect() -> duckdb.DuckDBPyConnection:
    """Open the configured warehouse for a command that writes sources (``seed``, ``load``),
    creating the file and its folder on first use. An existing file is read through first, so
    a damaged one is refused before anything is written to it."""
    if (lake := lakes.from_env()) is not None:
        return open_checked("", create=True, lake=lake)
    path = Path(settings.warehouse_path())
    check_warehouse_name(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return waiting(lambda: open_checked(str(path), create=True))


def connect_existing() -> duckdb.DuckDBPyConnection:
    """Open the configured warehouse for a command that needs its data; a missing file is an
    error (none is created) and a damaged one is refused, both naming the fix."""
    if (lake := lakes.from_env()) is not None:
        return open_checked("", lake=lake)
    return waiting(lambda: open_checked(settings.warehouse_path()))


def read_only_waiting(path: str) -> duckdb.DuckDBPyConnection:
    """A read-only connection for a command that only reads, waiting while a run writes."""
    if (lake := lakes.from_env()) is not None:
        return open_read_only(path, lake)
    return waiting(lambda: open_read_only(path))


def catalog(args: argparse.Namespace) -> Catalog:
    """The plans of the chosen defs folder (sources declared without columns take them from
    the warehouse when it can be read). Commands that need the data read the file through
    when they open it (``connect_existing``, ``connect``), so it is not read twice here."""
    return load_catalog(args.defs, settings.warehouse_path())


def _read_through_unless_busy(path: str) -> None:
    """Raise when the file is damaged; a file another process holds is not this check's
    business (the command that needs the data reports the lock)."""
    try:
        open_checked(path).close()
    except WarehouseFileError:
        raise
    except duckdb.Error:
        pass


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
    # Plans whose sources declare no columns are bound against the warehouse: a damaged one
    # would leave them unbound and "ok", so an existing file is read through first (a missing
    # one is fine: checking plans needs no warehouse).
    path = settings.warehouse_path()
    if Path(path).exists():
        _read_through_unless_busy(path)
    found = catalog(args)
    for plan in found.plans:
        print(f"ok      {plan.name} ({plan.path})")
    for path, error in found.errors.items():
        print(f"BROKEN  {path}\n        " + str(error).replace("\n", "\n        "))
    if not found.plans and not found.errors:
        print(f"no BackfillPlan components under {args.defs or default_defs_root()}")
    return 1 if found.errors else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from backfill_assets.enrichment import changed_columns
    from backfill_assets.reconcile import reconcile
    from backfill_assets.report import reconciliation_text, write_html

    plan = catalog(args).named(args.plan)
    with connect_existing() as conn:
        recon = reconcile(conn, plan)
        changes = changed_columns(conn, plan)
    print(reconciliation_text(recon, changes))
    path = write_html(
        recon, args.html or settings.reports_dir() / plan.name / "reconciliation.html", changes
    )
    print(f"\nHTML report: {path}")
    return 0 if recon.passed else 1


def cmd_status(args: argparse.Namespace) -> int:
    from backfill_assets.status import status_text

    found = catalog(args)
    plans = [found.named(args.plan)] if args.plan else found.plans
    with connect_existing() as conn:
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
    with connect_existing() as conn:
        report = preflight(conn, plan)
    print(report.text())
    return 0 if report.ready else 1


def cmd_cutover(args: argparse.Namespace) -> int:
    from backfill_assets.cutover import regenerate_summary

    plan = catalog(args).named(args.plan)
    with connect_existing() as conn:
        path = regenerate_summary(conn, plan, args.reports or settings.reports_dir())
    print(f"cutover summary of the latest promotion of {plan.name}: {path}")
    return 0


def cmd_affected(args: argparse.Namespace) -> int:
    from backfill_assets.affected import affected_partitions
    from backfill_assets.component.models import partition_key

    plan = catalog(args).named(args.plan)
    source = plan.source(args.source) if args.source else plan.sources[0]
    versions = args.versions.split(",") if args.versions else plan.version_names
    for version in versions:
        plan.version(version)  # an unknown version is refused before anything runs
    with read_only_waiting(settings.warehouse_path()) as conn:
        found = affected_partitions(conn, plan, source, args.where)
    cadence = plan.cadence
    if not found:
        print(
            f"no {cadence.word} of the {plan.name} window has a row of {source.table} matching "
            f"{args.where!r}: nothing to rebuild"
        )
        return 0
    spans = cadence.spans(found)
    print(
        f"{len(found)} {cadence.word}(s) of {plan.name} hold rows of {source.table} matching "
        f"{args.where!r}, in {len(spans)} range(s):"
    )
    for first, last in spans:
        size = len(cadence.starts(first, cadence.next(last)))
        span = (
            cadence.label(first)
            if first == last
            else f"{cadence.label(first)}..{cadence.label(last)}"
        )
        print(f"  {span}  ({size} {cadence.word}{'s' if size > 1 else ''})")
    if not args.launch:
        print(f"launch a backfill of exactly these for {', '.join(versions)} with --launch")
        return 0
    keys = [partition_key(plan, p) for p in found]
    assets = [plan.asset_path(version) for version in versions]
    backfill_id = launch_backfill(args.url, assets, keys, f"affected: {plan.name} {args.where}")
    print(f"launched backfill {backfill_id} of {len(keys)} partition(s) for {', '.join(versions)}")
    return 0


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def launch_backfill(url: str, assets: list[list[str]], keys: list[str], title: str) -> str:
    """One partition backfill of ``keys`` for ``assets``, through the webserver's GraphQL API:
    the call the UI's *Materialize* makes, so the daemon runs it in chunks as usual."""
    import json
    import urllib.error
    import urllib.request

    params = {
        "assetSelection": [{"path": path} for path in assets],
        "partitionNames": keys,
        "title": title,
    }
    body = json.dumps({"query": LAUNCH_BACKFILL, "variables": {"params": params}}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
    except (urllib.error.URLError, OSError) as error:
        raise ValueError(
            f"cannot reach the Dagster webserver at {url} ({error}). Fix: start it "
            "(backfill-assets ui, dg dev) or give its address with --url"
        ) from None
    result = (payload.get("data") or {}).get("launchPartitionBackfill") or {}
    if result.get("__typename") != "LaunchBackfillSuccess":
        raise ValueError(f"the webserver did not launch the backfill: {payload}")
    return result["backfillId"]


UVICORN_BIND_ERROR = "error while attempting to bind on address"  # the webserver's log line


def _ui_port_message(host: str, port: int, outcome: str) -> str:
    """The port is taken: say so, what happened, and the two ways out."""
    from backfill_assets.processes import free_port_after

    free = free_port_after(host, port)
    return (
        f"backfill-assets ui: port {port} on {host} is already in use; {outcome}.\n"
        "Fix: choose another port with --port N"
        + (f" (--port {free} is free)" if free else "")
        + f",\n     or stop the process listening on port {port} (an earlier backfill-assets ui "
        "or dagster dev?)."
    )


def _ui_say(text: str) -> None:
    """Print to stderr, even when the terminal has gone (SIGHUP): there is nothing to add."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def _echo_ui_output(stream, port: int, bind_failed, wake) -> None:
    """Copy ``dagster dev``'s output to ours line by line, and flag its webserver failing to
    bind the port: the webserver logs ``[Errno 98] error while attempting to bind ...`` and
    keeps running, so ``dagster dev`` never notices and its daemon runs on."""
    out = getattr(sys.stdout, "buffer", None)
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace")
        if UVICORN_BIND_ERROR in text and str(port) in text:
            bind_failed.set()
            wake.set()
        try:
            if out is not None:
                out.write(line)
                out.flush()
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
        except (OSError, ValueError):
            pass  # our output is gone; keep reading so the child never blocks on a full pipe


def _serve_ui(command: list[str], host: str, port: int) -> int:
    """Run ``dagster dev`` in its own process group until it ends, its webserver cannot bind
    the port, or this command gets SIGTERM, SIGINT or SIGHUP; then stop the whole group (a
    second signal SIGKILLs it at once) and return 1, or 128 + the signal's number."""
    import signal
    import threading

    from backfill_assets.processes import start_group, stop_group

    received: list[int] = []
    wake = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        received.append(signum)
        wake.set()

    handled = [signal.SIGTERM, signal.SIGHUP]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # kept ignored when run with &
        handled.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    try:
        process = start_group(
            command,
            cwd=settings.PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        bind_failed = threading.Event()
        reader = threading.Thread(
            target=_echo_ui_output, args=(process.stdout, port, bind_failed, wake), daemon=True
        )
        reader.start()
        while not (received or bind_failed.is_set() or process.poll() is not None):
            wake.wait(1)
            wake.clear()
        signals = received[:]  # one more while stopping means: now
        # SIGINT whatever we got: it is the signal every dagster process shuts down on (dagster
        # dev maps SIGTERM onto it; its code server and run workers are in the group too).
        code = stop_group(process, signal.SIGINT, hurry=lambda: len(received) > len(signals))
        reader.join(timeout=5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if signals:
        name = signal.Signals(signals[0]).name
        _ui_say(f"backfill-assets ui: {name}: stopped dagster dev, its webserver and daemon")
        return 128 + signals[0]
    if bind_failed.is_set():
        _ui_say(_ui_port_message(host, port, "dagster dev was stopped"))
        return 1
    _ui_say(f"backfill-assets ui: dagster dev exited with {code}; its output above says why")
    return 128 - code if code < 0 else code or 1


def cmd_ui(args: argparse.Namespace) -> int:
    import errno

    from backfill_assets.processes import listen_error

    # Before anything starts: dagster dev would start its daemon and code server anyway.
    if error := listen_error(args.host, args.port):
        _ui_say(
            _ui_port_message(args.host, args.port, "nothing was started")
            if error.errno == errno.EADDRINUSE
            else f"backfill-assets ui: cannot listen on {args.host}:{args.port} "
            f"({error.strerror or error}); nothing was started. Fix: give --host an address "
            "of this machine (127.0.0.1 by default) and --port a free port above 1023."
        )
        return 1
    if not args.lake:
        return _ui(args)
    # The lake the demo built (or BACKFILL_LAKE_CATALOG's), its embedded catalog running as
    # long as the UI does; its own Dagster home and writer pool follow from the environment.
    try:
        with lakes.lake_in_use(settings.lake_root()) as where:
            print(f"warehouse: {where.describe()}")
            return _ui(args)
    except lakes.LakeError as error:
        _ui_say(f"backfill-assets ui --lake: {error}")
        return 1


def _ui(args: argparse.Namespace) -> int:
    """``dagster dev`` on the project's Dagster home for the warehouse the environment names
    (the lake's own home on a lake), with that warehouse's writer pool limit recorded."""
    from backfill_assets.instance import InstanceStorageError, instance_storage

    home = use_project_dagster_home()
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
    try:
        with instance_storage(home) as storage:
            writers = settings.set_writer_pool_limit(storage.home)
            os.environ.update(storage.env)  # DAGSTER_HOME and Dagster's event settings
            print(
                f"DAGSTER_HOME={storage.home} ({storage.kind} storage) "
                + (
                    f"on a DuckLake, {writers} writer(s) at a time"
                    if settings.lake_configured()
                    else f"BACKFILL_WAREHOUSE={os.environ['BACKFILL_WAREHOUSE']}"
                )
            )
            print(" ".join(command))
            print(
                f"the UI will be at http://{args.host}:{args.port}; Ctrl-C stops it with its "
                "daemon",
                flush=True,
            )
            return _serve_ui(command, args.host, args.port)
    except InstanceStorageError as error:
        _ui_say(f"backfill-assets ui: {error}")
        return 1


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

    affected = sub.add_parser(
        "affected",
        help="the partitions rows matching a predicate reach; --launch backfills exactly those",
    )
    affected.add_argument("plan")
    affected.add_argument(
        "--where", required=True, help="one boolean expression over the source's columns"
    )
    affected.add_argument("--source", help="the declared source (default: the plan's first)")
    affected.add_argument("--versions", help="comma-separated versions (default: all)")
    affected.add_argument("--launch", action="store_true", help="launch the backfill")
    affected.add_argument("--url", default="http://127.0.0.1:3000", help="the Dagster webserver")
    affected.set_defaults(func=cmd_affected)

    cutover = sub.add_parser(
        "cutover", help="write again the cutover summary of the plan's latest promotion"
    )
    cutover.add_argument("plan")
    cutover.add_argument("--reports", type=Path, help="the reports folder")
    cutover.set_defaults(func=cmd_cutover)

    ui = sub.add_parser("ui", help="start the Dagster UI and daemon on this project")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.add_argument(
        "--lake",
        action="store_true",
        help="on the DuckLake BACKFILL_LAKE_CATALOG names, else the embedded one demo --lake "
        "built (started for as long as the UI runs)",
    )
    ui.set_defaults(func=cmd_ui)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, duckdb.Error, OSError, WarehouseBusyError) as error:
        print(f"backfill-assets {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
