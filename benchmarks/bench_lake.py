"""Benchmark: writers on a DuckLake against the DuckDB file, through the real daemon.

    .venv-lake/bin/python benchmarks/bench_lake.py            # two years, 2,000 orders a day
    .venv-lake/bin/python benchmarks/bench_lake.py --quick    # 62 days, 200 a day, file vs 4
    .venv-lake/bin/python benchmarks/bench_lake.py --out table.md   # also write Markdown

Runs in the lake venv (DuckDB 1.5.5 and its extensions, see lake.py). Each configuration gets
fresh data from the demo's generator (same seed, same rows), a fresh Dagster home (the
project's SQLite instance with its event settings) and its own ``dagster dev``, and runs what
the demo runs, the way the UI does: ONE partition backfill of legacy and v2 of every shipped
plan over its window (the daemon splits it into runs of ``chunk`` partitions and the run queue
lets ``writers`` of them run at once, the ``duckdb`` pool's limit), then every plan's
window-check and promotion jobs together. Configurations, in one run:

- the DuckDB file, 1 writer (its only setting: one writing process per file);
- a DuckLake with a PostgreSQL catalog (one embedded PostgreSQL 16 for the run, a database per
  configuration) and Parquet files on local disk, with 1, 2 and 4 writers, and 4 again with
  the run queue launching runs from several threads (``--writers`` chooses; ``--quick`` runs
  the file and 4 writers on the partitions of the first 62 days, for CI).

Through the real daemon, not simulated run processes: that is the path whose scaling matters
(process start, code load and Dagster's event writes are most of a run's time at this size),
and it fits: about 8 minutes per configuration at full size. Machines here have 2 shared
cores, so several writers compete for the same cores; the table therefore also reports
per-run figures (start-up and execution time, runs at once, runs per minute per writer,
commits retried) from which the scaling on run workers with their own cores is estimated:
``ceil(runs / writers)`` rounds of the mean run (start-up + execution) measured with one
writer on the lake, plus the daemon's fixed wait. The
commits themselves are the part writers share (the catalog); retried commits say how often
they got in each other's way.

Reads of the published view (median of ``--reads`` queries, a new connection each time and on
one open connection: a whole-table ``sum`` and a one-day filter) on the file and on the lake,
and on the lake again after ``lake.maintain`` (merged files, expired snapshots).
"""

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import duckdb
import yaml

from backfill_assets import lake as lakes
from backfill_assets import settings
from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.component.models import partition_key
from backfill_assets.example.dagster_dev import DagsterDev
from backfill_assets.example.demo import promotion_config
from backfill_assets.example.generator import generate
from backfill_assets.instance import embedded_postgres, instance_storage, sqlite_config
from backfill_assets.plan import Plan
from backfill_assets.warehouse import open_read_only

SEED = 42
RETRY_LINE = "commit conflicted with another writer"  # lake.retry_conflicts' log line
READ_PLAN = "daily_revenue"
READ_DAY = dt.date(2024, 2, 20)  # inside both the quick and the full window


def shipped_plans() -> list[Plan]:
    found = load_catalog(SHIPPED_DEFS)
    assert not found.errors, found.errors
    return found.plans


QUICK_DAYS = 62  # --quick: the partitions starting in the window's first 62 days


def _windows(plans: list[Plan], quick: bool) -> list[tuple[Plan, list[dt.date]]]:
    """Each plan with the partitions backfilled: its whole window, or (quick) those starting
    in its first ``QUICK_DAYS`` days (two chunks of a daily plan, three months)."""
    chosen = []
    for plan in plans:
        partitions = list(plan.window_partitions)
        if quick:
            cutoff = partitions[0] + dt.timedelta(days=QUICK_DAYS)
            partitions = [p for p in partitions if p < cutoff]
        chosen.append((plan, partitions))
    return chosen


def _ranges(windows) -> list[tuple[list[str], str, str]]:
    return [
        (plan.asset_path(v), partition_key(plan, parts[0]), partition_key(plan, parts[-1]))
        for plan, parts in windows
        for v in plan.version_names
    ]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Config:
    """One measured configuration: where its warehouse is, how many runs write at once, and
    whether the run queue launches runs from several threads."""

    def __init__(
        self, workdir: Path, name: str, writers: int, lake: lakes.Lake | None, threads: bool
    ) -> None:
        self.writers = writers
        self.lake = lake
        self.threads = threads
        self.name = name
        self.folder = workdir / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.warehouse = self.folder / "warehouse.duckdb"  # unused on a lake
        self.label = (
            f"DuckLake, PostgreSQL catalog, {writers} writer{'s' if writers > 1 else ''}"
            + (", threaded launches" if threads else "")
            if lake
            else "DuckDB file, 1 writer"
        )

    def env(self) -> dict[str, str]:
        """What ``dagster dev`` and every process it starts get besides this environment."""
        env = {"BACKFILL_WAREHOUSE": str(self.warehouse)}
        if self.lake:
            env[lakes.CATALOG_ENV] = self.lake.catalog
            env[lakes.DATA_PATH_ENV] = self.lake.data_path
            env[settings.LAKE_WRITERS_ENV] = str(self.writers)
        return env

    def connect(self, write: bool = False) -> duckdb.DuckDBPyConnection:
        if self.lake:
            return lakes.connect(self.lake, read_only=not write, external_access=write)
        if write:
            return duckdb.connect(str(self.warehouse))
        return open_read_only(str(self.warehouse))


