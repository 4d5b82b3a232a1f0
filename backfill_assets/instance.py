"""The Dagster instance the project runs on: its storage and how it writes events.

Two storages, chosen when a command starts (``settings.dagster_storage()``):

- ``sqlite`` (default): the SQLite files of the Dagster home, configured by the shipped
  ``dagster_home/dagster.yaml``, whose event log keeps its connections
  (``component/storage.py``: Dagster's own SQLite event log opens and closes several per
  event);
- ``postgres``: runs, event log and schedules in PostgreSQL: the server named by
  ``BACKFILL_DAGSTER_PG_URL`` (a ``postgresql+psycopg2://`` URL; the variable stays in the
  environment and the ``dagster.yaml`` names only the variable), or else an embedded
  PostgreSQL 16 (``pgserver``) whose data folder is ``<home>/pgdata`` and which lives as long as
  the ``instance_storage`` context that started it. Install with ``pip install -e
  '.[postgres]'``.

Either way the instance keeps the shipped concurrency pools (one ``duckdb`` writer at a time)
and run queue: the Postgres ``dagster.yaml`` is the shipped one plus dagster-postgres' run and
schedule storage and its event log storage holding its connection
(``component/postgres_storage.py``): dagster-postgres opens a new connection per statement
outside the webserver, several per stored event, and a ranged run stores a check evaluation
per partition one by one. On either storage, holding the connection is the change that cuts
Dagster's cost per partition (docs/benchmarks.md). This module imports no Dagster.

Event writing (``event_env``) is the same for both storages and is the one place that sets
Dagster's event environment variables, for ``backfill-assets ui``, the demo, the end-to-end
tests and the benchmark alike. What Dagster 1.13.27 offers, read in its source:

- ``DAGSTER_EVENT_BATCH_SIZE`` (``_core/instance/methods/event_methods.py``): above 0, the
  events Dagster emits as a batch (the materializations of one output over a range of
  partitions; the planned events at run start) are handed to the storage's
  ``store_event_batch`` together, up to that many at a time. dagster-postgres stores a batch of
  materializations as one multi-row INSERT (any other batch, and SQLite every batch, one event
  at a time as before). Check evaluations are never batched. Nothing the UI shows changes:
  every event is still stored, each with its partition. Set here.
- ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`` (``_core/storage/event_log/base.py``,
  read in ``_core/instance/runs/run_domain.py``): one ``ASSET_MATERIALIZATION_PLANNED`` event
  per asset and run carrying the range, instead of one per partition. Such an event is stored
  with no partition, and the asset's partition status (``partition_status_cache``) finds failed
  and in-progress partitions only from per-partition planned events
  (``get_latest_asset_partition_materialization_attempts_without_materializations`` filters
  ``partition IS NOT NULL``): the days of a chunk that failed before materializing (an SQL
  error, a lock timeout, a killed worker) would show as *missing*, not *failed*, and a running
  chunk's days not as *materializing*. Dagster's own comment warns of it. (The backfill page's
  counts and "re-execute from failure" do not read planned events: they work from the runs'
  range tags and status and the materializations.) Not set here; docs/benchmarks.md has what it
  would save.

As root, pgserver runs PostgreSQL as a system user ``pgserver`` (creating it), chowns the data
folder to it and adds o+rx to every folder above it; that user must keep traversing them while
the server runs (pytest, for one, resets ``/tmp/pytest-of-root`` to 0700 at each session start,
so the tests keep their servers elsewhere).
"""

import importlib.util
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import yaml

from backfill_assets import settings
from backfill_assets.processes import alive

# Events per store_event_batch call: a ranged run's materializations of one asset come as one
# batch (a chunk of 31 days = 31 events), its planned events of every asset as another.
EVENT_BATCH_SIZE = 1000
PGDATA = "pgdata"  # the embedded server's data folder inside the Dagster home
PSYCOPG2_SCHEMES = ("postgresql+psycopg2://", "postgresql+psycopg://")
# First line of every dagster.yaml this module writes: such a file is rewritten on each start;
# a dagster.yaml without it is the user's and is never touched.
MARKER = "# Written by backfill_assets.instance"


