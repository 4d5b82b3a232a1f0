"""The run launcher: each run in a process forked from one that has already imported Dagster.

Dagster's ``DefaultRunLauncher`` asks the code server to start a run, and the code server
*spawns* a new Python interpreter for it, which imports Dagster, DuckDB and pandas and loads the
code location before the run's first step: 2 s or so of a backfill chunk whose SQL and events
take 1–2 s (``docs/benchmarks.md``). A backfill of two years in 31-day chunks pays it 24 times.

``WarmRunLauncher`` starts each run in a process forked from a *forkserver*: a clean,
single-threaded Python process that the launching process (the daemon's run queue, or the
webserver when runs are not queued) starts once and that imports those libraries once. A fork
of it has them already; it loads the code location from the run's origin (the same module,
working directory and definitions the code server loaded, read fresh for every run, so a plan
edited since is what runs) and then executes the run exactly as ``dagster api execute_run``
does (the command Dagster's Docker and Kubernetes launchers run): same events, same status
changes, same failure handling. Libraries and the project's framework modules are imported
ahead (``PRELOAD``); when a file of the framework changes, the launcher restarts the forkserver
before the next run, and an upgraded library is picked up when the daemon restarts, as for the
daemon's own code.

Where it does not apply, it is Dagster's launcher: a run whose code location runs another
Python (``executable_path`` of the workspace entry) goes to the code server as before.

Start-up: the worker tells the launcher it is alive, the launcher records its PID on the run as
the tag ``backfill_assets/run_worker_pid``, and only then does the worker execute. A worker that
does not say so within ``START_TIMEOUT_S`` is killed and the launch fails, so the run queue
marks the run failed (a run never stays STARTING with nothing running it).

Termination (the UI's *Terminate*): the launcher marks the run CANCELING and sends the worker
SIGINT, which Dagster turns into an interrupt of the run (the code server's cancellation does
the same), so the run ends CANCELED with its open step's transaction rolled back. The worker
runs on the launcher's machine, as the code server's runs do.
"""

import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing import forkserver
from pathlib import Path

from dagster import DefaultRunLauncher
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher.base import LaunchRunContext

PID_TAG = "backfill_assets/run_worker_pid"
# Imported once in the forkserver: libraries, and the project's framework (what the plans are
# read with). Not the plans or the code location: each run loads those, so a run always executes
# the definitions as they are on disk.
PRELOAD = [
    "dagster",
    "dagster._cli.api",
    # What opening the instance imports (its SQL storages, alembic): 0.4 s a run otherwise.
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "jinja2",
    "upath",
    "tomlkit",
    "duckdb",
    "pandas",
    "sqlalchemy",
    "pydantic",
    "yaml",
    "backfill_assets.component",
    "backfill_assets.component.storage",
]
PACKAGE_DIR = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60  # how long launcher and worker wait for each other's word
READY, GO = "ready", "go"

_forkserver_lock = threading.Lock()
_preloaded_source: float | None = None  # newest framework source when the forkserver started


def framework_source_time() -> float:
    """The newest modification time of the project's Python files."""
    return max(path.stat().st_mtime for path in PACKAGE_DIR.rglob("*.py"))


def _forkserver() -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading ``PRELOAD``; restarted when the framework's source
    changed since it started, so an edited framework is what the next run imports."""
    global _preloaded_source
    context = multiprocessing.get_context("forkserver")
    with _forkserver_lock:
        newest = framework_source_time()
        if newest != _preloaded_source:
            if _preloaded_source is not None:
                forkserver._forkserver._stop()  # the next start imports the edited modules
            context.set_forkserver_preload(PRELOAD)
            _preloaded_source = newest
    return context


class WarmRunLauncher(DefaultRunLauncher):
    """Dagster's default run launcher, with runs started from a warm forkserver."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or os.path.realpath(origin.executable_path) != os.path.realpath(
            sys.executable
        ):
            super().launch_run(context)  # another interpreter: its code server starts the run
            return
        forkserver = _forkserver()
        here, there = forkserver.Pipe()
        worker = forkserver.Process(
            target=run_worker,
            args=(self._instance.get_ref(), run.run_id, there),
            name=f"dagster-run-{run.run_id[:8]}",
        )
        worker.start()
        there.close()
        try:
            # The worker says it is alive; its PID is on the run before it executes anything.
            if not (here.poll(START_TIMEOUT_S) and here.recv() == READY):
                raise DagsterLaunchFailedError(f"no word from the run worker in {START_TIMEOUT_S}s")
            self._instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
            here.send(GO)
        except (EOFError, OSError, DagsterLaunchFailedError) as error:
            worker.kill()
            raise DagsterLaunchFailedError(
                f"run worker (pid {worker.pid}) for run {run.run_id} did not start: "
                f"{error or type(error).__name__}. The run is marked failed; launch it again"
            ) from error
        finally:
            here.close()
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        if not self.has_instance:
            return False
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        if PID_TAG not in run.tags:
            return super().terminate(run_id)  # launched by the code server
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(run.tags[PID_TAG]), signal.SIGINT)
        except ProcessLookupError:
            self._instance.report_engine_event(
                f"Run worker (pid: {run.tags[PID_TAG]}) is gone; the run was not interrupted.",
                run,
                cls=self.__class__,
            )
            return False
        return True


def run_worker(instance_ref, run_id: str, launcher) -> None:
    """The body of a forked run worker: ``dagster api execute_run``'s, in this process, once
    the launcher has recorded it on the run (``launcher``: its end of a pipe)."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance
    from dagster._utils.interrupts import capture_interrupts

    # The forkserver ignores SIGINT; a run worker is interrupted by it (terminate, Ctrl-C).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        launcher.send(READY)
        go = launcher.poll(START_TIMEOUT_S) and launcher.recv() == GO
    except (EOFError, OSError):
        go = False
    finally:
        launcher.close()
    if not go:
        sys.exit(f"run {run_id}: the launcher gave up on this worker; nothing was executed")
    _load_code_location_once()
    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        _execute_run_command_body(
            run_id, instance, write_stream_fn=lambda _event: None, set_exit_code_on_failure=False
        )


def _load_code_location_once() -> None:
    """Make this worker load its code location once. Dagster 1.13 loads it twice in a run of an
    asset selection (a backfill's runs are): once for the run's job, and again for the job's
    asset subset, whose ``ReconstructableJob`` misses the first one's cache. That is ~0.6 s of
    every run, and two loads could even read two versions of a plan edited in between. A
    worker executes one run, so one load serves the whole run."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    load = ReconstructableRepository.get_definition
    loaded: dict = {}

    def get_definition(repository: ReconstructableRepository):
        try:
            hash(repository)
        except TypeError:  # an unhashable container_context: Dagster's own path
            return load(repository)
        if repository not in loaded:
            loaded[repository] = load(repository)
        return loaded[repository]

    ReconstructableRepository.get_definition = get_definition
