"""The shipped run launcher (``component/launcher.py``): runs start in processes forked from a
warm forkserver, through the real webserver, daemon and run queue, and the UI's *Terminate*
still stops them."""

import multiprocessing
import os
import time
from multiprocessing import forkserver
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import DagsterLaunchFailedError
from dagster._core.launcher.base import LaunchRunContext

from backfill_assets.component import launcher
from backfill_assets.example.dagster_dev import DagsterDev
from backfill_assets.instance import sqlite_config, write_instance_yaml
from backfill_assets.processes import alive

LOCATION = "team_jobs"

JOBS = """\
import time

import dagster as dg


@dg.op
def greet(context):
    context.log.info("hello from a forked run worker")


@dg.op
def wait_a_minute():
    for _ in range(600):
        time.sleep(0.1)


@dg.job
def quick():
    greet()


@dg.job
def slow():
    wait_a_minute()


defs = dg.Definitions(jobs=[quick, slow])
"""


# Assets whose definitions note each load, by process.
ASSETS = """\
import os
from pathlib import Path

import dagster as dg


@dg.asset
def first():
    return 1


@dg.asset
def second():
    return 2


@dg.definitions
def defs():
    with (Path(__file__).parent / "loads.txt").open("a") as file:
        file.write(f"{os.getpid()}\\n")
    return dg.Definitions(assets=[first, second])
"""


def _project(tmp_path: Path, code: str = JOBS) -> tuple[Path, Path]:
    (tmp_path / "jobs.py").write_text(code)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        f"  - python_file:\n      relative_path: jobs.py\n      location_name: {LOCATION}\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    write_instance_yaml(home, sqlite_config(home), "sqlite")  # the shipped settings
    return workspace, home


def _run(dev: DagsterDev, run_id: str) -> dict:
    return dev.graphql(
        """
        query R($id: ID!) {
          runOrError(runId: $id) {
            ... on Run {
              status
              tags { key value }
              eventConnection { events { __typename ... on MessageEvent { message } } }
            }
          }
        }
        """,
        {"id": run_id},
    )["runOrError"]


def _wait_status(dev: DagsterDev, run_id: str, wanted: set[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (status := dev.run_status(run_id)) not in wanted:
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(0.5)
    return status


def test_runs_start_in_forked_workers_and_terminate_stops_them(tmp_path: Path) -> None:
    workspace, home = _project(tmp_path)
    with DagsterDev(
        home, str(tmp_path / "warehouse.duckdb"), workspace=workspace, location=LOCATION
    ) as dev:
        quick = dev.launch_job("quick")
        assert dev.wait_run(quick, timeout=120) == "SUCCESS"
        run = _run(dev, quick)
        messages = [e.get("message", "") for e in run["eventConnection"]["events"]]
        assert "hello from a forked run worker" in messages
        # The worker the launcher recorded is the process that ran it.
        tags = {t["key"]: t["value"] for t in run["tags"]}
        pid = int(tags[launcher.PID_TAG])
        assert f"Started process for run (pid: {pid})." in messages

        # The UI's Terminate: the worker is interrupted, the run ends CANCELED.
        slow = dev.launch_job("slow")
        _wait_status(dev, slow, {"STARTED"})
        worker = int({t["key"]: t["value"] for t in _run(dev, slow)["tags"]}[launcher.PID_TAG])
        assert alive(worker)
        result = dev.graphql(
            "mutation T($id: String!) { terminateRun(runId: $id) { __typename } }", {"id": slow}
        )["terminateRun"]
        assert result["__typename"] == "TerminateRunSuccess", result
        started = time.monotonic()
        assert _wait_status(dev, slow, {"CANCELED", "FAILURE", "SUCCESS"}, 60) == "CANCELED"
        assert time.monotonic() - started < 30  # not the minute the op would have taken
        deadline = time.monotonic() + 30
        while alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} still running"
            time.sleep(0.2)

        # The next run starts as before.
        again = dev.launch_job("quick")
        assert dev.wait_run(again, timeout=120) == "SUCCESS"


def test_a_run_of_selected_assets_loads_the_code_location_once(tmp_path: Path) -> None:
    """Dagster 1.13 loads a run's code location twice when the run materializes a selection of
    assets, as every backfill run does; the forked worker loads it once (~0.6 s a run for the
    shipped plans)."""
    workspace, home = _project(tmp_path, ASSETS)
    with DagsterDev(
        home, str(tmp_path / "warehouse.duckdb"), workspace=workspace, location=LOCATION
    ) as dev:
        run_id = dev.launch_job("__ASSET_JOB", assets=[["first"]])
        assert dev.wait_run(run_id, timeout=120) == "SUCCESS"
        tags = {t["key"]: t["value"] for t in _run(dev, run_id)["tags"]}
    worker = tags[launcher.PID_TAG]
    loads = (tmp_path / "loads.txt").read_text().split()
    assert loads.count(worker) == 1, loads


def test_a_worker_that_does_not_answer_fails_the_launch_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker the launcher cannot hear from is killed and the launch fails (the run queue then
    marks the run failed): no run stays STARTING with nothing running it, and nothing runs."""
    _, home = _project(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # The launcher waits for a word the worker never says (the forked worker keeps the real one).
    monkeypatch.setattr(launcher, "READY", "a word no worker says")
    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_launcher, launcher.WarmRunLauncher)
        job = ReconstructableJob.for_file(str(tmp_path / "jobs.py"), "quick")
        run = instance.create_run_for_job(
            job_def=job.get_definition(), job_code_origin=job.get_python_origin()
        )
        with pytest.raises(DagsterLaunchFailedError, match="did not start.*launch it again"):
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        deadline = time.monotonic() + 30
        while multiprocessing.active_children():  # the worker was killed and is reaped
            assert time.monotonic() < deadline, multiprocessing.active_children()
            time.sleep(0.1)
        time.sleep(1)  # a worker that went on would have written its first events by now
        kinds = {e.dagster_event_type for e in instance.all_logs(run.run_id) if e.dagster_event}
        assert not kinds & {DagsterEventType.RUN_START, DagsterEventType.STEP_START}, kinds
        assert launcher.PID_TAG not in instance.get_run_by_id(run.run_id).tags
    forkserver._forkserver._stop()


def _report_pid(queue) -> None:
    queue.put(os.getppid())


def _forkserver_pid() -> int:
    context = launcher._forkserver()
    queue = context.Queue()
    process = context.Process(target=_report_pid, args=(queue,))
    process.start()
    process.join(30)
    return queue.get(timeout=5)


@pytest.fixture
def framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the project's source folder, so the test edits no real file."""
    source = tmp_path / "framework"
    source.mkdir()
    (source / "module.py").write_text("VALUE = 1\n")
    monkeypatch.setattr(launcher, "PACKAGE_DIR", source)
    monkeypatch.setattr(launcher, "PRELOAD", ["json"])
    monkeypatch.setattr(launcher, "_preloaded_source", None)
    yield source
    forkserver._forkserver._stop()


def test_an_edited_framework_restarts_the_forkserver(framework: Path) -> None:
    first = _forkserver_pid()
    assert _forkserver_pid() == first  # nothing changed: the same warm server forks again
    module = framework / "module.py"
    module.write_text("VALUE = 2\n")
    os.utime(module, (time.time() + 5, time.time() + 5))
    second = _forkserver_pid()
    assert second != first
    assert multiprocessing.active_children() == []
