"""Dependencies point one way: affectline <- recognition, storage <- ingest <- cli; services serve cli and dashboard."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"affectline", "recognition", "storage", "ingest", "services", "cli", "dashboard"}
ALLOWED = {
    "affectline": {"affectline"},
    "recognition": {"affectline", "recognition"},
    "storage": {"affectline", "storage"},
    "services": {"affectline", "storage", "services"},
    "ingest": {"affectline", "recognition", "storage", "ingest"},
    "cli": OURS - {"dashboard"},
    "dashboard": {"affectline", "storage", "services", "dashboard"},
}
_TORCH_STACK = {"torch", "torchvision", "open_clip", "mediapipe", "dlib", "cv2", "decord"}
FORBIDDEN_THIRD_PARTY = {"dashboard": _TORCH_STACK, "services": _TORCH_STACK}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


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
