"""The layers of `mesh/`: each imports only from the layers below it, and no module cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mesh"
# Bottom to top, as docs/architecture.md draws them.
LAYERS = ["contracts", "planning", "engine", "host", "git", "agents", "store", "cli", "mcp"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    """The mesh modules ``path`` imports when it is loaded (not in functions, not for types)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [alias.name for alias in node.names]
            yield from (
                f"{target}.{name}"
                if (PACKAGE.parent / f"{target}.{name}".replace(".", "/"))
                .with_suffix(".py")
                .exists()
                else target
                for name in names
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mesh"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("mesh"))


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): set(_imports(path)) for path in sorted(PACKAGE.rglob("*.py"))}


class TestLayers:
    def test_every_private_module_lives_in_a_layer(self) -> None:
        """Only the public modules sit at the top of the package; the rest is layered."""
        top = sorted(p.name for p in PACKAGE.glob("*.py"))
        assert top == [
            "__init__.py",
            "__main__.py",
            "_version.py",
            "answers.py",
            "batch.py",
            "commands.py",
            "typing.py",
        ]
        assert sorted(
            p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
        ) == sorted([*LAYERS, "testing"])

    @pytest.mark.parametrize("layer", LAYERS)
    def test_a_layer_imports_only_the_layers_below(self, layer: str) -> None:
        """No module reaches up: the engine never imports git, git never imports the store."""
        rank = LAYERS.index(layer)
        upward = {
            (module, target)
            for module, targets in _graph().items()
            if _layer(module) == layer
            for target in targets
            if (other := _layer(target)) is not None and LAYERS.index(other) > rank
        }
        assert upward == set()

    def test_no_import_cycles(self) -> None:
        """Module-level imports form no cycle, so any module can be imported first."""
        graph = _graph()
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        cycles: list[list[str]] = []

        def visit(module: str, path: list[str]) -> None:
            state[module] = 1
            for target in sorted(graph.get(module, ())):
                if target not in graph:
                    continue
                if state.get(target) == 1:
                    cycles.append([*path[path.index(target) :], target])
                elif target not in state:
                    visit(target, [*path, target])
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module, [module])
        assert cycles == []

    def test_the_graph_is_read(self) -> None:
        """The checks above look at real edges (the scheduler imports the pipeline)."""
        graph = _graph()
        assert "mesh.engine._pipeline" in graph["mesh.engine._scheduler"]
        assert "mesh.contracts._records" in graph["mesh.engine._pipeline"]
