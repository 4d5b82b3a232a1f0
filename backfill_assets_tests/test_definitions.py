"""The code location loads from the plans, with the shapes teams rely on in the UI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from backfill_assets.component.resources import Warehouse, session
from backfill_assets.settings import PROJECT_DIR
from backfill_assets_tests.helpers import load_definitions, shipped_plans


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions()


MODELS = [
    ["models", "daily_revenue__legacy"],
    ["models", "daily_revenue__v2"],
    ["models", "fct_orders__legacy"],
    ["models", "fct_orders__v2"],
]


def test_all_four_model_assets_are_daily_partitioned_with_chunked_backfills(defs):
    graph = defs.resolve_asset_graph()
    for path in MODELS:
        node = graph.get(dg.AssetKey(path))
        partitions = node.partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition)
        assert partitions.start.date().isoformat() == "2024-01-01"
        assert partitions.timezone == "UTC"
        policy = node.backfill_policy
        assert policy.max_partitions_per_run == 31, path
        assert node.pools == {"duckdb"}, path


def test_model_code_versions_come_from_the_plans(defs):
    graph = defs.resolve_asset_graph()
    for plan in shipped_plans():
        for version in plan.spec.versions:
            node = graph.get(dg.AssetKey(["models", f"{plan.name}__{version.name}"]))
            assert node.code_version == version.code_version


def test_each_model_has_one_blocking_per_day_check(defs):
    graph = defs.resolve_asset_graph()
    for path in MODELS:
        keys = graph.get_check_keys_for_assets({dg.AssetKey(path)})
        assert {key.name for key in keys} == {"partition_checks_passed"}, path
        (key,) = keys
        assert graph.get(key).blocking
    # Known records describe the candidate only, and the check says which sub-checks it runs.
    v2 = graph.get(
        dg.AssetCheckKey(dg.AssetKey(["models", "daily_revenue__v2"]), "partition_checks_passed")
    )
    legacy_key = dg.AssetKey(["models", "daily_revenue__legacy"])
    legacy = graph.get(dg.AssetCheckKey(legacy_key, "partition_checks_passed"))
    assert "known_records_match" in v2.description
    assert "known_records_match" not in legacy.description


def test_published_assets_window_checks_and_cutover_jobs_exist(defs):
    graph = defs.resolve_asset_graph()
    for plan in shipped_plans():
        published = dg.AssetKey(["analytics", plan.name])
        assert graph.get(published).partitions_def is None
        checks = {k.name for k in graph.get_check_keys_for_assets({published})}
        assert {"window_is_complete", "reconciles_with_baseline"} <= checks
        for job in ("promote", "rollback", "window_checks"):
            assert defs.resolve_job_def(f"{job}_{plan.name}_job") is not None


def test_window_checks_are_not_run_by_model_backfills(defs):
    """A chunk run of a model must not re-evaluate whole-window checks."""
    graph = defs.resolve_asset_graph()
    for path in MODELS:
        names = {k.name for k in graph.get_check_keys_for_assets({dg.AssetKey(path)})}
        assert "window_is_complete" not in names


def test_dg_check_defs_passes(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_a_runs_warehouse_connection_is_capped_at_the_resources_memory_limit(warehouse_file):
    """Whole-window checks would otherwise let DuckDB take 80% of the machine's memory."""

    def limit(config: dict) -> str:
        with duckdb.connect(config=config) as conn:
            return conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]

    shipped = load_definitions().resources["warehouse"]
    with session(shipped) as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == limit(
            {"memory_limit": "1GB"}
        )
    assert limit({}) != limit({"memory_limit": "1GB"})  # DuckDB's own default is larger

    smaller = Warehouse(database=str(warehouse_file), memory_limit="300MB")
    with session(smaller) as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == limit(
            {"memory_limit": "300MB"}
        )


def test_every_window_check_says_what_it_proves_in_the_plans_words():
    from backfill_assets_tests.helpers import load_definitions, shipped_plans

    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    for plan in shipped_plans():
        key = dg.AssetKey(["analytics", plan.name])
        specs = [graph.get_check_spec(k) for k in graph.get_check_keys_for_assets([key])]
        assert specs
        for spec in specs:
            assert spec.description and spec.description != spec.name, spec.name
            assert "{word}" not in spec.description
        complete = next(s for s in specs if s.name == "window_is_complete")
        assert f"Every {plan.cadence.word} of the window" in complete.description