def _seed(config: Config, first: dt.date, last: dt.date, per_day: int) -> float:
    started = time.perf_counter()
    with closing(config.connect(write=True)) as conn:
        generate(conn, first, last, per_day, SEED)
    return time.perf_counter() - started


def _runs(home: Path, backfill_id: str) -> list[tuple[float, float, float]]:
    """Each run of the backfill: (launched, started, ended), from the instance. Launched is
    the run's RUN_STARTING event (the queue gave it a pool slot and its worker process is
    being started), started its RUN_START (the worker executes), ended its end."""
    import dagster as dg

    found = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})
        )
        for record in records:
            starting = instance.all_logs(
                record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_STARTING
            )
            found.append((starting[0].timestamp, record.start_time, record.end_time))
    return sorted(found)


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


def _retries(home: Path) -> int:
    """Commits retried in the runs: ``lake.retry_conflicts`` logs each to the run's stderr,
    which Dagster keeps as the run's compute log."""
    found = 0
    for path in (home / "storage").rglob("*.err"):
        found += path.read_text(errors="replace").count(RETRY_LINE)
    return found


def _through_dagster(config: Config, windows, jobs: bool) -> dict:
    """The demo's path on ``config``: the backfill, then (``jobs``) window checks and
    promotions launched together."""
    plans = [plan for plan, _ in windows]
    figures: dict = {}
    home = config.folder / "dagster_home"
    if config.threads:
        # The project's instance settings, but the run queue launches runs from a thread each
        # (QueuedRunCoordinator's dequeue_use_threads): with the default launcher a launch waits
        # for the run's process to start, so one thread launches a run every few seconds. A
        # dagster.yaml without instance.py's marker is kept as written.
        home.mkdir(parents=True)
        config_yaml = sqlite_config(home)
        config_yaml["run_queue"].update(
            {"dequeue_use_threads": True, "dequeue_num_workers": config.writers}
        )
        (home / "dagster.yaml").write_text(yaml.safe_dump(config_yaml, sort_keys=False))
    with instance_storage(home, "sqlite") as storage:
        with DagsterDev(
            storage.home, str(config.warehouse), env={**storage.env, **config.env()}
        ) as dev:
            assert dev.writer_limit == config.writers, (dev.writer_limit, config.writers)
            launched = time.time()
            backfill_id = dev.launch_ranges(_ranges(windows), f"bench {config.name}")
            state = dev.wait_backfill(backfill_id, timeout=None, runs_only=True)
            figures["backfill_s"] = time.time() - launched
            figures["failed_runs"] = sum(r["status"] != "SUCCESS" for r in state.runs)
            if jobs:
                started = time.perf_counter()
                names = [(f"window_checks_{p.name}_job", None) for p in plans] + [
                    (f"promote_{p.name}_job", promotion_config(p, "benchmark")) for p in plans
                ]
                launched_jobs = [dev.launch_job(name, conf) for name, conf in names]
                statuses = [dev.wait_run(run) for run in launched_jobs]
                figures["jobs_s"] = time.perf_counter() - started
                figures["jobs_failed"] = sum(s != "SUCCESS" for s in statuses)
    runs = _runs(home, backfill_id)
    figures["runs"] = len(runs)
    figures["daemon_wait_s"] = runs[0][0] - launched
    figures["span_s"] = max(end for _, _, end in runs) - runs[0][0]
    figures["mean_start_s"] = statistics.mean(start - at for at, start, _ in runs)
    figures["mean_run_s"] = statistics.mean(end - start for _, start, end in runs)
    figures["in_pool"] = _most_at_once([(at, end) for at, _, end in runs])
    figures["executing"] = _most_at_once([(start, end) for _, start, end in runs])
    figures["retries"] = _retries(home)
    return figures


def _read_table(published: bool) -> str:
    return f"analytics.{READ_PLAN}" if published else f"models.{READ_PLAN}__v2"


