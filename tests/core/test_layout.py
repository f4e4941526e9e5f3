"""The package's shape: no import cycles between modules, and the shared core depends on no other part."""

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "qiaoban"
CORE = ("qiaoban.config", "qiaoban.dialogue", "qiaoban.models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> qiaoban module it imports, anywhere in the file (inside functions too); a package's
    `__init__` only counts as imported when named itself."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qiaoban"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("qiaoban")]
            for target in targets:
                if target in modules and target != name:
                    graph.add_edge(name, target)
                    break
    return graph


def test_no_module_imports_itself_round_a_circle():
    graph = import_graph()
    # A package's __init__ re-exports its modules; a module importing from its own package's __init__ is a
    # circle too, and it is counted here.
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], f"{len(cycles)} import cycles, e.g. {' -> '.join(min(cycles, key=len))}"


@pytest.mark.parametrize("core", CORE)
def test_the_core_depends_on_no_other_part(core):
    graph = import_graph()
    reached = {m for m in nx.descendants(graph, core) if not m.startswith(CORE)} if core in graph else set()
    assert reached == set()
