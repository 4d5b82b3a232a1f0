"""``backfill-assets status``: where each plan and version stands, from the warehouse alone."""

import datetime as dt
from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import changed_days
from backfill_assets.plan import Plan
from backfill_assets.publish import PROMOTE, ROLLBACK, history, published_version


@dataclass(frozen=True)
class VersionStatus:
    plan: str
    version: str
    days_in_window: int
    days_built: int
    days_failing: int
    days_stale: int


def version_status(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[VersionStatus]:
    """Days built, failing and stale (sources or code changed since) per version, in the window."""
    evidence.ensure_evidence(conn)
    start, stop = plan.spec.window.start, plan.spec.window.end + dt.timedelta(days=1)
    stale_sources = {(c.version, c.day) for c in changed_days(conn, plan, start, stop)}
    out = []
    for version in plan.version_names:
        built, failing = evidence.counts(conn, plan, version, start, stop)
        stale_code = evidence.stale_code_days(conn, plan, version, start, stop)
        stale = {d for v, d in stale_sources if v == version} | {d for d, _ in stale_code}
        out.append(VersionStatus(plan.name, version, plan.window_days, built, failing, len(stale)))
    return out


def status_text(conn: duckdb.DuckDBPyConnection, plans: list[Plan]) -> str:
    lines = [
        f"{'plan':<15} {'version':<8} {'built':>11} {'failing':>8} {'stale':>6}  published",
    ]
    for plan in plans:
        published = published_version(conn, plan)
        for s in version_status(conn, plan):
            mark = "<- published" if s.version == published else ""
            lines.append(
                f"{s.plan:<15} {s.version:<8} {s.days_built:>5}/{s.days_in_window:<5} "
                f"{s.days_failing:>8} {s.days_stale:>6}  {mark}"
            )
        log = history(conn, plan)
        for action in (PROMOTE, ROLLBACK):
            last = next((e for e in reversed(log) if e.action == action), None)
            if last:
                lines.append(
                    f"  last {action}: {last.version} at {last.happened_at:%Y-%m-%d %H:%M:%S} "
                    f"by {last.actor}: {last.reason or '(no note)'}"
                )
            else:
                lines.append(f"  last {action}: none")
    return "\n".join(lines)
