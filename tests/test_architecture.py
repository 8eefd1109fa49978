"""The package's rooms import only rooms below them (../DESIGN.md, "Where the next step goes").

The graph is read from the source (every import statement, including those inside functions), so
a lazy import that runs the wrong way is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lesionbench"

#: Each room's level: a module may import its own room and rooms with a lower level only.
#: training and engines share a level and may not import each other (siblings).
LEVELS = {
    "errors": 0,
    "settings": 1, "io": 1, "imports": 1, "progress": 1,
    "config": 2, "bundled": 2,
    "data": 3, "models": 3,
    "runfolder": 4, "suitefolder": 4,
    "metrics": 5, "lifecycle": 5,
    "training": 6, "engines": 6,
    "inference": 7,
    "reporting": 8,
    "studies": 9,
    "cli_scale": 10, "api": 10,
    "cli": 11,
    "__init__": 12,
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_edges() -> dict[tuple[str, str], set[str]]:
    """(from room, to room) -> the module pairs that make the arrow."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        source = _room(module)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
            else:
                continue
            for target in targets:
                if target.startswith("lesionbench.") and _room(target) != source:
                    edges[(source, _room(target))].add(f"{module} -> {target}")
    return edges


@pytest.mark.timeout(60)
def test_every_room_has_a_level() -> None:
    rooms = {_room(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
             for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(LEVELS), f"rooms without a level in this test: {sorted(rooms - set(LEVELS))}"


@pytest.mark.timeout(60)
def test_no_room_imports_one_above_it_or_a_sibling() -> None:
    wrong = [f"{a} (level {LEVELS[a]}) -> {b} (level {LEVELS[b]}): {sorted(why)[0]}"
             for (a, b), why in sorted(import_edges().items()) if LEVELS[b] >= LEVELS[a]]
    assert not wrong, "imports that run up or sideways:\n" + "\n".join(wrong)


@pytest.mark.timeout(60)
def test_room_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in import_edges():
        graph[a].add(b)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for room in sorted(graph):
        if room not in state:
            visit(room, [])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_score_command_loads_neither_lightning_nor_timm() -> None:
    """`lesionbench score` reads masks and prints metrics: its modules need no training stack."""
    code = ("import sys, lesionbench.cli, lesionbench.reporting.score, lesionbench.metrics.challenge\n"
            "print(' '.join(m for m in ('lightning', 'timm', 'lesionbench.training') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=110)
    assert out.stdout.strip() == "", f"the score command imported: {out.stdout.strip()}"
