"""``backfill-assets ui`` fails fast on a taken port and stops everything it started on SIGTERM
or SIGINT; process groups stop whole; progress lines read right; the demo's lines fit.

The command tests run the real command and a real ``dagster dev``: every process they start
carries the test's own ``DAGSTER_HOME`` in its environment, which is how they are found again.
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from backfill_assets.example.dagster_dev import BackfillState, partition_counts
from backfill_assets.example.demo import WIDTH, wrap
from backfill_assets.processes import (
    group_members,
    listen_error,
    port_problem,
    start_group,
    stop_group,
)
from backfill_assets.progress import ProgressLine, duration, eta_seconds, progress_text
from backfill_assets.settings import PROJECT_DIR, SHIPPED_DAGSTER_HOME

COMMAND = str(PROJECT_DIR / ".venv" / "bin" / "backfill-assets")


# --- progress text -----------------------------------------------------------------------------


def test_duration_is_short_and_exact():
    assert duration(0) == "0s"
    assert duration(59.4) == "59s"
    assert duration(60) == "1m00s"
    assert duration(185) == "3m05s"
    assert duration(3600 + 2 * 60 + 59) == "1h02m"
    assert duration(-3) == "0s"


def test_eta_is_the_rest_at_the_rate_so_far():
    assert eta_seconds(0.25, 60) == 180  # a quarter in a minute: three more minutes
    assert eta_seconds(1.0, 60) == 0
    assert eta_seconds(0.0, 60) is None  # no rate yet


def test_progress_text_counts_elapsed_and_eta():
    # 1,000 of 4,000 partitions in 100 s: 3,000 more at 10 a second is 300 s.
    assert progress_text(1000, 4000, 100, runs_done=8, runs_total=32) == (
        "1,000/4,000 partitions (25%), 8/32 runs, 1m40s elapsed, ETA 5m00s"
    )


def test_progress_text_before_anything_is_done():
    assert progress_text(0, 2972, 12, runs_done=0, runs_total=0, more_runs=True) == (
        "0/2,972 partitions (0%), 0/? runs, 12s elapsed, ETA unknown"
    )


def test_progress_text_marks_a_run_count_that_will_grow_and_ignores_it_for_the_eta():
    # 5 of 6 runs launched so far are done, but only 10% of the partitions: the ETA follows
    # the partitions (900 s for the other 90%), not the runs.
    assert progress_text(100, 1000, 100, runs_done=5, runs_total=6, more_runs=True) == (
        "100/1,000 partitions (10%), 5/6+ runs, 1m40s elapsed, ETA 15m00s"
    )


def test_progress_text_eta_follows_the_runs_when_they_are_further_along():
    # Dagster counts partitions once per daemon iteration: 10% counted, but 16 of 32 runs done
    # (every run launched) means half way, so 100 s more.
    assert progress_text(100, 1000, 100, runs_done=16, runs_total=32) == (
        "100/1,000 partitions (10%), 16/32 runs, 1m40s elapsed, ETA 1m40s"
    )


def test_progress_text_rounds_down_and_names_failures():
    assert progress_text(29, 100, 10) == "29/100 partitions (29%), 10s elapsed, ETA 24s"
    assert progress_text(999, 1000, 10).startswith("999/1,000 partitions (99%)")
    assert progress_text(40, 40, 75, failed=3, unit="days") == (
        "40/40 days (100%), 3 failed, 1m15s elapsed, done"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_off_a_terminal_prints_at_most_every_interval_and_the_end():
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, interval=10, tty=False, clock=clock)
    for second in range(0, 25, 2):
        clock.now = second
        line.update(f"at {second}s")
    line.finish("done")
    assert out.getvalue() == "at 0s\nat 10s\nat 20s\ndone\n"


def test_progress_line_on_a_terminal_rewrites_one_line():
    out = io.StringIO()
    line = ProgressLine(out, tty=True)
    line.update("1/3")
    line.update("2/3")
    line.finish("3/3 done")
    assert out.getvalue() == "\r1/3\x1b[K\r2/3\x1b[K\r\x1b[K3/3 done\n"
    assert out.getvalue().count("\n") == 1


def testpartition_counts_sum_dagsters_per_asset_counts():
    """The shape ``partitionBackfillOrError`` returns for an asset backfill (Dagster 1.13)."""

    def counts(targeted: int, in_progress: int, materialized: int, failed: int) -> dict:
        return {
            "__typename": "AssetPartitionsStatusCounts",
            "numPartitionsTargeted": targeted,
            "numPartitionsInProgress": in_progress,
            "numPartitionsMaterialized": materialized,
            "numPartitionsFailed": failed,
        }

    data = {
        "numPartitions": None,  # assets of different cadences: Dagster gives no single number
        "partitionStatusCounts": [],
        "assetBackfillData": {
            "assetBackfillStatuses": [counts(731, 31, 62, 0), counts(24, 0, 3, 3)]
        },
    }
    assert partition_counts(data) == {
        "targeted": 755,
        "materialized": 65,
        "failed": 3,
        "requested": 99,
    }
    job_backfill = {
        "numPartitions": 10,
        "assetBackfillData": None,
        "partitionStatusCounts": [
            {"runStatus": "SUCCESS", "count": 6},
            {"runStatus": "FAILURE", "count": 1},
            {"runStatus": "STARTED", "count": 1},
            {"runStatus": "NOT_STARTED", "count": 2},
        ],
    }
    assert partition_counts(job_backfill) == {
        "targeted": 10,
        "materialized": 6,
        "failed": 1,
        "requested": 8,
    }


def test_the_demo_moves_on_once_every_partition_has_a_finished_run():
    """The demo does not wait for the daemon's next look to mark the backfill completed, but
    it never moves on while the daemon has partitions without a run or a run is not over."""

    def state(requested: int, *statuses: str, status: str = "REQUESTED") -> BackfillState:
        runs = [{"id": str(i), "status": s} for i, s in enumerate(statuses)]
        return BackfillState("b", status, runs, targeted=62, requested=requested)

    assert state(62, "SUCCESS", "SUCCESS").runs_finished
    assert state(62, "SUCCESS", "FAILURE").runs_finished  # over; the demo reports the failure
    assert not state(62, "SUCCESS", "STARTED").runs_finished
    assert not state(62, "SUCCESS", "QUEUED").runs_finished
    assert not state(31, "SUCCESS").runs_finished  # the daemon has runs still to launch
    assert not state(0).runs_finished  # nothing launched yet
    assert not BackfillState("b", "REQUESTED", [], targeted=0, requested=0).runs_finished
    # Completed by the daemon: finished whichever way it is asked.
    done = state(62, "SUCCESS", "SUCCESS", status="COMPLETED_SUCCESS")
    assert done.finished and done.runs_finished


# --- the demo's lines ----------------------------------------------------------------------------


def test_demo_lines_wrap_at_words_within_the_width():
    summary = (
        "2 partitions have refunds of orders that do not exist; first 2024-03-01 "
        "(order 12,345), 2024-07-09 (order 67,890), residuals within ±0.01 of the baseline"
    )
    head = f"    {'referential_integrity_refunds':<32} {'warning':<7} "
    text = wrap(head + summary, hang=" " * (len(head) - 4))
    lines = text.split("\n")
    assert len(lines) > 1 and all(len(line) <= WIDTH for line in lines)
    assert " ".join(line.strip() for line in lines).endswith(summary)  # nothing cut
    assert all(line.startswith(" " * len(head)) for line in lines[1:])  # a column


def test_demo_wrap_keeps_bullets_hanging_and_tables_readable_and_long_paths_whole():
    path = "/tmp/" + "x" * 120 + "/cutover.md"
    markdown = (
        "- **Known differences:** " + "every difference is explained by a named rule " * 4 + "\n"
        "| check | result | detail |\n|---|---|---|\n| window_is_complete | passed | 731 days |\n"
        f"report: {path}"
    )
    lines = wrap(markdown, "    ").split("\n")
    assert lines[0].startswith("    - **Known")
    assert lines[1].startswith("      ") and lines[1][6] != " "  # under the bullet's text
    assert all(len(line) <= WIDTH for line in lines[:-1])
    assert "    check | result | detail" in lines
    assert "    window_is_complete | passed | 731 days" in lines
    assert not any("---" in line for line in lines)
    assert lines[-1].strip() == path  # a path is never broken, even past the width


# --- process groups and ports ------------------------------------------------------------------


def test_a_listening_port_is_reported_in_use_and_a_free_one_is_not():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_problem("127.0.0.1", port) == f"port {port} on 127.0.0.1 is already in use"
    assert listen_error("127.0.0.1", port) is None


CHILDREN = """
import subprocess, sys, time
for _ in range(2):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("started", flush=True)
time.sleep(300)
"""


def test_stopping_a_group_stops_its_children_too():
    process = start_group([sys.executable, "-c", CHILDREN], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"started\n"
    assert len(group_members(process.pid)) == 3
    code = stop_group(process, grace=10)
    assert code == -signal.SIGINT
    assert group_members(process.pid) == []


def test_a_group_that_ignores_sigint_is_killed_after_the_grace_period():
    ignoring = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); " + (
        "print('ready', flush=True); time.sleep(300)"
    )
    process = start_group([sys.executable, "-c", ignoring], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert stop_group(process, grace=1) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert group_members(process.pid) == []


# --- backfill-assets ui, for real ----------------------------------------------------------------


def processes_of(home: Path) -> list[int]:
    """Live processes whose environment holds this test's DAGSTER_HOME: the command and
    everything it started (dagster dev, webserver, daemon, code servers, runs)."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] != "Z" and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_until_gone(home: Path, seconds: float = 10) -> list[int]:
    """What is left of the test's processes after up to ``seconds`` (the reaper is not ours)."""
    deadline = time.monotonic() + seconds
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture
def ui_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(SHIPPED_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "BACKFILL_WAREHOUSE": str(tmp_path / "warehouse" / "warehouse.duckdb"),
    }


