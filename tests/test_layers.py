"""Dependencies point one way, with no circles:

    affectline <- recognition <- pipeline, identity
    affectline <- storage
    recognition, pipeline, storage <- clinic
    pipeline, identity, clinic, storage <- tasks (the workers)
    storage <- services <- cli, dashboard

The front ends (cli, dashboard) reach the database only through ``services``: neither imports
``storage`` or SQLAlchemy, so neither can write a row the services did not audit or check. The
command line also runs the workers' code here (``--eager``, local personalisation, training), so it
may import ``tasks``, ``pipeline``, ``clinic`` and ``recognition``; the dashboard never does (nor
torch). Every import counts, at the top of a module or inside a function; every package of ours must
have a place here (a new one is refused until it is given one).
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "affectline": {"affectline"},
    "recognition": {"affectline", "recognition"},
    "pipeline": {"affectline", "recognition", "pipeline"},
    "identity": {"affectline", "recognition", "identity"},
    "storage": {"affectline", "storage"},
    "clinic": {"affectline", "recognition", "pipeline", "storage", "clinic"},
    "tasks": {"affectline", "recognition", "pipeline", "identity", "clinic", "storage", "tasks"},
    "services": {"affectline", "storage", "services"},
    "cli": {"affectline", "services", "tasks", "pipeline", "clinic", "recognition", "cli"},
    "dashboard": {"affectline", "services", "dashboard"},
}
OURS = set(ALLOWED)
NOT_OURS = {"tests", "bench", "docs", "docker", "data"}  # scripts and data beside the packages
_TORCH_STACK = {"torch", "torchvision", "open_clip", "mediapipe", "dlib", "cv2", "decord"}
FORBIDDEN_THIRD_PARTY = {"dashboard": _TORCH_STACK | {"sqlalchemy"}, "services": _TORCH_STACK, "cli": {"sqlalchemy"},
                         "pipeline": {"sqlalchemy", "celery"}, "identity": {"sqlalchemy", "celery"},
                         "clinic": {"celery"}}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in OURS:
        for path in (ROOT / pkg).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _module_edges(name: str, path: Path) -> set[str]:
    """Our modules ``name`` imports. ``from pkg import sub`` names the submodule (the package runs
    first anyway, as for any submodule); ``from pkg import thing`` names the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            for a in node.names:
                if f"{mod}.{a.name}" in MODULES:
                    out.add(f"{mod}.{a.name}")
                elif mod in MODULES:
                    out.add(mod)
    out.discard(name)
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_every_package_of_ours_has_a_layer():
    found = {p.parent.name for p in ROOT.glob("*/*.py")} - NOT_OURS
    assert found <= OURS, f"packages without a layer in ALLOWED: {sorted(found - OURS)}"
    assert {"affectline", "pipeline", "tasks", "services", "dashboard"} <= found  # the glob sees the packages


def test_a_package_importing_upward_is_refused(tmp_path, monkeypatch):
    # The checker itself can fail: pipeline importing storage (upward, past its layer) is reported.
    pkg = tmp_path / "pipeline"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from storage.db import session_scope\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="storage"):
        test_package_imports_only_what_its_layer_allows("pipeline")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package):
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.parts:
            continue
        used = _imports(path)
        wrong = (used & OURS) - ALLOWED[package]
        wrong |= used & FORBIDDEN_THIRD_PARTY.get(package, set())
        if wrong:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_our_modules():
    graph = {name: _module_edges(name, path) for name, path in MODULES.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    # The checker itself can fail: a function-level import closing a circle is found.
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import b\n")
    b.write_text("def f():\n    from a import x\n")
    global MODULES
    saved, MODULES = MODULES, {"a": a, "b": b}
    try:
        graph = {n: _module_edges(n, p) for n, p in MODULES.items()}
    finally:
        MODULES = saved
    assert import_cycles(graph) == [["a", "b"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
