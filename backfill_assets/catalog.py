"""The plans this code location serves, loaded once per process."""

from functools import cache

from backfill_assets.plan import Plan, load_plans
from backfill_assets.settings import PLANS_DIR


@cache
def shipped_plans() -> tuple[Plan, ...]:
    """Every plan under ``backfill_assets/plans``; raises ``PlanError`` if any is invalid."""
    return tuple(load_plans(PLANS_DIR))


def plan_named(name: str) -> Plan:
    """The shipped plan called ``name``, or a clear error listing the ones that exist."""
    for plan in shipped_plans():
        if plan.name == name:
            return plan
    known = [p.name for p in shipped_plans()]
    raise KeyError(f"no plan named {name!r}; the plans are {known}")
