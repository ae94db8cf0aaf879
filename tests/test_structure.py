"""The package's floors: imports between its parts form no cycle, and the heavy engines stay where they belong."""
import ast
from pathlib import Path
from typing import Dict, Set

import microdense

SRC = Path(microdense.__file__).parent
# NOTE: the floors, bottom up; a part may import only parts on its own floor or below.
FLOORS = [
    {"allocator", "errors", "fields", "io", "plots", "provenance"},
    {"layers"},
    {"models"},
    {"nas"},
    {"data"},
    {"saved"},
    {"bench", "deploy"},
    {"train"},
    {"study"},
    {"cli"},
]
PARTS = set().union(*FLOORS)


def _part(module: str) -> str:
    """microdense.models.size -> models; microdense.cli -> cli."""
    return module.split(".")[1]


def _imports() -> Dict[str, Set[str]]:
    """part -> the parts its modules import (at any depth of the module: lazy imports count too)."""
    graph: Dict[str, Set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if len(parts) < 2:
            continue  # the package root, which imports the families to register them
        here = parts[1]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("microdense.") and _part(name) in PARTS and _part(name) != here:
                    graph.setdefault(here, set()).add(_part(name))
    return graph


def test_every_part_is_on_a_floor():
    parts = {p.stem if p.suffix == ".py" else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))}
    assert parts == PARTS


def test_imports_only_go_down_the_floors():
    floor = {part: i for i, parts in enumerate(FLOORS) for part in parts}
    upward = sorted((a, b) for a, deps in _imports().items() for b in deps if floor[b] > floor[a])
    assert upward == [], f"imports that go up a floor (a cycle waiting to happen): {upward}"


def test_the_graph_has_no_cycle():
    graph = _imports()
    seen: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert seen.get(nxt) != 1, f"import cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in seen:
                visit(nxt, path + [node])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [])


def test_nas_imports_on_its_own_and_models_pull_in_no_engine():
    from conftest import modules_loaded_by
    code = ("import timm\n"
            "import microdense.nas\n"
            "timm.create_model('microdensenet_cifar_tiny'); timm.create_model('darts_v2_cifar')\n"
            "import microdense.deploy.export, microdense.deploy.predict\n")
    assert modules_loaded_by(code, ("lightning", "torchmetrics", "onnxruntime")) == []


def test_deploy_and_bench_import_nothing_of_the_trainer():
    """What serves or measures a trained model reads it through `microdense.saved`, below the trainer: neither part
    imports `microdense.train`, nor, through anything it imports, Lightning."""
    graph = _imports()
    assert [part for part in ("bench", "deploy") if "train" in graph.get(part, set())] == []
    from conftest import modules_loaded_by
    code = ("import microdense.deploy.export, microdense.deploy.hub, microdense.deploy.predict, "
            "microdense.deploy.release, microdense.bench.run, microdense.bench.worker\n")
    assert modules_loaded_by(code, ("lightning", "torchmetrics", "microdense.train")) == []


def test_data_pulls_in_no_training_engine():
    from conftest import modules_loaded_by
    code = "import microdense.data.pipeline, microdense.data.sources\n"
    assert modules_loaded_by(code, ("lightning", "torchmetrics")) == []


def test_the_package_never_imports_its_front_door():
    """`microdense_cli` (the torch-free front door) imports `microdense.cli`; nothing in the package imports it back."""
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert "microdense_cli" not in names, path
