"""Benchmark: the project against DuckDB's own speed, at the scale real teams have.

    .venv/bin/python benchmarks/bench.py            # 731 days x 20,000 orders a day
    .venv/bin/python benchmarks/bench.py --quick    # 70 days x 1,000 orders a day (CI)

Every figure is measured in the same run as the reference (one hand-written DuckDB statement
for the v2 daily_revenue window) and printed as a ratio to it, because machines here are shared
and noisy. ``--out`` writes the table as Markdown (docs/benchmarks.md holds the last full run).

Dagster's bookkeeping is measured per instance storage (``STORAGES``: SQLite with Dagster's
defaults, SQLite with the project's event settings, the embedded PostgreSQL with them): a probe
of a ranged run that records what a model records per partition, and the end-to-end backfill
through ``dagster dev`` (every storage in a full run, the project's default with ``--quick``;
``--e2e-storages`` chooses).
"""

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import yaml

from backfill_assets.build import STAGE, build_window
from backfill_assets.catalog import SHIPPED_DEFS, load_catalog
from backfill_assets.example.dagster_dev import DagsterDev
from backfill_assets.example.demo import approver, promotion_config
from backfill_assets.example.generator import generate
from backfill_assets.example.late_rows import append_late_rows
from backfill_assets.instance import event_env, instance_storage
from backfill_assets.late import find_repairs, narrowed, source_probes
from backfill_assets.partitions import chunks
from backfill_assets.plan import Plan, window_params
from backfill_assets.publish import evaluate_gate
from backfill_assets.window_checks import run_window_checks

ROOT = Path(__file__).resolve().parents[1]

BATCH_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
SUBSET_VARIABLE = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
# Instance storages measured: name -> (storage, event variables, the project's event log?).
# "dagster-sqlite" is Dagster's own SQLite storage with its defaults (batching off): what an
# instance without the shipped dagster.yaml uses. "sqlite" and "postgres" are the project's:
# event logs that keep their connections (component/storage.py, component/postgres_storage.py)
# and the project's event settings (instance.event_env).
STORAGES: dict[str, tuple[str, dict[str, str], bool]] = {
    "dagster-sqlite": ("sqlite", {BATCH_VARIABLE: "0"}, False),
    "sqlite": ("sqlite", event_env(), True),
    "postgres": ("postgres", event_env(), True),
}
BASELINE_STORAGE = "dagster-sqlite"
DEFAULT_STORAGE = "sqlite"  # what the demo, `backfill-assets ui` and the tests use
# Only probed, for the record: Dagster's own SQLite storage with batching, dagster-postgres as
# it comes (a new connection per statement), PostgreSQL without batching, and the
# planned-subset flag that instance.py leaves off (it hides the failed days of a failed chunk
# on the asset's page).
PROBED_ONLY: dict[str, tuple[str, dict[str, str], bool]] = {
    "dagster-sqlite+batching": ("sqlite", event_env(), False),
    "dagster-postgres+batching": ("postgres", event_env(), False),
    "postgres without batching": ("postgres", {BATCH_VARIABLE: "0"}, True),
    "sqlite+subset": ("sqlite", {**event_env(), SUBSET_VARIABLE: "true"}, True),
    "postgres+subset": ("postgres", {**event_env(), SUBSET_VARIABLE: "true"}, True),
}


def shipped_plans() -> list[Plan]:
    """The example plans the benchmark measures."""
    return load_catalog(SHIPPED_DEFS).plans


REFERENCE = """
CREATE OR REPLACE TABLE main.reference AS
WITH latest AS (
    SELECT * FROM raw.orders
    QUALIFY row_number() OVER (
        PARTITION BY order_id ORDER BY ingested_at DESC, order_ts DESC, amount, status
    ) = 1
),
kept AS (SELECT * FROM latest WHERE status NOT IN ('cancelled', 'test')),
o AS (
    SELECT CAST(order_ts AS DATE) AS d, region, count(*) AS n, sum(amount) AS g
    FROM kept WHERE order_ts >= $start AND order_ts < $end GROUP BY ALL
),
r AS (
    SELECT CAST(f.refund_ts AS DATE) AS d, k.region, sum(f.amount) AS x
    FROM raw.refunds AS f JOIN kept AS k USING (order_id)
    WHERE f.refund_ts >= $start AND f.refund_ts < $end GROUP BY ALL
)
SELECT coalesce(o.d, r.d) AS order_date, coalesce(o.region, r.region) AS region,
       CAST(coalesce(n, 0) AS BIGINT) AS orders,
       CAST(coalesce(g, 0) AS DECIMAL(18, 2)) AS gross_revenue,
       CAST(coalesce(x, 0) AS DECIMAL(18, 2)) AS refunds,
       CAST(coalesce(g, 0) - coalesce(x, 0) AS DECIMAL(18, 2)) AS net_revenue
FROM o FULL JOIN r ON o.d = r.d AND o.region IS NOT DISTINCT FROM r.region
"""