def start_ui(env: dict[str, str], port: int, logs: Path) -> subprocess.Popen:
    """The command as a user starts it, in its own session, SIGINT not ignored (as a terminal
    starts it, even when the tests themselves run in the background). Its output goes to
    files: a pipe nobody reads would fill and stall it."""
    return start_group(
        [COMMAND, "ui", "--port", str(port)],
        env=env,
        stdout=(logs / "ui.out").open("wb"),
        stderr=(logs / "ui.err").open("wb"),
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def held_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_ui_on_a_port_in_use_fails_at_once_naming_the_port_and_starts_nothing(
    ui_env: dict[str, str], held_port: int
):
    started = time.monotonic()
    result = subprocess.run(
        [COMMAND, "ui", "--port", str(held_port)],
        env=ui_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert f"port {held_port} on 127.0.0.1 is already in use; nothing was started" in (
        result.stderr
    )
    assert "--port N" in result.stderr and "stop the process" in result.stderr
    assert processes_of(Path(ui_env["DAGSTER_HOME"])) == []
    # Nothing ran: no Dagster instance was even created in the home.
    assert sorted(p.name for p in Path(ui_env["DAGSTER_HOME"]).iterdir()) == ["dagster.yaml"]


@pytest.mark.e2e
def test_ui_stops_dagster_dev_when_the_port_is_taken_while_it_starts(
    ui_env: dict[str, str], tmp_path: Path
):
    """The port is free when checked and taken before the webserver binds it: the webserver
    logs Errno 98 and runs on, so the command must notice and stop the whole group."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = Path(ui_env["DAGSTER_HOME"])
    process = start_ui(ui_env, port, tmp_path)
    try:
        deadline = time.monotonic() + 60
        # Printed after the port check, before dagster dev starts.
        while b"the UI will be at" not in (tmp_path / "ui.out").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        with socket.socket() as held:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind(("127.0.0.1", port))
            held.listen()
            started = time.monotonic()
            process.wait(timeout=120)
            waited = time.monotonic() - started
        out, err = (tmp_path / "ui.out").read_text(), (tmp_path / "ui.err").read_text()
        assert process.returncode == 1, err[-2000:]
        assert "error while attempting to bind" in out  # the webserver's own line, passed on
        assert f"port {port} on 127.0.0.1 is already in use; dagster dev was stopped" in err
        assert waited < 60
        assert wait_until_gone(home) == []
    finally:
        stop_group(process, grace=5)


def server_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_ui_with_its_webserver_daemon_and_code_server(
    ui_env: dict[str, str], tmp_path: Path, signum: int
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = Path(ui_env["DAGSTER_HOME"])
    process = start_ui(ui_env, port, tmp_path)
    try:
        deadline = time.monotonic() + 180
        while not server_answers(port):
            assert process.poll() is None, (tmp_path / "ui.err").read_text()[-2000:]
            assert time.monotonic() < deadline, "the webserver did not answer in 180 s"
            time.sleep(1)
        running = processes_of(home)
        # The command, dagster dev, its webserver, daemon and code server (and its gRPC server).
        assert len(running) >= 5, running

        process.send_signal(signum)
        started = time.monotonic()
        process.wait(timeout=60)
        assert time.monotonic() - started < 30
        assert process.returncode == 128 + signum
        err = (tmp_path / "ui.err").read_text()
        assert f"{signal.Signals(signum).name}: stopped dagster dev" in err
        assert wait_until_gone(home) == []
        assert listen_error("127.0.0.1", port) is None  # the port is free again
    finally:
        stop_group(process, grace=5)
