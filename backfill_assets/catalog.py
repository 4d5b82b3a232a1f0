"""Where plans are, and what must hold between them.

A plan is found through its component: every ``defs.yaml`` under a Dagster project's defs folder
whose ``type`` is ``backfill_assets.BackfillPlan`` names a plan file (``attributes.plan``,
relative to that folder). The code location, the command line and the tests all find plans this
way, so a team's plans live in the team's own project.

Plans are independent: each loads on its own, and a broken plan fails alone. What links them is
checked here, symmetrically (both sides are refused, whichever loads first): two plans may not
share a name or a physical table (DuckDB ignores case in names, so neither does this check), and
two plans that read the same source table must declare it the same way.
"""

import hashlib
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import duckdb
import yaml
from pydantic import ValidationError

from backfill_assets.plan import Plan, PlanError, PlanSpec, load_plan, read_plan_file
from backfill_assets.sources import warehouse_columns
from backfill_assets.warehouse import open_read_only

COMPONENT_TYPES = ("backfill_assets.BackfillPlan", "backfill_assets.component.BackfillPlan")
DEFAULT_PLAN_FILE = "plan.yaml"
SHIPPED_DEFS = Path(__file__).resolve().parent / "defs"


def plan_files(defs_root: Path) -> list[Path]:
    """The plan file of every BackfillPlan component under ``defs_root``, in path order."""
    found = []
    for defs_yaml in sorted(Path(defs_root).rglob("defs.yaml")):
        try:
            documents = list(yaml.safe_load_all(defs_yaml.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            continue  # Dagster reports an unreadable defs.yaml itself
        for doc in documents:
            if isinstance(doc, dict) and doc.get("type") in COMPONENT_TYPES:
                attributes = doc.get("attributes") or {}
                found.append(defs_yaml.parent / str(attributes.get("plan", DEFAULT_PLAN_FILE)))
    return found


def default_defs_root(start: Path | None = None) -> Path:
    """The defs folder the command line reads plans from.

    ``BACKFILL_DEFS`` when set; else the ``defs_module`` of the nearest ``pyproject.toml`` with a
    ``[tool.dg.project]`` section (the team's project, when run inside it); else the shipped
    example's.
    """
    configured = os.environ.get("BACKFILL_DEFS")
    if configured:
        return Path(configured)
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            project = tomllib.loads(pyproject.read_text())["tool"]["dg"]["project"]
        except (KeyError, tomllib.TOMLDecodeError):
            continue
        module = project.get("defs_module") or f"{project['root_module']}.defs"
        try:
            spec = find_spec(module)
        except ModuleNotFoundError:  # a project that is not installed: look beside its file
            spec = None
        if spec and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        for base in (candidate, candidate / "src"):
            folder = base.joinpath(*module.split("."))
            if folder.is_dir():
                return folder
    return SHIPPED_DEFS


def _spec_only(path: Path) -> PlanSpec | None:
    """A plan's fields without its SQL, or None when the file or its fields do not validate
    (its own load says why). Read as strictly as the plan's own load: a sibling whose file is
    malformed, or has a key written twice, is skipped rather than guessed at.

    Every plan of a defs folder reads every other plan's fields (``conflicts``,
    ``owned_sources``), so a file is parsed once for as long as its bytes stay the same."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
    return _parsed_spec(str(Path(path).resolve()), digest)


@lru_cache(maxsize=1024)
def _parsed_spec(path: str, digest: str) -> PlanSpec | None:
    """``_spec_only`` of one content of a file (``digest`` of its bytes is the cache key)."""
    try:
        return PlanSpec.model_validate(read_plan_file(Path(path)))
    except (PlanError, ValidationError):
        return None


def _tables(spec: PlanSpec, path: Path) -> dict[str, str]:
    """The physical tables of a plan's versions, by their name as DuckDB compares names."""
    plan = Plan(spec=spec, path=path)
    tables = [f"models.{plan.table_name(version)}" for version in plan.version_names]
    return {table.casefold(): table for table in tables}


def conflicts(path: Path, spec: PlanSpec, others: list[Path]) -> list[str]:
    """What ``spec`` (at ``path``) clashes with in the other plans: its name, its tables, its
    sources."""
    problems = []
    mine = {source.table: source for source in spec.sources}
    for other_path in others:
        if other_path.resolve() == path.resolve():
            continue
        other = _spec_only(other_path)
        if other is None:
            continue
        if other.name == spec.name:
            problems.append(
                f"field 'name': {spec.name!r} is also the name of {other_path}. "
                "Fix: give each plan its own name"
            )
        elif other.name.casefold() == spec.name.casefold():
            problems.append(
                f"field 'name': {spec.name!r} and {other.name!r} of {other_path} name the same "
                f"view analytics.{spec.name} and tables (DuckDB ignores case in names). "
                "Fix: give each plan its own name"
            )
        else:
            theirs = _tables(other, other_path)
            for key, table in _tables(spec, path).items():
                if key in theirs:
                    problems.append(
                        f"field 'versions': {table} is also the table {theirs[key]} of plan "
                        f"{other.name!r} ({other_path}); a version's table is "
                        "models.<plan>__<version> and DuckDB ignores case in names. Fix: rename "
                        "this plan or the version so that no two plans write one table"
                    )
        for source in other.sources:
            if source.table in mine and mine[source.table] != source:
                problems.append(
                    f"field 'sources': {source.table} is declared differently by {other_path} "
                    f"({source.model_dump(exclude_defaults=True)} vs "
                    f"{mine[source.table].model_dump(exclude_defaults=True)}). Fix: declare the "
                    "table the same way in every plan that reads it"
                )
    return problems


def owned_sources(plan: Plan, plans: list[Path]) -> list[str]:
    """The source tables whose asset this plan defines: those no plan before it in ``plans``
    (the defs folder's ``plan_files``, in path order) declares. Dagster wants one definition
    per asset key, and plans agree on a shared source's declaration anyway."""
    owned = []
    earlier = []
    for path in plans:
        if path.resolve() == plan.path.resolve():
            break
        spec = _spec_only(path)
        if spec is not None:
            earlier += [s.table for s in spec.sources]
    for source in plan.sources:
        if source.table not in earlier:
            owned.append(source.table)
    return owned


def warehouse_catalog(path: str, tables: list[str]) -> dict[str, dict[str, str]]:
    """Columns of ``tables`` as the warehouse file has them now; empty when it cannot tell
    (no file yet, or a writer holds it)."""
    if not Path(path).is_file():
        return {}
    try:
        with open_read_only(path) as conn:
            return {t: c for t in tables if (c := warehouse_columns(conn, t)) is not None}
    except duckdb.Error:
        return {}


def load_checked(path: Path, plans: list[Path], warehouse: str | None = None) -> Plan:
    """Load one plan and check it against the other plans of its defs folder (``plans``, its
    ``plan_files``).

    Sources declared without ``columns`` are bound against ``warehouse`` (a DuckDB file path)
    when it has them.
    """
    path = Path(path)
    spec = _spec_only(path)
    catalog = {}
    if spec is not None and warehouse:
        undeclared = [s.table for s in spec.sources if s.columns is None]
        catalog = warehouse_catalog(warehouse, undeclared) if undeclared else {}
    plan = load_plan(path, catalog)
    problems = conflicts(path, plan.spec, plans)
    if problems:
        raise PlanError(
            f"Plan {path} cannot be loaded ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return plan


@dataclass(frozen=True)
class Catalog:
    """The plans of one defs folder: those that load, and why the others do not."""

    plans: list[Plan]
    errors: dict[Path, PlanError]

    def named(self, name: str) -> Plan:
        for plan in self.plans:
            if plan.name == name:
                return plan
        for path, error in self.errors.items():
            spec = _spec_only(path)
            if name in (path.parent.name, spec.name if spec else None):
                raise error
        known = [p.name for p in self.plans]
        raise KeyError(f"no plan named {name!r}; the plans are {known}")


def load_catalog(defs_root: Path | None = None, warehouse: str | None = None) -> Catalog:
    """Every plan under ``defs_root`` (default: ``default_defs_root()``)."""
    root = defs_root or default_defs_root()
    files = plan_files(root)
    plans, errors = [], {}
    for path in files:
        try:
            plans.append(load_checked(path, files, warehouse))
        except PlanError as error:
            errors[path] = error
    return Catalog(sorted(plans, key=lambda p: p.name), errors)
