"""Where the test material lives: sample media in the repository, the CLIP-CAER fixture beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "data" / "media"  # real footage with its licences (data/media/README.md)
# The official CLIP-CAER parity fixture is tens of MB: it stays in ../shared, never in git.
CAER_FIXTURE = ROOT.parent / "shared" / "fixtures" / "clip_caer"


def caer_fixture(module: bool = False) -> Path:
    """The parity fixture's folder; the calling test (or, with ``module``, the whole module) is
    skipped with a one-line reason where it is absent. .ci/run refuses to start without it, so
    CI always runs these tests."""
    if not (CAER_FIXTURE / "checkpoint.pth").is_file():
        pytest.skip(f"CLIP-CAER parity fixture not found at {CAER_FIXTURE} (kept outside git)", allow_module_level=module)
    return CAER_FIXTURE

# Labelled faces (LFW-derived, the development half of an identity split): never in git.
EXPRESSION_FIXTURE = ROOT.parent / "shared" / "fixtures" / "expressions"


def expression_fixture() -> Path:
    """The labelled development faces; the calling test is skipped with the reason where absent
    (CI has ../shared)."""
    if not (EXPRESSION_FIXTURE / "labels.csv").is_file():
        pytest.skip(f"labelled expression faces not found at {EXPRESSION_FIXTURE} (kept outside git)")
    return EXPRESSION_FIXTURE
