"""The layer contract of STYLE.md, read off the source: no import cycles, and every import
(top-level or inside a function: a lazy import is still an arrow) points down the layers.

The graph comes from ``ast``, not from importing: ``import a.b``, ``from a import b`` (to
``a.b`` when ``b`` is a submodule, else to ``a``) and relative imports, at any depth;
imports under ``if TYPE_CHECKING:`` are skipped (they never run). A failure lists every
offending arrow as ``file:line importer -> imported``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "moco"

# bottom (0) to top (8); a module may import from its own component and from any
# component of a strictly lower layer, and within a layer only along ALLOWED_SAME_LAYER
LAYERS: tuple[tuple[str, ...], ...] = (
    ("moco.version", "moco.errors", "moco.config", "moco.dist", "moco.device", "moco.openmp"),
    ("moco.layers", "moco.augment"),
    ("moco.data", "moco.encoders"),
    ("moco.core",),
    ("moco.engine", "moco.eval", "moco.export"),  # none of the three imports another
    ("moco.runs",),
    ("moco.report",),
    ("moco.experiments",),
    ("moco.cli", "moco.__main__", "moco"),  # the top; "moco" is the package face only
)
ALLOWED_SAME_LAYER = {
    ("moco.device", "moco.dist"),
    ("moco.device", "moco.errors"),
    ("moco.config", "moco.errors"),
}
TOP = set(LAYERS[-1])  # the commands and the face may import anything (the face lazily)
LAYER_OF = {component: i for i, layer in enumerate(LAYERS) for component in layer}


@dataclass(frozen=True)
class Arrow:
    importer: str
    imported: str
    file: Path
    line: int

    def __str__(self) -> str:
        where = self.file.relative_to(SRC.parent)
        return f"{where}:{self.line} {self.importer} -> {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of src/moco by its dotted name (a package by its __init__.py)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere under ``node``, but not those that only run for a type
    checker (the body of ``if TYPE_CHECKING:``; its ``else`` does run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _import_nodes(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _deepest_module(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of ours (``moco.x.f`` -> ``moco.x``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return None


def arrows() -> list[Arrow]:
    """Every import of one of our modules by another, with file and line."""
    known = modules()
    found: list[Arrow] = []
    for importer, path in known.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _import_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: from the importer's package upwards
                    package = importer.split(".")
                    if not is_package:
                        package = package[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join(package + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from a import b`: the submodule a.b when there is one, else a itself
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
                ]
            for target in targets:
                imported = _deepest_module(target, known)
                if imported is not None and imported != importer:
                    found.append(Arrow(importer, imported, path, node.lineno))
    return found


def component(module: str) -> str:
    """The entry of LAYERS that ``module`` belongs to; the face ``moco`` is only itself."""
    if module == "moco":
        return "moco"
    best = max((c for c in LAYER_OF if c != "moco" and (module + ".").startswith(c + ".")),
               key=len, default=None)  # fmt: skip
    assert best is not None, f"{module} is in no layer: add its package to LAYERS"
    return best


def allowed(arrow: Arrow) -> bool:
    a, b = component(arrow.importer), component(arrow.imported)
    if a == b or a in TOP:
        return True
    if LAYER_OF[a] == LAYER_OF[b]:
        return (a, b) in ALLOWED_SAME_LAYER
    return LAYER_OF[b] < LAYER_OF[a]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= the number of modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking_ones():
    """The reader itself: a known top-level arrow, a known lazy one, none from
    TYPE_CHECKING blocks; so a passing contract is not an empty graph."""
    found = {(a.importer, a.imported) for a in arrows()}
    assert any(a == "moco.__main__" and b.startswith("moco.cli") for a, b in found)
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import moco.engine\nelse:\n    import moco.dist\n"
        "def f():\n    from moco import config\n"
    )
    names = [
        alias.name if isinstance(n, ast.Import) else f"{n.module}.{alias.name}"
        for n in _import_nodes(tree)
        for alias in n.names
    ]
    assert names == ["typing.TYPE_CHECKING", "moco.dist", "moco.config"]
    assert _deepest_module("moco.core.moco.MoCo", modules()) == "moco.core.moco"
    # and the judge: cycles and arrows of a made-up graph
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    f = PACKAGE / "x.py"
    verdicts = {
        (a, b): allowed(Arrow(a, b, f, 1))
        for a, b in [
            ("moco.engine.train", "moco.core.moco"),  # down
            ("moco.engine.train", "moco.eval.monitor"),  # same layer
            ("moco.core.moco", "moco.config.schema"),  # down to a leaf
            ("moco.device", "moco.dist"),  # a listed leaf arrow
            ("moco.dist", "moco.device"),  # not listed
            ("moco.data.sources", "moco.data.idx"),  # own package
            ("moco.core.moco", "moco"),  # the face is the top
            ("moco", "moco.engine.train"),  # the face may import anything
            ("moco.cli.main", "moco.experiments.ablate"),
            ("moco.report.page", "moco.experiments.ablate"),  # up
        ]
    }
    assert list(verdicts.values()) == [
        True, False, True, True, False, True, False, True, True, False
    ], verdicts  # fmt: skip


def test_every_module_has_a_layer():
    unplaced = []
    for m in modules():
        try:
            component(m)
        except AssertionError as err:
            unplaced.append(str(err))
    assert not unplaced, "\n".join(unplaced)


def test_no_import_cycles():
    found = arrows()
    graph: dict[str, set[str]] = {}
    for a in found:
        graph.setdefault(a.importer, set()).add(a.imported)
    report = []
    for scc in cycles(graph):
        members = set(scc)
        report.append("cycle: " + ", ".join(scc))
        inside = {str(a) for a in found if a.importer in members and a.imported in members}
        report += [f"  {a}" for a in sorted(inside)]
    assert not report, "import cycles:\n" + "\n".join(report)


def test_imports_point_down_the_layers():
    bad = sorted({str(a) for a in arrows() if not allowed(a)})
    assert not bad, f"{len(bad)} arrow(s) against the layers (STYLE.md):\n" + "\n".join(bad)


def test_import_moco_core_loads_the_method_alone():
    """``import moco.core`` brings torch and the core (with the split-BN layers and the
    encoders' protocol, whose package face loads nothing), not the engine, data, configs
    or the CLI, nor kornia (augment), omegaconf (config), PIL (data) or torchvision."""
    code = "import sys, moco.core; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    allowed_moco = ("moco.core", "moco.layers")
    leaves = {"moco", "moco.dist", "moco.version", "moco.errors", "moco.encoders",
              "moco.encoders.base", "moco.openmp"}  # fmt: skip
    ours = [m for m in loaded if m == "moco" or m.startswith("moco.")]
    assert "moco.core" in ours  # the listing is real
    extra = [
        m
        for m in ours
        if m not in leaves and not any(m == p or m.startswith(p + ".") for p in allowed_moco)
    ]
    third = [m for m in loaded if m.split(".")[0] in ("kornia", "omegaconf", "PIL", "torchvision")]
    assert not extra and not third, f"import moco.core loaded {extra + third}"
