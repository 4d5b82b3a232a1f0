"""``dg scaffold defs backfill_assets.BackfillPlan <name>``: a working plan to start from.

Writes ``defs.yaml``, a ``plan.yaml`` with every field explained and SQL stubs for two versions
and one explained difference, all reading one declared source table (``raw.events``). The
skeleton validates as it is (``dg check defs``); a team replaces the example values with its
model's.
"""

import re
from pathlib import Path

import dagster as dg

SKELETON = Path(__file__).resolve().parent / "skeleton"


def plan_name(folder: Path) -> str:
    """The folder's name as a plain SQL name (``my-model`` -> ``my_model``)."""
    name = re.sub(r"\W", "_", folder.name)
    return name if re.match(r"[A-Za-z_]", name) else f"plan_{name}"


class BackfillPlanScaffolder(dg.Scaffolder):
    """Writes the skeleton plan into the new component folder."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        target = Path(request.target_path)
        name = plan_name(target)
        for source in sorted(SKELETON.rglob("*")):
            if source.is_file():
                destination = target / source.relative_to(SKELETON)
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_text(source.read_text().replace("__NAME__", name))
        (target / "defs.yaml").write_text(
            f"type: {request.type_name}\nattributes:\n  plan: plan.yaml\n"
        )
