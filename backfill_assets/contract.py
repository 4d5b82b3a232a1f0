"""The schema contract: the columns (and their types) the published view promises its readers.

Readers of ``analytics.<plan>`` select its columns by name and rely on their types. A version
whose table drops a column the published version's table has, or returns it with another type,
breaks them. The ``schema_contract_kept`` window check therefore blocks its promotion unless
the plan declares the change under ``breaking_changes`` (``column``, ``removed`` | ``retyped``,
``reason``); a declared change passes and the cutover summary announces it
(``announcement_lines``). Added columns break nobody: they are listed as additions.
"""

from dataclasses import dataclass, field

import duckdb

from backfill_assets.plan import Plan

SCHEMA_CONTRACT_KEPT = "schema_contract_kept"
REMOVED, RETYPED = "removed", "retyped"


def table_columns(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> dict[str, str]:
    """A table's columns and their DuckDB types, in table order ({} when it does not exist)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return dict(rows)


@dataclass(frozen=True)
class Contract:
    """How ``version``'s columns differ from ``published``'s, and which changes are declared."""

    version: str
    published: str
    added: dict[str, str] = field(default_factory=dict)  # column -> type
    removed: dict[str, str] = field(default_factory=dict)  # column -> type it had
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (was, is)
    reasons: dict[str, str] = field(default_factory=dict)  # "<column> <change>" -> reason

    def reason(self, column: str, change: str) -> str | None:
        return self.reasons.get(f"{column.casefold()} {change}")

    @property
    def undeclared(self) -> list[str]:
        """Each breaking change the plan does not declare, as ``<column> removed`` text."""
        return [
            text for column, change, text in self.changes() if self.reason(column, change) is None
        ]

    @property
    def kept(self) -> bool:
        return not self.undeclared

    def changes(self) -> list[tuple[str, str, str]]:
        """Every breaking change, declared or not: (column, removed | retyped, text)."""
        removed = [(c, REMOVED, f"{c} removed (was {t})") for c, t in self.removed.items()]
        retyped = [(c, RETYPED, f"{c} retyped {a} -> {b}") for c, (a, b) in self.retyped.items()]
        return removed + retyped

    def figures(self) -> dict:
        """JSON-plain figures: what the check's metadata and the promotion's log row keep, and
        what ``announcement_lines`` renders."""
        return {
            "compared_with": self.published,
            "added": dict(self.added),
            "removed": {
                c: {"type": t, "reason": self.reason(c, REMOVED)} for c, t in self.removed.items()
            },
            "retyped": {
                c: {"from": a, "to": b, "reason": self.reason(c, RETYPED)}
                for c, (a, b) in self.retyped.items()
            },
            "undeclared": self.undeclared,
        }


def compare(
    plan: Plan,
    version: str,
    columns: dict[str, str],
    published: str,
    published_columns: dict[str, str],
) -> Contract:
    """The contract of ``version`` (its table's ``columns``) against the published version's
    table; column names are compared ignoring case, as DuckDB does."""
    mine = {c.casefold(): (c, t) for c, t in columns.items()}
    theirs = {c.casefold(): (c, t) for c, t in published_columns.items()}
    return Contract(
        version=version,
        published=published,
        added={c: t for key, (c, t) in mine.items() if key not in theirs},
        removed={c: t for key, (c, t) in theirs.items() if key not in mine},
        retyped={
            c: (t, mine[key][1])
            for key, (c, t) in theirs.items()
            if key in mine and mine[key][1] != t
        },
        reasons={f"{b.column.casefold()} {b.change}": b.reason for b in plan.spec.breaking_changes},
    )


def summary(contract: Contract) -> str:
    """The check's one line."""
    declared = [
        text for column, change, text in contract.changes() if contract.reason(column, change)
    ]
    added = [f"{c} {t}" for c, t in contract.added.items()]
    parts = []
    if contract.undeclared:
        parts.append(
            f"undeclared breaking change(s) against {contract.published}: "
            f"{'; '.join(contract.undeclared)}. Fix: keep the column(s) in {contract.version}'s "
            "SQL, or declare each under breaking_changes with a reason"
        )
    elif not declared:
        parts.append(f"keeps every column of {contract.published} with its type")
    if declared:
        parts.append(f"declared breaking change(s): {'; '.join(declared)}")
    if added:
        parts.append(f"adds {', '.join(added)}")
    return "; ".join(parts)


def announcement_lines(evidence: dict) -> list[str]:
    """Markdown for the cutover summary: a "Column changes" section naming each declared
    breaking change with its reason, and the added columns; [] when the columns did not change
    (or the promotion's log row predates the check). No blank line at either end.

    ``evidence``: a promotion's log row evidence (``LogEntry.evidence``), so the text is the
    same at promotion time and when the summary is written again from the log.
    """
    check = evidence.get("checks", {}).get(SCHEMA_CONTRACT_KEPT, {})
    figures = check.get("figures") or {}
    removed, retyped = figures.get("removed", {}), figures.get("retyped", {})
    added = figures.get("added", {})
    if not (removed or retyped or added):
        return []
    lines = ["## Column changes"]
    if removed or retyped:
        lines += [
            "",
            "Breaking changes for readers of the view, declared in the plan (compared with "
            f"`{figures.get('compared_with')}`, published before):",
            "",
        ]
        for column, change in removed.items():
            lines.append(
                f"- `{column}` **removed** (was {change['type']}). Why: "
                f"{change.get('reason') or 'not declared'}"
            )
        for column, change in retyped.items():
            lines.append(
                f"- `{column}` **retyped** {change['from']} -> {change['to']}. Why: "
                f"{change.get('reason') or 'not declared'}"
            )
    if added:
        listed = ", ".join(f"`{c}` ({t})" for c, t in added.items())
        lines += ["", f"Added columns (nothing breaks): {listed}."]
    return lines