SAME_ROWS = """
SELECT (SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}))
     + (SELECT count(*) FROM (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}))
"""


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def _model_sql_seconds(conn, plan: Plan, version: str, first: dt.date, last: dt.date) -> float:
    """Summed time of the version's statement, chunk by chunk, as the project runs it."""
    total = 0.0
    sql = plan.version_sql(version)
    days = plan.cadence.starts(first, last + dt.timedelta(days=1))
    for a, b in chunks(plan.cadence, days, plan.chunk):
        params = window_params(sql, plan.cadence, a, b)
        started = time.perf_counter()
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {STAGE} AS SELECT * FROM ({sql})", params)
        total += time.perf_counter() - started
    conn.execute(f"DROP TABLE IF EXISTS {STAGE}")
    return total


class _StatementClock:
    """A connection whose statements are timed, to split a build's time: ``marked`` sums the
    statements that contain one of ``marks``."""

    def __init__(self, conn, marks: tuple[str, ...]):
        self._conn, self._marks, self.marked = conn, marks, 0.0

    def execute(self, sql, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self._conn.execute(sql, *args, **kwargs)
        finally:
            if any(mark in sql for mark in self._marks):
                self.marked += time.perf_counter() - started

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _build_all(conn, plan: Plan, version: str, first: dt.date, last: dt.date) -> float:
    """Summed time of full chunk builds (statement, fingerprints, checks, atomic write)."""
    total = 0.0
    days = plan.cadence.starts(first, last + dt.timedelta(days=1))
    for a, b in chunks(plan.cadence, days, plan.chunk):
        seconds, _ = timed(build_window, conn, plan, version, a, b, "bench")
        total += seconds
    return total


def _peak_rss_of(code: str) -> float:
    """Peak RSS (MB) of a fresh Python process running ``code``, as a run worker would."""
    # VmHWM of the child itself: ru_maxrss would carry this (large) process's high-water mark
    # across fork and exec.
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _vm_hwm_mb(process.pid))
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"measured process failed with status {process.returncode}")
    return peak


def _peak_rss_of_chunk_build(warehouse: Path, first: dt.date, days: int) -> float:
    """Peak RSS (MB) of a fresh process building one chunk of v2 daily_revenue."""
    return _peak_rss_of(
        "import datetime as dt\n"
        "from backfill_assets.build import build_window\n"
        "from backfill_assets.catalog import SHIPPED_DEFS, load_catalog\n"
        "from backfill_assets.warehouse import connect_waiting\n"
        f"c = connect_waiting({str(warehouse)!r}, 60)\n"
        f"first = dt.date.fromisoformat({first.isoformat()!r})\n"
        "p = load_catalog(SHIPPED_DEFS).named('daily_revenue')\n"
        f"build_window(c, p, 'v2', first, first + dt.timedelta(days={days}), 'rss')\n"
    )


def _peak_rss_of_window_checks(warehouse: Path, first: dt.date, last: dt.date) -> float:
    """Peak RSS (MB) of a fresh process running every window check of both plans over
    ``first``..``last``, with the connection settings of a run (``connect_waiting``)."""
    return _peak_rss_of(
        "import datetime as dt\n"
        "from backfill_assets.catalog import SHIPPED_DEFS, load_catalog\n"
        "from backfill_assets.warehouse import connect_waiting\n"
        "from backfill_assets.window_checks import run_window_checks\n"
        f"c = connect_waiting({str(warehouse)!r}, 60)\n"
        f"first = dt.date.fromisoformat({first.isoformat()!r})\n"
        f"last = dt.date.fromisoformat({last.isoformat()!r})\n"
        "for p in load_catalog(SHIPPED_DEFS).plans:\n"
        "    run_window_checks(c, p.with_window(first, last))\n"
    )


def _vm_hwm_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


FORKSERVER = b"multiprocessing.forkserver"


def _parent_cmdline(entry: Path) -> bytes:
    try:
        status = (entry / "status").read_text()
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        return Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, StopIteration):
        return b""


