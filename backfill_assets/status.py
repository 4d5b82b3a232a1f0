"""``backfill-assets status``: where each plan and version stands, from the warehouse alone."""

from dataclasses import dataclass

import duckdb

from backfill_assets import evidence
from backfill_assets.fingerprint import changed_partitions
from backfill_assets.plan import Plan
from backfill_assets.publish import PROMOTE, ROLLBACK, history, published_version


@dataclass(frozen=True)
class VersionStatus:
    """Partitions of the window: how many, built, failing their checks, stale."""

    plan: str
    version: str
    in_window: int
    built: int
    failing: int
    stale: int
    word: str  # hour, day, week, month


def version_status(conn: duckdb.DuckDBPyConnection, plan: Plan) -> list[VersionStatus]:
    """Partitions built, failing and stale (sources or code changed since) per version."""
    evidence.ensure_evidence(conn)
    start, stop = plan.window_start, plan.window_end
    stale_sources = {(c.version, c.partition) for c in changed_partitions(conn, plan, start, stop)}
    out = []
    for version in plan.version_names:
        built, failing = evidence.counts(conn, plan, version, start, stop)
        stale_code = evidence.stale_code(conn, plan, version, start, stop)
        stale = {p for v, p in stale_sources if v == version} | {p for p, _ in stale_code}
        out.append(
            VersionStatus(
                plan.name, version, plan.window_size, built, failing, len(stale), plan.cadence.word
            )
        )
    return out


def status_text(conn: duckdb.DuckDBPyConnection, plans: list[Plan]) -> str:
    lines = [
        f"{'plan':<25} {'version':<8} {'built':>11} {'failing':>8} {'stale':>6}  "
        "partitions  published",
    ]
    for plan in plans:
        published = published_version(conn, plan)
        for s in version_status(conn, plan):
            mark = "<- published" if s.version == published else ""
            lines.append(
                f"{s.plan:<25} {s.version:<8} {s.built:>5}/{s.in_window:<5} "
                f"{s.failing:>8} {s.stale:>6}  {s.word + 's':<10}  {mark}"
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
