"""Safe historical backfills with Dagster and DuckDB.

``backfill_assets.BackfillPlan`` is the Dagster component a team puts in its ``defs.yaml``. It is
imported on first use, so the plain modules (plans, builds, checks) load without Dagster.
"""

__all__ = ["BackfillPlan"]


def __getattr__(name: str):
    if name == "BackfillPlan":
        from backfill_assets.component import BackfillPlan

        return BackfillPlan
    raise AttributeError(f"module 'backfill_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
