"""The BackfillPlan component in a team's own project: plans load side by side with their own
partitions and sensors, and a broken plan fails alone."""

import datetime as dt
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from backfill_assets.catalog import SHIPPED_DEFS
from backfill_assets.component import PLAN_ERRORS
from backfill_assets.component.scaffold import SKELETON, plan_name
from backfill_assets.example.generator import generate

PYPROJECT = """
[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "{module}"
"""
DEFINITIONS = """
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


def team_project(root: Path, module: str) -> Path:
    """An empty Dagster project of a team: pyproject, package, definitions, defs folder."""
    (root / module / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT.format(module=module))
    (root / module / "__init__.py").write_text("")
    (root / module / "defs" / "__init__.py").write_text("")
    (root / module / "definitions.py").write_text(DEFINITIONS)
    return root / module / "defs"


def add_plan(defs: Path, folder: str, source: Path, **changes) -> Path:
    """A plan folder copied from ``source`` with top-level fields changed."""
    target = defs / folder
    shutil.copytree(source, target)
    plan_file = target / "plan.yaml"
    data = yaml.safe_load(plan_file.read_text())
    data.update(changes)
    plan_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return plan_file


def load_project(root: Path, module: str, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == module or m.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    return dg.load_from_defs_folder(path_within_project=root)


@pytest.fixture
def three_plans(tmp_path: Path, warehouse_file: Path) -> tuple[Path, str]:
    """Two good plans with different partition starts and a third, broken one."""
    root, module = tmp_path / "team", "team_models"
    defs = team_project(root, module)
    add_plan(defs, "revenue", SHIPPED_DEFS / "daily_revenue", name="revenue")
    add_plan(
        defs,
        "spring_orders",
        SHIPPED_DEFS / "fct_orders",
        name="spring_orders",
        partitions={"start": dt.date(2024, 3, 1)},
        window={"start": dt.date(2024, 3, 1), "end": dt.date(2024, 3, 31)},
    )
    add_plan(defs, "broken", SHIPPED_DEFS / "daily_revenue", name="broken", owner="   ")
    return root, module


def test_two_plans_with_different_starts_load_beside_a_broken_one(three_plans, monkeypatch):
    root, module = three_plans
    defs = load_project(root, module, monkeypatch)
    graph = defs.resolve_asset_graph()
    starts = {
        key.to_user_string(): graph.get(key).partitions_def.start.date()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }
    assert starts == {
        "models/revenue__legacy": dt.date(2024, 1, 1),
        "models/revenue__v2": dt.date(2024, 1, 1),
        "models/spring_orders__legacy": dt.date(2024, 3, 1),
        "models/spring_orders__v2": dt.date(2024, 3, 1),
    }
    sensors = {s.name for s in defs.sensors}
    assert {"late_data_revenue_sensor", "late_data_spring_orders_sensor"} <= sensors
    assert not any("broken" in name for name in sensors)
    # Every sensor's target resolves: no sensor spans plans with different partitions.
    for name in sensors:
        assert defs.resolve_sensor_def(name).job_name

    # The broken plan is one asset that states the error and fails when materialized.
    broken = graph.get(dg.AssetKey([PLAN_ERRORS, "broken"]))
    assert "field 'owner'" in broken.description and "is empty" in broken.description
    assert "Fix:" in broken.description
    result = dg.materialize(
        [defs.resolve_assets_def(dg.AssetKey([PLAN_ERRORS, "broken"]))], raise_on_error=False
    )
    assert not result.success
    # The shared raw.orders source is defined once, though both good plans read it.
    assert graph.get(dg.AssetKey(["raw", "orders"])).group_name == "raw"


def test_a_missing_source_table_stops_only_its_plan(three_plans, monkeypatch, conn, instance):
    """revenue reads orders and refunds; spring_orders also reads customers, which is missing."""
    root, module = three_plans
    generate(conn, dt.date(2024, 1, 1), dt.date(2024, 1, 10), orders_per_day=5, seed=3)
    conn.execute("DROP TABLE raw.customers")
    conn.close()
    defs = load_project(root, module, monkeypatch)
    results = {}
    for plan in ("revenue", "spring_orders"):
        context = dg.build_sensor_context(
            instance=instance, definitions=defs, resources=defs.resources
        )
        results[plan] = defs.resolve_sensor_def(f"late_data_{plan}_sensor")(context)
    assert isinstance(results["spring_orders"], dg.SkipReason)
    assert "raw.customers does not exist" in results["spring_orders"].skip_message
    # Nothing is built yet, so the healthy plan's sensor compares and finds nothing to repair.
    assert results["revenue"].skip_message.startswith("0 day(s) changed")


def test_the_skeleton_loads_as_it_is_scaffolded(tmp_path, warehouse_file, monkeypatch):
    """What `dg scaffold defs backfill_assets.BackfillPlan <name>` writes is a working plan."""
    root, module = tmp_path / "fresh", "fresh_project"
    defs_folder = team_project(root, module)
    target = defs_folder / "my-first-plan"
    from backfill_assets.component.scaffold import BackfillPlanScaffolder

    BackfillPlanScaffolder().scaffold(
        dg.ScaffoldRequest(
            type_name="backfill_assets.BackfillPlan",
            target_path=target,
            scaffold_format="yaml",
            project_root=root,
            params=None,
        )
    )
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == {
        "defs.yaml",
        "plan.yaml",
        *(f"sql/{p.name}" for p in (SKELETON / "sql").iterdir()),
    }
    defs = load_project(root, module, monkeypatch)
    name = plan_name(target)
    assert name == "my_first_plan"
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    versions = {f"models/{name}__legacy", f"models/{name}__v2"}
    assert versions | {f"analytics/{name}", "raw/events"} <= keys
    assert not any(k.startswith(PLAN_ERRORS) for k in keys)
