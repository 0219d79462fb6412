"""A person's stored per-bin features, as the clinicians' work reads them (``feature_series`` rows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from affectline.features import FEATURE_NAMES
from storage.db import from_blob
from storage.models import FeatureSeries

_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


@dataclass
class Series:
    """One track's stored per-bin features, columns in ``FEATURE_NAMES`` order."""

    session_id: int
    track_id: int
    grid_start: float
    grid_step: float
    X: np.ndarray

    @property
    def t_mid(self) -> np.ndarray:
        return self.grid_start + (np.arange(len(self.X)) + 0.5) * self.grid_step


def align_features(names: list[str], data: np.ndarray) -> np.ndarray:
    """Reorder stored columns to ``FEATURE_NAMES``; columns the writer did not have are NaN."""
    if list(names) == list(FEATURE_NAMES):
        return data.astype(np.float64)
    if "face_visible" not in names:
        raise ValueError(f"stored features lack 'face_visible' (have {len(names)} columns: {names[:5]}...)")
    X = np.full((len(data), len(FEATURE_NAMES)), np.nan)
    for j, n in enumerate(names):
        if n in _COL:
            X[:, _COL[n]] = data[:, j]
    return X


def load_series(s: Session, person_id: int, session_id: int | None = None) -> list[Series]:
    q = select(FeatureSeries).where(FeatureSeries.person_id == person_id)
    if session_id is not None:
        q = q.where(FeatureSeries.session_id == session_id)
    out = []
    for fs in s.scalars(q.order_by(FeatureSeries.session_id, FeatureSeries.grid_start)):
        data = from_blob(fs.data, len(fs.names)) if fs.n else np.zeros((0, len(fs.names)), np.float32)
        out.append(Series(fs.session_id, fs.track_id, fs.grid_start, fs.grid_step, align_features(fs.names, data)))
    return out