def _reads(config: Config, table: str, count: int) -> dict:
    """Median seconds: opening a connection, a whole-table sum and a one-day filter (each on
    a new connection, as a command or a sensor tick reads, and on one open connection)."""
    total = f"SELECT sum(net_revenue) FROM {table}"
    one_day = f"SELECT sum(net_revenue) FROM {table} WHERE order_date = ?"
    opened, cold, warm, day_warm = [], [], [], []
    for _ in range(count):
        started = time.perf_counter()
        conn = config.connect()
        opened.append(time.perf_counter() - started)
        started = time.perf_counter()
        conn.execute(total).fetchone()
        cold.append(time.perf_counter() - started)
        conn.close()
    with closing(config.connect()) as conn:
        for _ in range(count):
            started = time.perf_counter()
            conn.execute(total).fetchone()
            warm.append(time.perf_counter() - started)
            started = time.perf_counter()
            conn.execute(one_day, [READ_DAY]).fetchone()
            day_warm.append(time.perf_counter() - started)
    return {
        "open_s": _median(opened),
        "first_sum_s": _median(cold),
        "sum_s": _median(warm),
        "day_s": _median(day_warm),
    }


def _files(config: Config) -> int:
    return sum(1 for _ in Path(config.lake.data_path).rglob("*.parquet")) if config.lake else 1


