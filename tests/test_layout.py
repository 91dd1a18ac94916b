"""The layout of the ``train`` package: who imports whom.

``train.cli`` is the front end: it imports the trainer, the evaluation and both report builders (``train report``,
``train study``); nothing imports it back. The check reads every ``import`` of the package, at module level and
inside functions (a deferred import still ties two modules together), so a circle cannot hide in a function body.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "train"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of the package it imports, anywhere in its body.

    ``from train.x import name`` is an import of ``train.x.name`` when that is a module, else of ``train.x``. The
    package ``__init__`` that Python runs before a submodule is not counted: a package that imports its own
    submodules (``train.study``) is not a circle.
    """
    root = package.name
    modules = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package of this module, up level - 1
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            else:
                continue
            edges |= {t for t in targets if t.split(".")[0] == root and t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: one per strongly connected component of more than one module (Tarjan's),
    each as its modules in order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_train_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert {"train.cli", "train.report", "train.evaluate", "train.study.report"} <= set(graph)  # the graph is read
    assert "train.report" in graph["train.cli"] and "train.train" in graph["train.cli"]  # deferred imports count
    assert cycles(graph) == [], "\n".join(" <-> ".join(c) for c in cycles(graph))


def test_nothing_imports_the_front_end() -> None:
    graph = import_graph()
    assert [m for m, edges in graph.items() if "train.cli" in edges and m != "train.__main__"] == []


def test_the_cycle_check_sees_a_circle(tmp_path: Path) -> None:
    package = tmp_path / "train"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from train.sub import b\n")
    (package / "sub" / "__init__.py").write_text("from train.sub.b import g\n")
    (package / "sub" / "b.py").write_text("from train import a\n\ndef g():\n    pass\n")
    graph = import_graph(package)
    assert graph["train.a"] == {"train.sub.b"} and graph["train.sub.b"] == {"train.a"}
    assert cycles(graph) == [["train.a", "train.sub.b"]]


# ---- the contract between the stages: what ``train`` may import of ``augment``, and what the contract imports -------

ROOT = PACKAGE.parent
PROJECT = ("augment", "train", "bench")


def project_imports(folder: Path) -> dict[str, set[str]]:
    """Each module under ``folder`` -> the project modules or names it imports (``augment.x.name`` for ``from
    augment.x import name``), at module level and inside functions."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        name = module_name(path, ROOT / path.relative_to(ROOT).parts[0])
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets |= {f"{base}.{alias.name}" for alias in node.names}
        found[name] = {t for t in targets if t.split(".")[0] in PROJECT}
    return found


def outside(folder: Path, allowed: tuple[str, ...], of: tuple[str, ...] = PROJECT) -> list[str]:
    """``module -> import`` for each import under ``folder`` of a package in ``of`` that is not within ``allowed``."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in project_imports(folder).items()
        for target in targets
        if target.split(".")[0] in of and not any(target == a or target.startswith(f"{a}.") for a in allowed)
    )


def test_train_imports_of_augment_only_the_contract() -> None:
    assert "train.data -> augment.contract.schema" in {
        f"{m} -> {t}" for m, ts in project_imports(ROOT / "train").items() for t in ts
    }  # the imports are read
    assert outside(ROOT / "train", ("augment.contract",), of=("augment",)) == []


def test_the_contract_imports_nothing_else_of_the_project() -> None:
    imports = project_imports(ROOT / "augment" / "contract")
    assert "augment.contract.zoo.weights.read_weights" in imports["augment.contract.zoo.models"]  # the zoo is read
    assert outside(ROOT / "augment" / "contract", ("augment.contract",)) == []


def test_augment_does_not_import_train() -> None:
    assert outside(ROOT / "augment", ("augment",)) == []


# ---- augment: the options a leaf, one sample's pipeline apart from the runner that drives it ------------------------


def test_the_build_options_are_a_leaf() -> None:
    """``BuildConfig`` holds values only: every stage and the CLI can read it without pulling in the registries."""
    imports = project_imports(ROOT / "augment")
    assert "augment.options" in imports and "augment.config.BuildConfig" in imports["augment.options"]  # read
    assert imports["augment.config"] == set()


def test_only_the_front_ends_import_the_runner() -> None:
    """The stages and the per-sample pipeline know nothing of shards, workers or resuming; the CLI and ``verify``
    (which asks the plan which fields a split's records carry) drive the runner."""
    graph = import_graph(ROOT / "augment")
    assert "augment.runner.task" in graph and "augment.pipeline" in graph["augment.runner.task"]
    users = {
        m
        for m, edges in graph.items()
        if not m.startswith("augment.runner") and any(e.startswith("augment.runner") for e in edges)
    }
    assert users == {"augment.cli", "augment.verify"}
    assert [c for c in cycles(graph) if any(m.startswith(("augment.runner", "augment.pipeline")) for m in c)] == []


def test_the_augment_package_import_graph_has_no_cycle() -> None:
    """With ``train``'s (above) and augment never importing train, the whole project's graph has no circle: the
    contract's schema reads a manifest through ``contract.files``, not through the shard reader that imports it."""
    graph = import_graph(ROOT / "augment")
    assert "augment.contract.schema" in graph["augment.contract.shards"]
    assert cycles(graph) == [], "\n".join(" <-> ".join(c) for c in cycles(graph))
