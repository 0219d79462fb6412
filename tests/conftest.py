"""Shared fixtures: the sample media, an isolated Settings and a migrated database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from tests.paths import MEDIA, caer_fixture

# Model files are cached across test runs (and shared with `make demo`), never re-fetched per test.
os.environ.setdefault("AFFECTLINE_MODEL_DIR", str(Path.home() / ".cache" / "affectline" / "models"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    assert MEDIA.is_dir(), f"sample media missing: {MEDIA} (see data/media/README.md)"
    return MEDIA


@pytest.fixture(scope="session")
def caer_fixture_dir() -> Path:
    """The official CLIP-CAER parity fixture (skips with its reason where absent)."""
    return caer_fixture()


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing every database and broker file at a temporary folder."""
    from affectline.settings import Settings, get_settings

    monkeypatch.setenv("AFFECTLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AFFECTLINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("AFFECTLINE_BROKER_URL", raising=False)
    get_settings.cache_clear()
    s = Settings()
    yield s
    get_settings.cache_clear()


@pytest.fixture()
def db_url(settings) -> str:
    """A freshly migrated SQLite database for one test."""
    from storage.db import migrate

    url = settings.resolved_database_url
    migrate(url)
    return url