def _dagster_peak_rss(dagster_home: Path, peaks: dict[int, tuple[str, float]]) -> None:
    """Record VmHWM of the processes of this Dagster home that do the work, which come and go:
    run workers (Dagster's launcher: a ``multiprocessing`` child of the code server; the shipped
    ``WarmRunLauncher``: a child of its forkserver, which has the same command line) and the
    code server itself, which evaluates the sensors."""
    marker = f"DAGSTER_HOME={dagster_home.resolve()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker not in environ:
            continue
        if b"spawn_main" in cmdline or (
            FORKSERVER in cmdline and FORKSERVER in _parent_cmdline(entry)
        ):
            kind = "run"
        elif b"api grpc" in cmdline:
            kind = "code server"
        else:
            continue
        pid = int(entry.name)
        peaks[pid] = (kind, max(peaks.get(pid, (kind, 0.0))[1], _vm_hwm_mb(pid)))


def _narrowed_tick(conn, plans: list[Plan], before: dict[str, str]):
    """What the plans' late-data sensor ticks do after rows were appended to the sources."""
    only = narrowed(conn, plans, before, source_probes(conn, plans))
    assert len(only) == len(plans), "appended rows should narrow the scan of every plan"
    scan = find_repairs(conn, plans, only)
    return ", ".join(f"{k}: {len(v)}" for k, v in only.items()), scan


def _storage_env(events: dict[str, str], storage_env: dict[str, str]) -> dict[str, str]:
    """The environment of a measured Dagster: this one's, without inherited event variables,
    plus the storage's home and the configuration's event variables."""
    env = {k: v for k, v in os.environ.items() if k not in (BATCH_VARIABLE, SUBSET_VARIABLE)}
    return {**env, **storage_env, **events}


def _bookkeeping_probe(sizes: list[int]) -> None:
    """In a child process (``--bookkeeping-probe``): time ranged runs of ``sizes`` partitions of
    an asset that records what a model records per partition (a planned materialization, a
    materialization, a planned and an evaluated check) and does nothing else; print JSON."""
    import dagster as dg

    parts = dg.DailyPartitionsDefinition(start_date="2000-01-01", end_date="2010-01-01")
    key = dg.AssetKey(["bench", "bookkeeping"])
    check = "partition_checks_passed"

    @dg.asset(
        key=key,
        partitions_def=parts,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[dg.AssetCheckSpec(check, asset=key, blocking=True, partitions_def=parts)],
    )
    def bookkeeping(context: dg.AssetExecutionContext):
        yield dg.MaterializeResult(asset_key=key, metadata={"rows_in_run": 0})
        for partition in context.partition_keys:
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=check,
                passed=True,
                partition=partition,
                blocking=True,
                metadata={"rows": 0, "failed_checks": "none"},
            )
        yield dg.Output(
            None,
            output_name=context.assets_def.get_output_name_for_asset_check_key(
                dg.AssetCheckKey(key, check)
            ),
        )

    job = dg.Definitions(assets=[bookkeeping]).resolve_implicit_global_asset_job_def()
    keys = parts.get_partition_keys()
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    seconds, offset = [], 0
    with dg.DagsterInstance.get() as instance:
        for size in sizes:
            tags = {
                "dagster/asset_partition_range_start": keys[offset],
                "dagster/asset_partition_range_end": keys[offset + size - 1],
            }
            offset += size
            started = time.perf_counter()
            result = job.execute_in_process(instance=instance, tags=tags, run_config=quiet)
            seconds.append(time.perf_counter() - started)
            assert result.success
    print(json.dumps(seconds))


def _use_dagsters_own_storage(storage) -> None:
    """Rewrite a home's dagster.yaml with Dagster's own storage of its kind (its stock event
    log, a new connection per statement) and the shipped pools and queue."""
    shipped = yaml.safe_load((ROOT / "dagster_home" / "dagster.yaml").read_text())
    shipped.pop("event_log_storage")
    own = (
        {"storage": {"postgres": {"postgres_url": storage.url}}}
        if storage.kind == "postgres"
        else {"storage": {"sqlite": {"base_dir": str(storage.home)}}}
    )
    (storage.home / "dagster.yaml").write_text(yaml.safe_dump({**own, **shipped}))