def event_env() -> dict[str, str]:
    """Dagster's event-writing settings for ``dagster dev``, its daemon and run workers."""
    return {"DAGSTER_EVENT_BATCH_SIZE": str(EVENT_BATCH_SIZE)}


class InstanceStorageError(RuntimeError):
    """The chosen storage cannot be set up; the message names the fix."""


@dataclass(frozen=True)
class InstanceStorage:
    """A Dagster home ready to run on: pass ``env`` to ``dagster dev`` (``DagsterDev(home,
    warehouse, env=storage.env)``)."""

    kind: str  # "sqlite" or "postgres"
    home: Path
    url: str | None = None  # the PostgreSQL URL Dagster connects with (None for SQLite)
    embedded: bool = False  # a pgserver this context started and stops
    env: dict[str, str] = field(default_factory=dict)


def shipped_config() -> dict:
    """The shipped instance settings (pools, run queue, telemetry) as a mapping."""
    return yaml.safe_load((settings.SHIPPED_DAGSTER_HOME / "dagster.yaml").read_text())


def sqlite_config(home: Path) -> dict:
    """The shipped settings for a Dagster home of its own: the shipped file names the event
    log's folder by ``DAGSTER_HOME``, this one by ``home``'s path, so the home opens the same
    whatever the environment of the process that opens it."""
    config = shipped_config()
    config["event_log_storage"]["config"]["dagster_home"] = str(home)
    return config


def postgres_config(postgres_url: str | dict) -> dict:
    """The shipped settings with run, event log and schedule storage in PostgreSQL; the event
    log keeps its connection (``component/postgres_storage.py``)."""
    config = {"postgres_url": postgres_url}
    return {
        "run_storage": {
            "module": "dagster_postgres",
            "class": "PostgresRunStorage",
            "config": config,
        },
        "event_log_storage": {
            "module": "backfill_assets.component.postgres_storage",
            "class": "PooledPostgresEventLogStorage",
            "config": config,
        },
        "schedule_storage": {
            "module": "dagster_postgres",
            "class": "PostgresScheduleStorage",
            "config": config,
        },
        **{k: v for k, v in shipped_config().items() if not k.endswith("storage")},
    }


