"""Per-child calibration: features relative to the child's own resting face.

A child whose resting face has raised inner brows is not sad all day; the baseline
(median and MAD over their bins, or over bins a clinician tagged as baseline) turns
each feature into "how far from this child's usual", which is what both the calibrated
population model and the personal model read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectline.features import BLENDSHAPE_NAMES, EXPRESSION_FEATURE_NAMES, FEATURE_NAMES, POSE_NAMES
from recognition.personal import blob
from recognition.personal.population import BLEND_IDX, COL, PROB_IDX, TAU

POSE_IDX = np.array([COL[n] for n in POSE_NAMES])
VISIBLE_IDX = COL["face_visible"]
# The personal model's inputs: blendshapes, head pose and FER log(p + TAU).
MODEL_FEATURE_NAMES: tuple[str, ...] = (
    BLENDSHAPE_NAMES + POSE_NAMES + tuple(f"log_{n}" for n in EXPRESSION_FEATURE_NAMES)
)
_NB, _NP = len(BLENDSHAPE_NAMES), len(POSE_NAMES)
# A MAD of zero (a blendshape this child never moves) would make any twitch infinite.
SCALE_FLOOR = np.concatenate([np.full(_NB, 0.02), np.full(_NP, 2.0), np.full(len(PROB_IDX), 0.1)])
Z_CLIP = 8.0
MIN_BASELINE_BINS = 10
BASELINE_FORMAT = "affectline.baseline/1"


def model_features(X: np.ndarray) -> np.ndarray:
    """(n, 62) model features from feature rows in ``FEATURE_NAMES`` order (NaN kept)."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"feature rows must have shape (n, {len(FEATURE_NAMES)}), got {X.shape}")
    logp = np.log(np.clip(X[:, PROB_IDX], 0.0, 1.0) + TAU)
    return np.hstack([X[:, BLEND_IDX], X[:, POSE_IDX], logp])


def observed(X: np.ndarray) -> np.ndarray:
    """(n,) bool: the bin saw a face and has FER probabilities."""
    X = np.asarray(X)
    return (np.nan_to_num(X[:, VISIBLE_IDX]) > 0) & np.isfinite(X[:, PROB_IDX]).all(axis=1)


@dataclass(frozen=True)
class Baseline:
    """Robust centre and scale of the 62 model features for one child."""

    center: np.ndarray
    scale: np.ndarray
    n_bins: int
    source: str  # "tags": clinician-marked baseline segments; "all": every bin seen

    @classmethod
    def identity(cls) -> Baseline:
        """No calibration: zero centre, unit scale (used when a child has too few bins)."""
        d = len(MODEL_FEATURE_NAMES)
        return cls(np.zeros(d), np.ones(d), 0, "none")

    @property
    def is_identity(self) -> bool:
        return self.source == "none"

    @property
    def blend_center(self) -> np.ndarray | None:
        return None if self.is_identity else self.center[:_NB]

    @property
    def logp_center(self) -> np.ndarray | None:
        return None if self.is_identity else self.center[_NB + _NP :]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, 62) robust z-scores; missing values become 0 (= "as at rest")."""
        z = (model_features(X) - self.center) / self.scale
        return np.clip(np.nan_to_num(z, nan=0.0, posinf=Z_CLIP, neginf=-Z_CLIP), -Z_CLIP, Z_CLIP)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"baseline_center": self.center, "baseline_scale": self.scale}

    def to_bytes(self) -> bytes:
        return blob.pack({"format": BASELINE_FORMAT, "n_bins": self.n_bins, "source": self.source}, **self.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> Baseline:
        meta, z = blob.unpack(data, BASELINE_FORMAT, "baseline")
        return cls(z["baseline_center"], z["baseline_scale"], int(meta["n_bins"]), meta["source"])


def fit_baseline(X: np.ndarray, baseline_mask: np.ndarray | None = None, min_bins: int = MIN_BASELINE_BINS) -> Baseline:
    """Median/MAD baseline from observed bins; from ``baseline_mask`` bins when it has enough.

    Falls back to every observed bin when fewer than ``min_bins`` are marked, and to the
    identity when even those are too few.
    """
    ok = observed(X)
    source = "all"
    if baseline_mask is not None and int((ok & baseline_mask).sum()) >= min_bins:
        ok, source = ok & baseline_mask, "tags"
    if int(ok.sum()) < min_bins:
        return Baseline.identity()
    F = model_features(np.asarray(X)[ok])
    center = np.nanmedian(F, axis=0)
    mad = np.nanmedian(np.abs(F - center), axis=0) * 1.4826  # consistent with a std under normality
    center = np.nan_to_num(center, nan=0.0)
    scale = np.maximum(np.nan_to_num(mad, nan=1.0), SCALE_FLOOR)
    return Baseline(center, scale, int(ok.sum()), source)
