"""The quick start's demo, run twice in one folder as a newcomer would: the second run finds
everything current, rebuilds and publishes nothing, says so, and exits 0."""

import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from backfill_assets.settings import PROJECT_DIR, SHIPPED_DAGSTER_HOME

pytestmark = pytest.mark.e2e

COMMAND = str(PROJECT_DIR / ".venv" / "bin" / "backfill-assets")


def run_demo(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [COMMAND, "demo", "--orders-per-day", "50"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def test_the_demo_run_twice_rebuilds_and_publishes_nothing_the_second_time(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(SHIPPED_DAGSTER_HOME / "dagster.yaml", home / "dagster.yaml")
    warehouse = tmp_path / "warehouse" / "warehouse.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "BACKFILL_WAREHOUSE": str(warehouse)}

    first = run_demo(env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # Two daily plans x 2 versions x 731 days + the monthly plan's 2 versions x 24 months, in
    # as many runs as the daemon cuts them into (a chunk can be split at one of its looks).
    assert "runs for 2,972 partitions finished in" in first.stdout
    assert "every run succeeded" in first.stdout
    for plan in ("daily_revenue", "fct_orders", "monthly_active_customers"):
        assert f"promote_{plan}_job: success" in first.stdout
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        runs_before = conn.execute(
            "SELECT count(DISTINCT run_id) FROM backfill.partition_evidence"
        ).fetchone()[0]
        moves_before = conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0]
    assert moves_before == 3

    second = run_demo(env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "nothing to backfill: every partition of every plan is already built" in second.stdout
    for plan in ("daily_revenue", "fct_orders", "monthly_active_customers"):
        assert f"promote_{plan}_job: not needed, v2 is already published" in second.stdout
        assert f"window_checks_{plan}_job: success" in second.stdout
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        # No partition was rebuilt and nothing was promoted again.
        assert (
            conn.execute(
                "SELECT count(DISTINCT run_id) FROM backfill.partition_evidence"
            ).fetchone()[0]
            == runs_before
        )
        assert conn.execute("SELECT count(*) FROM backfill.promotions").fetchone()[0] == 3