def write_instance_yaml(home: Path, config: dict, kind: str) -> Path:
    """Write ``home/dagster.yaml`` unless the user wrote one there (no marker line)."""
    path = Path(home) / "dagster.yaml"
    if path.exists() and not path.read_text().startswith(MARKER):
        return path
    header = (
        f"{MARKER} for {kind} storage; rewritten on each start.\n"
        "# The pools and run queue come from the shipped dagster_home/dagster.yaml (see its\n"
        "# comments): change them there.\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return path


def check_postgres_url(url: str) -> str:
    """The server URL, refused unless its driver is installed with this project."""
    if not url.startswith(PSYCOPG2_SCHEMES):
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise InstanceStorageError(
            f"{settings.PG_URL_ENV} starts with {scheme!r}: dagster-postgres under SQLAlchemy "
            "2.1 reads postgresql:// as psycopg 3, which is not installed. Fix: write it as "
            "postgresql+psycopg2://user:password@host:5432/database"
        )
    return url


def _require_postgres_packages() -> None:
    # Looked up, not imported: this module stays free of Dagster.
    missing = [m for m in ("dagster_postgres", "psycopg2") if importlib.util.find_spec(m) is None]
    if missing:
        raise InstanceStorageError(
            f"Postgres storage needs {', '.join(missing)}. Fix: pip install -e '.[postgres]'"
        )


@contextmanager
def instance_storage(
    home: Path | None = None, kind: str | None = None
) -> Iterator[InstanceStorage]:
    """Prepare a Dagster home for the chosen storage, start the embedded PostgreSQL if that is
    the choice, and stop it again on exit (after ``dagster dev`` has stopped).

    ``home`` defaults to ``settings.dagster_home()`` and ``kind`` to
    ``settings.dagster_storage()``. The yielded ``env`` holds ``DAGSTER_HOME`` and the event
    settings (``event_env``); for an external server the URL stays in the caller's environment.
    """
    kind = kind or settings.dagster_storage()
    home = Path(home or settings.dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {"DAGSTER_HOME": str(home), **event_env()}
    if kind == "sqlite":
        if home != settings.SHIPPED_DAGSTER_HOME.resolve():
            write_instance_yaml(home, sqlite_config(home), "sqlite")
        yield InstanceStorage("sqlite", home, env=env)
        return
    if kind != "postgres":
        raise InstanceStorageError(
            f"{settings.STORAGE_ENV}={kind!r} is not a storage. Fix: sqlite or postgres"
        )
    _require_postgres_packages()
    external = os.environ.get(settings.PG_URL_ENV)
    if external:
        url = check_postgres_url(external)
        write_instance_yaml(home, postgres_config({"env": settings.PG_URL_ENV}), "postgres")
        yield InstanceStorage("postgres", home, url=url, env=env)
        return
    with embedded_postgres(home / PGDATA) as url:
        write_instance_yaml(home, postgres_config(url), "postgres")
        yield InstanceStorage("postgres", home, url=url, embedded=True, env=env)


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """A PostgreSQL 16 server (``pgserver``) on ``pgdata`` reachable by a Unix socket only,
    created on first use and stopped when the last process using it leaves this context.

    pgserver counts the processes that hold a server in ``pgdata/.handle_pids.json`` and stops
    it when the last one lets go; a handle left by a killed process would keep it running for
    ever, so dead processes are dropped from that list first. As root, pgserver runs the server
    as a system user ``pgserver`` (created if missing) and makes the folders above ``pgdata``
    traversable by it.
    """
    _require_postgres_packages()
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (pgserver keeps a lock file there)
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise InstanceStorageError(
            "the embedded PostgreSQL needs pgserver. Fix: pip install -e '.[postgres]'"
        ) from None
    pgdata = Path(pgdata).resolve()
    if any(c.isspace() for c in str(pgdata)):
        raise InstanceStorageError(
            f"the embedded PostgreSQL cannot run in {pgdata}: pgserver hands the folder to "
            "postgres unquoted, so a space splits it. Fix: a DAGSTER_HOME whose path has no "
            f"spaces, or a server of your own in {settings.PG_URL_ENV}"
        )
    _forget_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        # pgserver's URL is postgresql://postgres:@/postgres?host=<socket folder>, the folder
        # unquoted: a '+' or a space in it would reach libpq as something else.
        address, _, socket_dir = server.get_uri().partition("?host=")
        yield (
            "postgresql+psycopg2://"
            + address.split("://", 1)[1]
            + ("?host=" + quote(socket_dir, safe="/") if socket_dir else "")
        )
    finally:
        pid = server.get_pid()
        server.cleanup()
        _wait_stopped(pid, pgdata)


def postgres_running(pgdata: Path) -> int | None:
    """The pid of the postmaster serving ``pgdata``, if one runs (from its ``postmaster.pid``)."""
    pidfile = Path(pgdata) / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def _forget_dead_handles(pgdata: Path) -> None:
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = yaml.safe_load(handles.read_text()) or []
    except yaml.YAMLError:
        pids = []
    living = [pid for pid in pids if isinstance(pid, int) and alive(pid)]
    if living != pids:
        handles.write_text(str(living))


def _wait_stopped(pid: int | None, pgdata: Path, timeout: float = 30) -> None:
    """Wait until the server this process stopped is gone; a server another process still
    holds keeps running."""
    if pid is None:
        return
    handles = pgdata / ".handle_pids.json"
    others = yaml.safe_load(handles.read_text()) if handles.exists() else []
    if any(alive(p) for p in others or [] if p != os.getpid()):
        return
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.2)