def _bookkeeping(
    workdir: Path, name: str, kind: str, events: dict, project: bool, partitions: int
) -> float:
    """Dagster's cost per partition (ms) on one storage: a run of ``partitions`` partitions
    minus a run of one, after a warm-up run, in one fresh process."""
    folder = workdir / "probe-{}".format(name.replace("+", "-").replace(" ", "-"))
    with instance_storage(folder, kind) as storage:
        if not project:
            _use_dagsters_own_storage(storage)
        process = subprocess.run(
            [sys.executable, __file__, "--bookkeeping-probe", f"1,1,{partitions}"],
            env=_storage_env(events, storage.env),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    if process.returncode != 0:
        raise RuntimeError(f"bookkeeping probe on {name} failed:\n{process.stderr[-3000:]}")
    _, one, many = json.loads(process.stdout.strip().splitlines()[-1])
    return (many - one) / (partitions - 1) * 1000


def _end_to_end(
    workdir: Path,
    warehouse: Path,
    plans,
    first: dt.date,
    last: dt.date,
    storage: str = DEFAULT_STORAGE,
    jobs: bool = True,
    assets: list[list[str]] | None = None,
) -> dict:
    """The UI's path on one instance storage: one backfill of ``assets`` (default: every
    version of every plan), then (``jobs``) the window checks and the promotions."""
    kind, events, project = STORAGES[storage]
    figures: dict = {}
    peaks: dict[int, tuple[str, float]] = {}
    done = threading.Event()
    folder = f"home-{storage}-{len(assets or [])}".replace("+", "-")
    with instance_storage(workdir / folder, kind) as instance:
        home = instance.home
        if not project:
            _use_dagsters_own_storage(instance)

        def sample() -> None:
            while not done.wait(0.2):
                _dagster_peak_rss(home, peaks)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        env = _storage_env(events, instance.env)
        try:
            _backfill_and_jobs(home, env, warehouse, plans, first, last, jobs, figures, assets)
        finally:
            done.set()
            sampler.join()
    figures["peak_run_rss_mb"] = max((mb for k, mb in peaks.values() if k == "run"), default=0)
    figures["run_processes"] = sum(1 for k, _ in peaks.values() if k == "run")
    figures["peak_code_server_rss_mb"] = max(
        (mb for k, mb in peaks.values() if k == "code server"), default=0
    )
    return figures


def _backfill_and_jobs(
    home: Path,
    env: dict,
    warehouse: Path,
    plans,
    first,
    last,
    jobs: bool,
    figures: dict,
    assets: list[list[str]] | None = None,
) -> None:
    # DagsterDev starts from this process's environment; the measured configuration's event
    # variables are passed explicitly ("0" turns batching off, "false" the subset flag).
    extra = {BATCH_VARIABLE: env.get(BATCH_VARIABLE, "0"), SUBSET_VARIABLE: "false"}
    extra.update({k: env[k] for k in (SUBSET_VARIABLE,) if k in env})
    with DagsterDev(home, str(warehouse), env=extra) as dev:
        started, launched_at = time.perf_counter(), time.time()
        assets = assets or [p.asset_path(v) for p in plans for v in p.version_names]
        backfill_id = dev.launch_backfill(assets, first.isoformat(), last.isoformat(), "bench")
        # Done when every run has finished, as the demo waits: the daemon marks the backfill
        # completed on its next look (up to 30 s later), which nothing needs to wait for.
        while not (state := dev.backfill(backfill_id)).runs_finished:
            time.sleep(0.5)
        figures["backfill_s"] = time.perf_counter() - started
        figures["runs"] = len(state.runs)
        failed = sum(r["status"] != "SUCCESS" for r in state.runs)
        figures["backfill_status"] = f"{failed} runs failed" if failed else "every run succeeded"
        if jobs:
            # Every window-check job, then every promotion, launched together as the demo does:
            # the queue runs them in that order, one writer at a time.
            launched = [(f"window_checks_{p.name}_job", None) for p in plans] + [
                (
                    f"promote_{p.name}_job",
                    promotion_config(p, "benchmark"),
                )
                for p in plans
            ]
            run_ids = [dev.launch_job(job, config) for job, config in launched]
            outcomes = [dev.wait_run(run_id) for run_id in run_ids]
            figures["jobs_s"] = time.perf_counter() - started - figures["backfill_s"]
            figures["promotions"] = outcomes[len(plans) :]
        figures["total_s"] = time.perf_counter() - started
        _run_timings(dev, state, figures, launched_at)


def _run_timings(dev: DagsterDev, state, figures: dict, launched_at: float) -> None:
    """The backfill's runs: mean duration, total, gaps between them, the daemon's wait."""
    runs = dev.graphql(
        """
        query Runs($ids: [String!]) {
          runsOrError(filter: {runIds: $ids}) { ... on Runs { results { startTime endTime } } }
        }
        """,
        {"ids": [r["id"] for r in state.runs]},
    )["runsOrError"]["results"]
    runs = [r for r in runs if r["startTime"] and r["endTime"]]
    runs.sort(key=lambda r: r["startTime"])
    durations = [r["endTime"] - r["startTime"] for r in runs]
    figures["mean_run_s"] = sum(durations) / max(len(durations), 1)
    figures["run_s"] = sum(durations)
    # Between one chunk's end and the next one's start: the queue's look for a free pool
    # slot, the run worker's process start and code load.
    gaps = [b["startTime"] - a["endTime"] for a, b in zip(runs, runs[1:], strict=False)]
    figures["mean_gap_s"] = sum(gaps) / max(len(gaps), 1)
    # The backfill daemon's fixed wait (it looks every 30 s, fixed in Dagster 1.13): from the
    # launch to the first run's start.
    figures["first_run_after_s"] = runs[0]["startTime"] - launched_at


def _dagster_rows(
    workdir: Path,
    warehouse: Path,
    plans: list[Plan],
    revenue: Plan,
    first: dt.date,
    last: dt.date,
    e2e_storages: list[str],
    in_process: tuple[float, float, float],  # v2 daily_revenue, all builds, window checks
    one_model: bool = True,
) -> list[tuple[str, str, str]]:
    """Through a real ``dagster dev``: the backfill on each storage, the whole path (backfill,
    window checks, promotions) on the default one, and v2 daily_revenue alone; each against
    the same work measured in process in this run."""
    built, all_builds, checks = in_process
    days = (last - first).days + 1
    models = sum(len(p.version_names) for p in plans)
    rows: list[tuple[str, str, str]] = []
    backfills = {
        storage: _end_to_end(workdir, warehouse, plans, first, last, storage, jobs=False)
        for storage in e2e_storages
        if storage != DEFAULT_STORAGE
    }
    e2e = backfills[DEFAULT_STORAGE] = _end_to_end(
        workdir, warehouse, plans, first, last, DEFAULT_STORAGE
    )
    for storage in e2e_storages:
        figures = backfills[storage]
        beyond = (figures["run_s"] - all_builds) / (days * models) * 1000
        versus = (
            f"{figures['backfill_s'] / backfills[BASELINE_STORAGE]['backfill_s']:.2f} x "
            f"{BASELINE_STORAGE}; "
            if BASELINE_STORAGE in backfills
            else ""
        )
        rows.append(
            (
                f"end-to-end backfill, {storage}",
                f"{figures['backfill_s']:.0f} s",
                f"{versus}{figures['runs']} runs ({figures['backfill_status']}), mean "
                f"run {figures['mean_run_s']:.1f} s; run time beyond SQL "
                f"{beyond:.0f} ms per partition and model",
            )
        )
    # The promotions reuse the window-check job's verdict (nothing changed in between), so in
    # process they are the view swap: milliseconds, not counted.
    in_process_all = all_builds + checks
    wait = e2e["first_run_after_s"]
    rows.append(
        (
            "end to end through Dagster",
            f"{e2e['total_s']:.0f} s",
            f"{e2e['total_s'] / in_process_all:.2f} x the same builds and window checks in "
            f"process ({in_process_all:.0f} s; the promotions reuse the checks' verdict); "
            f"{(e2e['total_s'] - wait) / in_process_all:.2f} x without the daemon's wait; "
            f"{DEFAULT_STORAGE}; backfill {e2e['backfill_s']:.0f} s in {e2e['runs']} runs "
            f"({e2e['backfill_status']}), window-check and promotion jobs {e2e['jobs_s']:.0f} s "
            f"({', '.join(e2e['promotions'])})",
        )
    )
    overhead = (e2e["backfill_s"] - wait - all_builds) / max(e2e["runs"], 1)
    mean_run = f"mean run {e2e['mean_run_s']:.1f} s, of which SQL " + (
        f"{all_builds / max(e2e['runs'], 1):.1f} s"
    )
    rows.append(("orchestration overhead per run", f"{overhead:.1f} s", mean_run))
    rows.append(
        (
            "start-up gap between two runs",
            f"{e2e['mean_gap_s']:.1f} s",
            "queue, process start, code load: the cost that scales with the run count",
        )
    )
    rows.append(
        (
            "backfill daemon's wait",
            f"{wait:.0f} s",
            "launch to the first run's start (the daemon looks every 30 s, fixed in Dagster "
            "1.13); it marks the backfill completed up to 30 s after the last run, which "
            "nothing waits for",
        )
    )
    if one_model:  # a full run only: --quick keeps CI within its time budget
        alone = _end_to_end(
            workdir,
            warehouse,
            plans,
            first,
            last,
            DEFAULT_STORAGE,
            jobs=False,
            assets=[revenue.asset_path("v2")],
        )
        rows.append(
            (
                "end-to-end backfill, v2 daily_revenue alone",
                f"{alone['backfill_s']:.0f} s",
                f"{alone['backfill_s'] / built:.2f} x its build in process ({built:.1f} s); "
                f"{(alone['backfill_s'] - alone['first_run_after_s']) / built:.2f} x without the "
                f"daemon's wait ({alone['first_run_after_s']:.0f} s); {alone['runs']} runs, mean "
                f"run {alone['mean_run_s']:.1f} s, gap {alone['mean_gap_s']:.1f} s",
            )
        )
    chunk = revenue.chunk
    for other in (2 * chunk, 3 * chunk):
        fewer = e2e["runs"] - -(-days // other)
        rows.append(
            (
                f"chunk {other} instead of {chunk} (estimate)",
                f"-{fewer * e2e['mean_gap_s']:.0f} s",
                f"{fewer} fewer runs x the start-up gap",
            )
        )
    peak = f"{e2e['peak_run_rss_mb']:.0f} MB"
    seen = f"largest of {e2e['run_processes']} run processes (backfill, checks, promotion)"
    rows.append(("peak RSS of the largest run process", peak, seen))
    server = f"{e2e['peak_code_server_rss_mb']:.0f} MB"
    rows.append(("peak RSS of the code server", server, "evaluates the sensors"))
    print(*rows, sep="\n", flush=True)
    return rows


def _arguments_shown() -> str:
    """This run's arguments, without where the table was written."""
    shown, skip = [], False
    for argument in sys.argv[1:]:
        if skip or argument.startswith("--out"):
            skip = argument == "--out"
            continue
        shown.append(argument)
    return "".join(f" {a}" for a in shown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="70 days x 1,000 orders a day")
    parser.add_argument("--days", type=int)
    parser.add_argument("--orders-per-day", type=int)
    parser.add_argument("--skip-dagster", action="store_true", help="skip the end-to-end run")
    parser.add_argument("--out", type=Path, help="write the results as Markdown here")
    parser.add_argument(
        "--e2e-storages",
        help=f"comma-separated of {', '.join(STORAGES)} (default: all; --quick: {DEFAULT_STORAGE})",
    )
    parser.add_argument(
        "--probe-partitions", type=int, help="partitions of the bookkeeping probe's run"
    )
    parser.add_argument("--bookkeeping-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bookkeeping_probe:
        _bookkeeping_probe([int(n) for n in args.bookkeeping_probe.split(",")])
        return 0
    e2e_storages = (
        args.e2e_storages.split(",")
        if args.e2e_storages
        else ([DEFAULT_STORAGE] if args.quick else list(STORAGES))
    )
    unknown = [s for s in e2e_storages if s not in STORAGES]
    if unknown:
        parser.error(f"--e2e-storages: unknown {unknown}; choose from {list(STORAGES)}")
    probe_partitions = args.probe_partitions or (100 if args.quick else 400)
    # Full size: the shipped plans' window (2024-01-01..2025-12-31, 731 days), so the promotion
    # gate can pass. Quick: 70 days, which still cover the pilot rows the known records need;
    # promotion is then refused (the window is incomplete), which the quick run reports.
    days = args.days or (70 if args.quick else 731)
    per_day = args.orders_per_day or (1_000 if args.quick else 20_000)
    first = dt.date(2024, 1, 1)
    last = first + dt.timedelta(days=days - 1)
    # The daily example plans: the figures in docs/benchmarks.md are for them (the monthly plan
    # reads the same orders; its builds are a fraction of theirs).
    plans = [p.with_window(first, last) for p in shipped_plans() if p.cadence.name == "daily"]
    revenue = next(p for p in plans if p.name == "daily_revenue")
    workdir = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    warehouse = workdir / "warehouse.duckdb"
    rows: list[tuple[str, str, str]] = []
    print(f"{days} days x {per_day:,} orders a day in {workdir}", flush=True)

    try:
        conn = duckdb.connect(str(warehouse))
        seconds, summary = timed(generate, conn, first, last, per_day, 42)
        sizes = f"{summary.orders:,} order rows, {summary.refunds:,} refunds"
        rows.append(("generate data set", f"{seconds:.1f} s", sizes))
        print(rows[-1], flush=True)

        window = {"start": first, "end": last + dt.timedelta(days=1)}
        reference, _ = timed(conn.execute, REFERENCE, window)
        rows.append(("reference: v2 daily_revenue, one statement", f"{reference:.2f} s", "1.00 x"))
        print(rows[-1], flush=True)

        sql_only = _model_sql_seconds(conn, revenue, "v2", first, last)
        rows.append(
            ("chunked build, v2 SQL only", f"{sql_only:.2f} s", f"{sql_only / reference:.2f} x ref")
        )
        built = _build_all(conn, revenue, "v2", first, last)
        rows.append(
            (
                "chunked build, v2 full (SQL, fingerprints, checks, write)",
                f"{built:.2f} s",
                f"{built / reference:.2f} x ref",
            )
        )
        same = not conn.execute(
            SAME_ROWS.format(a="main.reference", b=revenue.model_table("v2"))
        ).fetchone()[0]
        rows.append(("project v2 output equals the reference", "yes" if same else "NO", ""))
        print(*rows[-3:], sep="\n", flush=True)

        # Five late-data repairs of single days spread over the history; their median is what
        # one repair costs (the first touches of a cold file make single samples noisy). Each
        # is split into the statements that run the plan's own SQL (the version's query and
        # the source slice, whose texts they embed) and the rest, the project's part.
        plan_sql_texts = (revenue.version_sql("v2"), revenue.source_slice_sql)
        timings = []
        for day in (first + dt.timedelta(days=days * k // 6) for k in range(1, 6)):
            clock = _StatementClock(conn, plan_sql_texts)
            seconds, _ = timed(
                build_window, clock, revenue, "v2", day, day + dt.timedelta(days=1), "bench"
            )
            timings.append((seconds, clock.marked))
        repairs = sorted(seconds for seconds, _ in timings)
        repair = repairs[2]
        rows.append(
            (
                "one-day repair (full build, median of 5 days)",
                f"{repair:.3f} s",
                f"{repair / reference:.3f} x ref (range {repairs[0]:.3f}..{repairs[-1]:.3f} s)",
            )
        )
        plan_sql = sorted(marked for _, marked in timings)[2]
        own = sorted(seconds - marked for seconds, marked in timings)[2]
        rows.append(
            (
                "one-day repair: the plan's own SQL, median",
                f"{plan_sql:.3f} s",
                f"{plan_sql / reference:.3f} x ref (its version query and source slice); "
                f"the project's part (checks, evidence, the atomic write): {own * 1000:.0f} ms, "
                f"{own / reference:.3f} x",
            )
        )
        print(rows[-2:], flush=True)

        all_builds = built
        for plan in plans:
            for version in plan.version_names:
                if (plan.name, version) != ("daily_revenue", "v2"):
                    all_builds += _build_all(conn, plan, version, first, last)
        checks = 0.0
        verdicts = []
        for plan in plans:
            seconds, results = timed(run_window_checks, conn, plan)
            checks += seconds
            verdicts += [r for r in results if r.blocking and not r.passed]
        rows.append(
            (
                "chunked build, all 4 models (full)",
                f"{all_builds:.2f} s",
                f"{all_builds / reference:.2f} x ref",
            )
        )
        rows.append(
            (
                "window checks, both plans",
                f"{checks:.2f} s",
                f"{checks / all_builds:.2f} x the chunked build of all 4 models",
            )
        )
        if verdicts:
            names = "; ".join(v.name for v in verdicts)
            rows.append(("blocking window checks failing", str(len(verdicts)), names))
        # A promotion's gate evaluated from scratch. Through Dagster (and in process alike) the
        # promotion right after the window-check job reuses that job's verdict, so the gate is
        # not part of the in-process time the end to end is compared with; reported for scale.
        gates = sum(timed(evaluate_gate, conn, p, p.spec.candidate, approver(p))[0] for p in plans)
        rows.append(
            (
                "promotion gates from scratch, both plans (in process)",
                f"{gates:.2f} s",
                f"{gates / all_builds:.2f} x the chunked build of all 4 models; what a promotion "
                "costs when it cannot reuse the window checks' verdict",
            )
        )
        probe, before = timed(source_probes, conn, plans)
        rows.append(("sensor tick, nothing arrived: probes", f"{probe:.3f} s", "every tick"))
        # Late rows arrive on three past days; the next tick compares only the days they reach
        # (what the late-data sensors do when the sources only grew).
        late_days = [first + dt.timedelta(days=days * k // 4) for k in (1, 2, 3)]
        append_late_rows(conn, late_days, rows_per_day=5)
        tick, (narrowed, scan) = timed(_narrowed_tick, conn, plans, before)
        found = sorted({r.partition for r in scan.repairs})
        rows.append(
            (
                "sensor tick, late rows arrived on 3 days",
                f"{tick:.2f} s",
                f"probes, days the new rows reach ({narrowed}), exact comparison of those: "
                f"{len(scan.repairs)} repairs on {', '.join(map(str, found))}",
            )
        )
        full, scan = timed(find_repairs, conn, plans)
        rows.append(
            (
                "sensor: exact scan of both plans, whole window",
                f"{full:.2f} s",
                f"{len(scan.repairs)} repairs; the hourly full scan, and after edits in place",
            )
        )
        print(*rows[-3:], sep="\n", flush=True)
        # Repair the late days so the rest of the run sees a warehouse whose days are current.
        for repair in scan.repairs:
            plan = next(p for p in plans if p.name == repair.plan)
            for version in repair.versions:
                build_window(
                    conn,
                    plan,
                    version,
                    repair.partition,
                    plan.cadence.next(repair.partition),
                    "late",
                )
        conn.close()

        half = first + dt.timedelta(days=days // 4)
        late = first + dt.timedelta(days=(3 * days) // 4)
        rss_early = _peak_rss_of_chunk_build(warehouse, half, revenue.chunk)
        rss_late = _peak_rss_of_chunk_build(warehouse, late, revenue.chunk)
        rows.append(
            ("peak RSS, one chunk build (first half of history)", f"{rss_early:.0f} MB", "")
        )
        rows.append(
            ("peak RSS, one chunk build (second half of history)", f"{rss_late:.0f} MB", "")
        )
        # The whole-window runs (window checks, promotion) read the most: half the window
        # against all of it shows whether their memory grows with history.
        midpoint = first + dt.timedelta(days=days // 2 - 1)
        rss_half = _peak_rss_of_window_checks(warehouse, first, midpoint)
        rss_all = _peak_rss_of_window_checks(warehouse, first, last)
        rows.append(
            (f"peak RSS, window checks of {days // 2} days", f"{rss_half:.0f} MB", "both plans")
        )
        rows.append((f"peak RSS, window checks of {days} days", f"{rss_all:.0f} MB", "both plans"))
        print(*rows[-4:], sep="\n", flush=True)

        # Dagster's bookkeeping per partition, on each storage, in this run: the ratios are
        # what docs/benchmarks.md reports (absolute figures move with the machine's load).
        probed = {**STORAGES, **({} if args.quick else PROBED_ONLY)}
        per_partition = {
            name: _bookkeeping(workdir, name, kind, events, project, probe_partitions)
            for name, (kind, events, project) in probed.items()
        }
        base = per_partition[BASELINE_STORAGE]
        for name, ms in per_partition.items():
            note = (
                f"{ms / base:.2f} x {BASELINE_STORAGE}; run of {probe_partitions} partitions "
                "minus one"
            )
            if name in PROBED_ONLY:
                note += (
                    "; not used: the planned-subset flag hides a failed chunk's days"
                    if "subset" in name
                    else "; not used: a new connection per statement"
                    if name.startswith("dagster-")
                    else "; not used"
                )
            rows.append((f"Dagster bookkeeping per partition, {name}", f"{ms:.1f} ms", note))
        print(*rows[-len(per_partition) :], sep="\n", flush=True)

        if not args.skip_dagster:
            rows += _dagster_rows(
                workdir,
                warehouse,
                plans,
                revenue,
                first,
                last,
                e2e_storages,
                (built, all_builds, checks),
                one_model=not args.quick,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    if args.out:
        machine = (
            f"{platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, DuckDB {duckdb.__version__}"
        )
        lines = [
            f"Command: `.venv/bin/python benchmarks/bench.py{_arguments_shown()}`",
            f"Size: {days} days x {per_day:,} orders a day. Machine: {machine}.",
            "",
            "| figure | value | ratio / note |",
            "|---|---|---|",
            *(f"| {n} | {v} | {note} |" for n, v, note in rows),
        ]
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
