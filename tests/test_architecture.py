"""The package's shape: layers import downward only, the module graph has no cycle, and the one
explicit registry lists every recipe, provider and model.

Layers (docs/architecture.md): leaves (errors, config, plots, _version) < data < graphs, layers <
embeddings < models < registry < train < runs < experiments < cli. Every ``import`` is counted,
including those inside functions (a lazy import that points up a layer is still a dependency up).
``python -m pytest tests/test_architecture.py -q -s`` prints the package-level graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

import ctrgraph

SRC = Path(ctrgraph.__file__).resolve().parent
RANK = {"_version": 0, "errors": 0, "config": 0, "plots": 0, "data": 1, "graphs": 2, "layers": 2, "embeddings": 3,
        "models": 4, "registry": 5, "train": 6, "runs": 7, "experiments": 8, "serve": 8, "cli": 9, "__main__": 9, "__init__": 10}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the ctrgraph modules it imports (``from .x import y`` counts x and, if a module, x.y)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        pkg = mod if is_pkg else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("ctrgraph"):
                    continue
                subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files}
                # ``from .pkg import module``: the module (its package is already importing);
                # ``from .pkg import name``: the package's __init__ that defines or re-exports it
                deps |= subs if len(subs) == len(node.names) else subs | {target}
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("ctrgraph"))
        graph[mod] = {d for d in deps if d in files and d != mod}
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_points_up_a_layer():
    bad = []
    for mod, deps in _imports().items():
        for d in deps:
            if d == "ctrgraph" and mod.startswith("ctrgraph."):
                bad.append(f"{mod} imports the top package (import the module it needs)")
            elif RANK[_layer(d)] > RANK[_layer(mod)]:
                bad.append(f"{mod} ({_layer(mod)}) -> {d} ({_layer(d)})")
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_the_module_graph_has_no_cycle():
    graph = _imports()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:  # depth-first search; a grey node met again closes a cycle
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_print_the_package_graph():
    edges = sorted({(_layer(m), _layer(d)) for m, deps in _imports().items() for d in deps
                    if _layer(m) != _layer(d)}, key=lambda e: (RANK[e[0]], e[0], RANK[e[1]], e[1]))
    for a, b in edges:
        print(f"{a} -> {b}")
    assert edges


def test_importing_the_package_registers_everything():
    import importlib
    import pkgutil

    reg = ctrgraph.registry
    recipe_modules = {m.name for m in pkgutil.iter_modules(importlib.import_module("ctrgraph.data.recipes").__path__)}
    helpers = {"base", "_movielens", "_fieldwise", "_dgenn", "_din"}
    assert recipe_modules - helpers == {"custom", "ml100k", "ml100k_dgenn", "ml1m", "movielens",
                                        "synthetic", "synthetic_search", "search_log", "jdsearch", "taobao", "amazon_books",
                                        "retailrocket", "criteo", "avazu", "alimama", "tmall", "amazon_electronics",
                                        "ml20m"}
    assert set(reg.RECIPES) == {"movielens", "ml100k", "ml100k-dgenn", "ml1m", "taobao", "table", "log", "synthetic",
                                "synthetic_search", "search_log", "jdsearch", "amazon-books",
                                "retailrocket", "criteo", "avazu", "alimama", "tmall", "amazon-electronics", "ml20m"}
    assert set(reg.PROVIDERS) == {"plain", "res", "dg", "gcn", "kgat", "hgat", "skipgram", "node2vec", "eges", "sms"}
    # every model class defined in ctrgraph.models is listed (one explicit list, nothing registers itself)
    from ctrgraph.models.base import CTRModel

    defined = set()
    for m in pkgutil.iter_modules(importlib.import_module("ctrgraph.models").__path__):
        mod = importlib.import_module(f"ctrgraph.models.{m.name}")
        defined |= {c for c in vars(mod).values() if isinstance(c, type) and issubclass(c, CTRModel)
                    and c is not CTRModel and c.__module__ == mod.__name__
                    and "name" in vars(c)}  # a model declares its name; shared bases (InterestTowerModel) do not
    assert defined == set(reg.MODELS.values()) and len(reg.MODELS) == 33
    for name, cls in reg.MODELS.items():
        assert cls.name == name


def test_no_module_registers_as_a_side_effect():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for word in ("register_model", "register_provider", "register_recipe", "_import_all"):
            assert word not in text, f"{path.relative_to(SRC)} uses {word}"
