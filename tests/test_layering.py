"""The tree is the data flow, and the code keeps to it: no arrow from a lower stage to a
higher one, no package reaching into another's modules (only what its ``__all__``
exports), and the gateway never carries the simulator or the training code with it."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import edge_twin

PACKAGE = Path(edge_twin.__file__).parent
# Lower ranks are imported by higher ones, never the other way round.
RANK = {
    "errors": 0,
    "clock": 1,
    "domain": 1,
    "config": 2,
    "broker": 2,
    "notify": 2,
    "workers": 2,
    "store": 3,
    "ingest": 4,
    "estimate": 5,
    "assess": 6,
    "alert": 7,
    "sync": 8,
    "pipeline": 9,
    "api": 9,
    "export": 10,
    "gateway": 11,
    "doctor": 11,
    "backup": 11,
    "provisioning": 11,
    "pki": 2,
    "cli": 12,
}
# Packages whose modules are their own: others import only what ``__init__`` exports.
SEALED = {"ingest", "estimate", "assess", "alert", "sync", "api"}
NOT_IN_THE_GATEWAY = ("firmware_sim", "models", "validation", "bench", "edge_twin_demo", "tests")


def unit_of(path: Path) -> str:
    """The package (or top-level module) a source file belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(source: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, names) of every import in the source; ``from edge_twin
    import x`` becomes an import of ``edge_twin.x``, a relative import is resolved."""
    here = ["edge_twin", *path.relative_to(PACKAGE).parts[:-1]]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [a.name for a in node.names]
            if module == "edge_twin":  # units (the root's own names, e.g. __version__, free)
                out += [(node.lineno, f"edge_twin.{n}", []) for n in names if n in RANK]
            else:
                out.append((node.lineno, module, names))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
    return out


def violations(extra: dict[Path, str] | None = None) -> list[str]:
    """Every rule broken by the package's files (and by ``extra`` files, path -> source)."""
    found = []
    sources = {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}
    for path, source in {**sources, **(extra or {})}.items():
        unit = unit_of(path)
        if unit == "__init__":
            continue
        assert unit in RANK, f"{path}: a new top-level unit needs a rank in this test"
        for line, module, names in imports(source, path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            top = module.split(".")[0]
            if top in NOT_IN_THE_GATEWAY:
                found.append(f"{where}: the gateway imports {module}")
            if top != "edge_twin" or module == "edge_twin":
                continue
            parts = module.split(".")
            target = parts[1]
            if target == unit:
                continue
            if RANK[target] > RANK[unit]:
                found.append(f"{where}: {unit} (rank {RANK[unit]}) imports {module} above it")
            if target in SEALED:
                if len(parts) > 2:
                    found.append(f"{where}: {unit} reaches into {module}; import from the package")
                else:
                    public = set(importlib.import_module(module).__all__)
                    found += [
                        f"{where}: {module} does not export {n}" for n in names if n not in public
                    ]
    return found


def test_no_import_runs_against_the_data_flow_or_into_another_stage() -> None:
    assert violations() == []


def test_a_stage_exports_names_not_its_modules() -> None:
    # A module in __all__ would open all of it to the other stages.
    for unit in sorted(SEALED):
        package = importlib.import_module(f"edge_twin.{unit}")
        modules = [n for n in package.__all__ if isinstance(getattr(package, n), ModuleType)]
        assert modules == [], f"edge_twin.{unit} exports modules {modules}"


def test_the_check_catches_what_it_forbids() -> None:
    # The rule itself can fail: a stage importing a higher one's internals is found.
    probe = PACKAGE / "estimate" / "probe.py"
    found = violations(
        {
            probe: "from edge_twin.alert.engine import AlarmEngine\nimport firmware_sim\n"
            "from edge_twin.assess import features\nfrom edge_twin import pipeline\n"
            "from ..alert import AlarmEngine\n"
        }
    )
    assert any("imports edge_twin.pipeline above it" in v for v in found)
    assert any("imports edge_twin.alert above it" in v for v in found)
    assert any("imports edge_twin.alert.engine above it" in v for v in found)
    assert any("reaches into edge_twin.alert.engine" in v for v in found)
    assert any("the gateway imports firmware_sim" in v for v in found)
    assert any("edge_twin.assess does not export features" in v for v in found)


def test_the_gateway_loads_nothing_of_the_simulator_or_the_training_code() -> None:
    # Every module of the package imported, as `edge-twin run` and the CLI do.
    code = (
        "import pkgutil, importlib, sys, edge_twin\n"
        "for m in pkgutil.walk_packages(edge_twin.__path__, 'edge_twin.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {NOT_IN_THE_GATEWAY!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"
