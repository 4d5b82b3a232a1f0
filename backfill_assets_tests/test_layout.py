"""The layout keeps its promises: the framework never names the example domain, plain modules
load without Dagster, and data flows one way (the build does not reach the publish step)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import backfill_assets

PACKAGE = Path(backfill_assets.__file__).resolve().parent
EXAMPLE = PACKAGE / "example"
DAGSTER_CODE = (PACKAGE / "component", PACKAGE / "defs", PACKAGE / "definitions.py")
EXAMPLE_WORDS = re.compile(r"orders|refunds|customers", re.IGNORECASE)


def framework_modules() -> list[Path]:
    """Every Python module of the package outside the example package."""
    return sorted(p for p in PACKAGE.rglob("*.py") if EXAMPLE not in p.parents)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_framework_modules_never_name_the_example_domain():
    modules = framework_modules()
    assert len(modules) > 20  # the walk found the package, not an empty folder
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(set(EXAMPLE_WORDS.findall(path.read_text())))
        for path in modules
        if EXAMPLE_WORDS.search(path.read_text())
    }
    assert offenders == {}


def test_the_example_package_does_name_its_domain():
    """Positive control for the grep above: the words are found where they belong."""
    assert EXAMPLE_WORDS.search((EXAMPLE / "generator.py").read_text())


def test_plain_modules_do_not_import_dagster():
    plain = [
        p
        for p in framework_modules()
        if not any(p == d or d in p.parents for d in DAGSTER_CODE) and p.name != "__init__.py"
    ]
    assert {p.name for p in plain} >= {"plan.py", "build.py", "evidence.py", "sources.py"}
    dagster_imports = {
        p.name: sorted(m for m in imported_modules(p) if m.split(".")[0].startswith("dagster"))
        for p in plain
    }
    assert {name: found for name, found in dagster_imports.items() if found} == {}


def test_importing_a_plain_module_loads_no_dagster():
    """The package's __init__ only names the component; importing a plan loads no Dagster."""
    code = (
        "import sys, backfill_assets.plan, backfill_assets.build, backfill_assets.catalog; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_build_does_not_import_the_publish_step():
    for name in ("build.py", "fingerprint.py", "partition_checks.py", "evidence.py"):
        assert "backfill_assets.publish" not in imported_modules(PACKAGE / name), name


def test_only_the_evidence_module_names_the_evidence_table():
    naming = {
        str(p.relative_to(PACKAGE))
        for p in framework_modules()
        if "partition_evidence" in p.read_text()
    }
    assert naming == {"evidence.py"}
