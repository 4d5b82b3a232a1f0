"""Driving a real ``dagster dev`` (webserver + daemon) the way the UI does: its GraphQL API.

Used by ``backfill-assets demo`` (so the UI's Backfills page shows the demo's backfills) and by
the end-to-end tests. ``dagster dev`` runs in its own process group with SIGINT restored (it
ignores signals inherited from a non-interactive parent); stopping sends SIGINT to the group,
then SIGKILL after a grace period, so no process outlives the context (``processes.py``).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backfill_assets.instance import event_env
from backfill_assets.processes import port_problem, signal_group, start_group, stop_group
from backfill_assets.settings import PROJECT_DIR, set_writer_pool_limit, writer_pool_limit

LOCATION = "backfill_assets"
REPOSITORY = "__repository__"
FINISHED_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

_BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions
      runs { id status tags { key value } }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            numPartitionsTargeted numPartitionsInProgress
            numPartitionsMaterialized numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { inProgress materialized failed }
        }
      }
      partitionStatusCounts { runStatus count }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""


class DagsterDevError(RuntimeError):
    """``dagster dev`` did not start, or the API refused a request."""


@dataclass(frozen=True)
class BackfillState:
    """A backfill as the webserver reports it. Partitions count once per asset (two assets of
    31 days are 62): for an asset backfill Dagster's per-asset status counts, which its daemon
    updates once per iteration; for a job backfill the partitions by their run's status.
    ``requested`` partitions have a run (finished or not): fewer than ``targeted`` means the
    daemon has runs still to launch."""

    id: str
    status: str
    runs: list[dict]
    targeted: int = 0
    materialized: int = 0
    failed: int = 0
    requested: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_BACKFILL and all(
            r["status"] in FINISHED_RUN for r in self.runs
        )

    @property
    def runs_done(self) -> int:
        return sum(r["status"] in FINISHED_RUN for r in self.runs)

    @property
    def all_runs_launched(self) -> bool:
        return self.requested >= self.targeted

    @property
    def runs_finished(self) -> bool:
        """Every partition has a run and every run has finished: nothing more will be written,
        though the daemon marks the backfill completed only on its next look (every 30 s)."""
        return self.targeted > 0 and self.all_runs_launched and self.runs_done == len(self.runs)


def partition_counts(data: dict) -> dict[str, int]:
    """``targeted``, ``materialized``, ``failed``, ``requested`` of a ``PartitionBackfill``.

    Asset backfills (``launchPartitionBackfill`` with assets, as the UI and the demo launch
    them) have per-asset counts in ``assetBackfillData``; Dagster returns no
    ``partitionStatusCounts`` for them, and ``numPartitions`` is null when the assets target
    different numbers of partitions. Job backfills have only ``partitionStatusCounts``.
    """
    statuses = (data.get("assetBackfillData") or {}).get("assetBackfillStatuses")
    if statuses is not None:
        counts = dict.fromkeys(("targeted", "materialized", "failed", "requested"), 0)
        for s in statuses:
            if s["__typename"] == "AssetPartitionsStatusCounts":
                done = s["numPartitionsMaterialized"] + s["numPartitionsFailed"]
                counts["targeted"] += s["numPartitionsTargeted"]
                counts["materialized"] += s["numPartitionsMaterialized"]
                counts["failed"] += s["numPartitionsFailed"]
                counts["requested"] += done + s["numPartitionsInProgress"]
            else:  # an unpartitioned asset counts as one
                counts["targeted"] += 1
                counts["materialized"] += int(s["materialized"])
                counts["failed"] += int(s["failed"])
                counts["requested"] += int(s["materialized"] or s["failed"] or s["inProgress"])
        return counts
    by_status = {c["runStatus"]: c["count"] for c in data.get("partitionStatusCounts") or []}
    return {
        "targeted": data.get("numPartitions") or sum(by_status.values()),
        "materialized": by_status.get("SUCCESS", 0),
        "failed": by_status.get("FAILURE", 0) + by_status.get("CANCELED", 0),
        "requested": sum(n for status, n in by_status.items() if status != "NOT_STARTED"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    """``with DagsterDev(home, warehouse) as dev:`` a running webserver + daemon on 127.0.0.1.

    ``workspace`` (default: this project's) and ``location`` choose the code location, so the
    same harness drives a team's own project; ``env`` adds environment variables.

    ``daemon_after_launch``: start the webserver alone (``dagster-webserver``) and the daemon
    (``dagster-daemon run``) right after the first backfill or run is submitted, instead of
    both together with ``dagster dev``. The backfill daemon looks for new backfills once at its
    start and then every 30 s (fixed in Dagster 1.13): started after the submission, its first
    look finds the backfill, where ``dagster dev``'s has come and gone (a 30 s wait in the demo).
    Each of the two processes then loads the code location in its own code server.
    """

    def __init__(
        self,
        dagster_home: Path,
        warehouse: str,
        port: int | None = None,
        log_file: Path | None = None,
        startup_timeout: float = 120,
        workspace: Path | None = None,
        env: dict[str, str] | None = None,
        location: str = LOCATION,
        daemon_after_launch: bool = False,
    ) -> None:
        self.location = location
        self.daemon_after_launch = daemon_after_launch
        self.workspace = Path(workspace or PROJECT_DIR / "workspace.yaml").resolve()
        self.extra_env = env or {}
        self.dagster_home = Path(dagster_home)
        self.warehouse = warehouse
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file or self.dagster_home / "dagster_dev.log"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None  # dagster dev, or the webserver alone
        self.daemon: subprocess.Popen | None = None  # the daemon when started on its own
        self.writer_limit: int | None = None  # the writer pool's limit, recorded on start

    def __enter__(self) -> "DagsterDev":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if problem := port_problem("127.0.0.1", self.port):
            raise DagsterDevError(f"cannot start dagster dev: {problem}")
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        self._env = env = {
            **os.environ,
            **event_env(),  # Dagster's event settings; before extra_env so a caller can override
            "DAGSTER_HOME": str(self.dagster_home.resolve()),
            "BACKFILL_WAREHOUSE": self.warehouse,
            **self.extra_env,
        }
        # The limit of the warehouse dagster dev will run on: several writers on a lake.
        self.writer_limit = set_writer_pool_limit(self.dagster_home, writer_pool_limit(env))
        server = ["dagster_webserver"] if self.daemon_after_launch else ["dagster", "dev"]
        command = [
            sys.executable, "-m", *server,
            "-w", str(self.workspace),
            "-h", "127.0.0.1", "-p", str(self.port),
        ]  # fmt: skip
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.process = self._start(command)
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    raise DagsterDevError(f"dagster dev exited with {code}; see {self.log_file}")
                if self._location_loaded():
                    return
                time.sleep(0.25)
        except BaseException:  # Ctrl-C while it starts too: no server outlives this call
            self.stop()  # its webserver, daemon or code server may still be running
            raise
        self.stop()
        raise DagsterDevError(
            f"dagster dev not ready in {self.startup_timeout}s; see {self.log_file}"
        )

    def _start(self, command: list[str]) -> subprocess.Popen:
        return start_group(
            command,
            cwd=self.workspace.parent,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _submitted(self) -> None:
        """A backfill or run was just submitted: start the daemon if it waited for that."""
        if self.daemon_after_launch and self.daemon is None and self.process is not None:
            self.daemon = self._start(
                [sys.executable, "-m", "dagster._daemon", "run", "-w", str(self.workspace)]
            )

    def _location_loaded(self) -> bool:
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name "
                "loadStatus locationOrLoadError { __typename } } } } }"
            )
        except (OSError, DagsterDevError):
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        return any(
            e["name"] == self.location
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def stop(self, grace: float = 20) -> None:
        """SIGINT to the whole process group; returns once every member has exited, SIGKILLing
        what is left after ``grace`` s."""
        if self.process is None:
            return
        if self.daemon is not None:  # first, so that it launches nothing more; both stop at once
            signal_group(self.daemon.pid, signal.SIGINT)
        stop_group(self.process, grace=grace)
        if self.daemon is not None:
            stop_group(self.daemon, grace=grace)
            self.daemon = None
        self._log.close()
        self.process = None

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise DagsterDevError(f"GraphQL HTTP {error.code}: {error.read()[:500]!r}") from error
        if payload.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def launch_backfill(self, assets: list[list[str]], first: str, last: str, title: str) -> str:
        """A partition backfill of ``assets`` for ``first``..``last``, as the UI launches it."""
        return self.launch_ranges([(path, first, last) for path in assets], title)

    def launch_ranges(self, ranges: list[tuple[list[str], str, str]], title: str) -> str:
        """One partition backfill of several assets, each over its own range of partition keys
        (assets of hourly, daily and monthly plans together), as the UI launches it."""
        data = self.graphql(
            """
            mutation Launch($params: LaunchBackfillParams!) {
              launchPartitionBackfill(backfillParams: $params) {
                __typename
                ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message }
                ... on InvalidStepError { invalidStepKey }
                ... on UnauthorizedError { message }
              }
            }
            """,
            {
                "params": {
                    "partitionsByAssets": [
                        {
                            "assetKey": {"path": path},
                            "partitions": {"range": {"start": first, "end": last}},
                        }
                        for path, first, last in ranges
                    ],
                    "title": title,
                }
            },
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise DagsterDevError(f"backfill not launched: {data}")
        self._submitted()
        return data["backfillId"]

    def backfill(self, backfill_id: str) -> BackfillState:
        data = self.graphql(_BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise DagsterDevError(f"backfill {backfill_id}: {data}")
        return BackfillState(data["id"], data["status"], data["runs"], **partition_counts(data))

    def wait_backfill(
        self,
        backfill_id: str,
        timeout: float | None = 900,
        progress: Callable[[BackfillState], None] | None = None,
        runs_only: bool = False,
    ) -> BackfillState:
        """Poll until the backfill and all its runs have finished (no deadline when ``timeout``
        is None); ``progress`` is called with every state polled, the finished one included.
        ``runs_only``: return as soon as every run has finished (``runs_finished``), without
        waiting for the daemon to mark the backfill completed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.backfill(backfill_id)
            if progress is not None:
                progress(state)
            if state.finished or (runs_only and state.runs_finished):
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise DagsterDevError(
                    f"backfill {backfill_id} still {state.status} after {timeout}s"
                )
            time.sleep(2)

    def cancel_backfill(self, backfill_id: str) -> None:
        data = self.graphql(
            """
            mutation Cancel($id: String!) {
              cancelPartitionBackfill(backfillId: $id) { __typename ... on PythonError { message } }
            }
            """,
            {"id": backfill_id},
        )["cancelPartitionBackfill"]
        if data["__typename"] != "CancelBackfillSuccess":
            raise DagsterDevError(f"backfill {backfill_id} not canceled: {data}")

    def retry_backfill(self, backfill_id: str, strategy: str = "FROM_FAILURE") -> str:
        """Re-execute a finished backfill (the UI's "Re-execute" → from failure)."""
        data = self.graphql(
            """
            mutation Retry($params: ReexecutionParams!) {
              reexecutePartitionBackfill(reexecutionParams: $params) {
                __typename
                ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message }
              }
            }
            """,
            {"params": {"parentRunId": backfill_id, "strategy": strategy}},
        )["reexecutePartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise DagsterDevError(f"backfill {backfill_id} not re-executed: {data}")
        self._submitted()
        return data["backfillId"]

    def launch_job(
        self, job_name: str, run_config: dict | None = None, assets: list[list[str]] | None = None
    ) -> str:
        """A run of ``job_name``; with ``assets``, of those assets only, as the UI's
        *Materialize selected* launches ``__ASSET_JOB``."""
        selector = {
            "repositoryLocationName": self.location,
            "repositoryName": REPOSITORY,
            "jobName": job_name,
        }
        if assets:
            selector["assetSelection"] = [{"path": path} for path in assets]
        data = self.graphql(
            """
            mutation Run($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { id } }
                ... on PythonError { message }
                ... on RunConfigValidationInvalid { errors { message } }
              }
            }
            """,
            {"params": {"selector": selector, "runConfigData": run_config or {}}},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise DagsterDevError(f"{job_name} not launched: {data}")
        self._submitted()
        return data["run"]["id"]

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            "query R($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )
        return data["runOrError"]["status"]

    def failure_reasons(self, run_id: str, most: int = 3) -> list[str]:
        """Why a run failed: the first messages of its step and run failure events."""
        data = self.graphql(
            """
            query R($id: ID!) {
              runOrError(runId: $id) {
                ... on Run {
                  eventConnection {
                    events {
                      __typename
                      ... on ExecutionStepFailureEvent { error { message } }
                      ... on RunFailureEvent { message }
                    }
                  }
                }
              }
            }
            """,
            {"id": run_id},
        )
        events = data["runOrError"].get("eventConnection", {}).get("events", [])
        reasons = [
            (event.get("error") or {}).get("message") or event.get("message") or ""
            for event in events
            if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")
        ]
        return [reason.strip() for reason in reasons if reason.strip()][:most]

    def wait_run(self, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.run_status(run_id)) not in FINISHED_RUN:
            if time.monotonic() > deadline:
                raise DagsterDevError(f"run {run_id} still {status} after {timeout}s")
            time.sleep(1)
        return status