def _same_as_file(config: Config, file_config: Config, tables: list[str]) -> bool:
    """The lake's published rows equal the file's, table by table (multiset, both ways)."""
    with closing(lakes.connect(config.lake, read_only=True, external_access=True)) as conn:
        conn.execute(f"ATTACH '{file_config.warehouse}' AS reference (READ_ONLY)")
        for table in tables:
            ours, theirs = f"{lakes.ALIAS}.{table}", f"reference.{table}"
            differ = conn.execute(
                f"SELECT (SELECT count(*) FROM (FROM {ours} EXCEPT ALL FROM {theirs})) + "
                f"(SELECT count(*) FROM (FROM {theirs} EXCEPT ALL FROM {ours}))"
            ).fetchone()[0]
            if differ:
                return False
    return True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 62 days, 200 a day")
    parser.add_argument("--orders-per-day", type=int)
    parser.add_argument(
        "--writers",
        help="lake configurations, comma-separated: a writer count, with t for threaded "
        "launches (default 1,2,4,4t; --quick 4)",
    )
    parser.add_argument("--reads", type=int, help="queries per read figure (default 21)")
    parser.add_argument("--out", type=Path, help="also write the tables as Markdown here")
    args = parser.parse_args()
    if problem := lakes.unavailable("postgres"):
        print(f"bench_lake.py needs the lake set: {problem}", file=sys.stderr)
        return 1
    for name in (lakes.CATALOG_ENV, lakes.DATA_PATH_ENV, settings.LAKE_WRITERS_ENV):
        os.environ.pop(name, None)  # each configuration names its own warehouse
    per_day = args.orders_per_day or (200 if args.quick else 2_000)
    variants = (args.writers or ("4" if args.quick else "1,2,4,4t")).split(",")
    reads = args.reads or (7 if args.quick else 21)
    plans = shipped_plans()
    windows = _windows(plans, args.quick)
    first = min(p.spec.window.start for p in plans)
    last = max(p.spec.window.end for p in plans)
    if args.quick:  # the data those partitions read, with two months to spare
        last = max(parts[-1] for _, parts in windows) + dt.timedelta(days=62)
    models = sum(len(p.version_names) for p in plans)
    partitions = sum(len(parts) * len(p.version_names) for p, parts in windows)
    # Outside /tmp/pytest-of-*: the embedded server runs as the user pgserver when root.
    workdir = Path(tempfile.mkdtemp(prefix="backfill-bench-lake-"))
    chunks = {p.name: (p.chunk, p.spec.window) for p in plans}
    changed: list[str] = []
    size = (
        f"{first}..{last}, {per_day:,} orders a day; backfill of {models} models, "
        f"{partitions:,} partitions ("
        + ", ".join(f"{p.name} {len(w)} in runs of {p.chunk}" for p, w in windows)
        + ")"
    )
    print(f"{size}\nin {workdir}", flush=True)
    loads = []
    results: dict[str, dict] = {}
    configs: list[Config] = []
    started_all = time.perf_counter()
    try:
        with embedded_postgres(workdir / "catalog") as server:
            configs.append(Config(workdir, "file", 1, None, False))
            for variant in variants:
                writers, threads = int(variant.rstrip("t")), variant.endswith("t")
                name = f"lake-w{variant}"
                database = name.replace("-", "_")
                lakes.create_database(server, database)
                where = lakes.lake(
                    lakes.with_database(server, database), str(workdir / name / "data")
                )
                configs.append(Config(workdir, name, writers, where, threads))
            for config in configs:
                # Every configuration must run the same plans (the code location reads them
                # from the project when its dagster dev starts).
                now = {p.name: (p.chunk, p.spec.window) for p in shipped_plans()}
                if now != chunks:
                    changed.append(config.label)
                loads.append(os.getloadavg()[0])
                seeded = _seed(config, first, last, per_day)
                print(f"\n{config.label}: seeded in {seeded:.1f} s", flush=True)
                figures = _through_dagster(config, windows, jobs=not args.quick)
                figures["seed_s"] = seeded
                figures.update(_reads(config, _read_table(not args.quick), reads))
                figures["files"] = _files(config)
                if config.lake:
                    figures["same_as_file"] = _same_as_file(
                        config,
                        configs[0],
                        [_read_table(not args.quick)]
                        + [f"models.{p.name}__{v}" for p, _ in windows for v in p.version_names],
                    )
                results[config.name] = figures
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
            # The last lake after maintenance: merged files, one snapshot.
            last_lake = configs[-1]
            with closing(lakes.connect(last_lake.lake)) as conn:
                maintained = lakes.maintain(conn, dt.timedelta(0), dt.timedelta(0))
            after = _reads(last_lake, _read_table(not args.quick), reads)
            after["files"] = _files(last_lake)
            print("after maintenance:", maintained.text(), after, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started_all

    base = results.get("lake-w1")
    backfill_rows = []
    for config in configs:
        f = results[config.name]
        per_minute = f["runs"] / (f["span_s"] / 60)
        versus = f"{f['backfill_s'] / base['backfill_s']:.2f} x" if base else "—"
        estimate = "—"
        if base and config.lake:
            # Run workers with cores of their own: each runs as fast as the lone writer did.
            rounds = math.ceil(f["runs"] / config.writers)
            one_run = base["mean_start_s"] + base["mean_run_s"]
            estimate = f"{base['daemon_wait_s'] + rounds * one_run:.0f} s"
        backfill_rows.append(
            [
                config.label,
                f"{f['backfill_s']:.0f} s",
                versus,
                f"{f['runs']} ({f['failed_runs']} failed)",
                f"{f['in_pool']} / {f['executing']}",
                f"{f['mean_start_s']:.1f} s + {f['mean_run_s']:.1f} s",
                f"{per_minute:.1f} / {per_minute / config.writers:.1f}",
                str(f["retries"]) if config.lake else "—",
                f"{f['jobs_s']:.0f} s ({f['jobs_failed']} failed)" if "jobs_s" in f else "skipped",
                estimate,
                ("yes" if f["same_as_file"] else "NO") if config.lake else "(reference)",
            ]
        )
    backfill = _table(
        [
            "warehouse",
            "backfill (launch → last run ends)",
            "vs lake, 1 writer",
            "runs",
            "most runs at once: in the pool / executing",
            "mean run: start-up + execution",
            "runs per minute / per writer",
            "commits retried",
            "window checks + promotions",
            "estimate: writers with their own cores",
            "same rows as the file",
        ],
        backfill_rows,
    )
    read_rows = []
    for config in configs:
        f = results[config.name]
        read_rows.append(
            [
                config.label,
                str(f["files"]),
                _ms(f["open_s"]),
                _ms(f["first_sum_s"]),
                _ms(f["sum_s"]),
                _ms(f["day_s"]),
            ]
        )
    read_rows.append(
        [
            f"{configs[-1].label}, after maintenance",
            str(after["files"]),
            _ms(after["open_s"]),
            _ms(after["first_sum_s"]),
            _ms(after["sum_s"]),
            _ms(after["day_s"]),
        ]
    )
    table = _read_table(not args.quick)
    reads_md = _table(
        [
            "warehouse",
            "data files",
            "open a connection",
            "first query on it: sum over the table",
            "sum over the table (open connection)",
            f"one day ({READ_DAY})",
        ],
        read_rows,
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}, load average at each configuration's start "
        + ", ".join(f"{load:.1f}" for load in loads)
    )
    command = "python benchmarks/bench_lake.py" + "".join(f" {a}" for a in sys.argv[1:])
    text = (
        f"Command: `.venv-lake/bin/{command}`\n"
        f"Size: {size}. Machine: {machine}. Whole run: {total / 60:.1f} min.\n\n"
        f"{backfill}\n\nReads of `{table}`, median of {reads}:\n\n{reads_md}\n\n"
        f"Maintenance before the last row: {maintained.text()}.\n"
    )
    if changed:
        text += (
            "\nWARNING: the shipped plans changed during the run (chunk or window), before: "
            + ", ".join(changed)
            + ". Their rows are not comparable with the others; run again.\n"
        )
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    failed = sum(r["failed_runs"] + r.get("jobs_failed", 0) for r in results.values())
    different = [n for n, r in results.items() if r.get("same_as_file") is False]
    return 1 if failed or different else 0


if __name__ == "__main__":
    sys.exit(main())
