"""Reliability: how much a bin's expression reading can be trusted, and "uncertain".

A reading is only as good as the face it came from. Each bin gets a quality ``q`` in
[0, 1] from its quality features, and the model's probabilities are tempered toward
chance by it (``q * p + (1 - q) / K``): with probability ``q`` the face was informative,
otherwise it told us nothing. The confidence is the top tempered probability; below
``Settings.uncertain_threshold`` the output is ``UNCERTAIN`` rather than a guess. The
tempered probabilities are still probabilities, so their calibration can be measured
(:func:`expected_calibration_error`) on held-out clinician tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recognition.personal.population import COL

UNCERTAIN = "uncertain"


def ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at or below ``lo``, 1 at or above ``hi``, linear between."""
    return np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)


@dataclass(frozen=True)
class QualityRamps:
    """Where each quality feature goes from useless to fine.

    face_px: face height in pixels; FER2013 works on 48 px crops, so below ~20 px the
        network sees mostly upsampling blur.
    sharpness: variance of the Laplacian of the grey face crop resized to 64 x 64 (as
        the pipeline computes it), on a log scale. Measured on real faces: sharp photos
        500-800, 60-80 px video faces 25-90; a Gaussian blur of sigma 9 (on a 310 px
        face) drops it to 15-19, sigma 15 to 3-6.
    yaw: beyond ~60 degrees one eye and half the mouth are hidden and both FER and the
        blendshapes guess.
    pitch: a face looking down at the table hides the brows' and mouth's shape.
    roll: the FER2013 crop is not de-rotated; on the head-turns clip a face tilted
        40-50 degrees splits FER between sad and neutral where upright it read neutral.
    landmarks: a bin without landmarks has FER only, worth ``1 - landmarks_penalty``.
    """

    face_px: tuple[float, float] = (20.0, 48.0)
    sharpness: tuple[float, float] = (8.0, 30.0)
    yaw: tuple[float, float] = (25.0, 60.0)
    pitch: tuple[float, float] = (25.0, 50.0)
    roll: tuple[float, float] = (20.0, 45.0)
    landmarks_penalty: float = 0.3


def quality(X: np.ndarray, ramps: QualityRamps = QualityRamps()) -> np.ndarray:
    """(n,) quality in [0, 1] from feature rows in ``FEATURE_NAMES`` order.

    The factors multiply. A quality feature that is missing (NaN) in a bin with a face
    is not held against it; head pose is missing exactly when landmarks were not found,
    which is penalised already. A bin with no face has quality 0.
    """
    X = np.asarray(X, np.float64)
    vis = np.clip(np.nan_to_num(X[:, COL["face_visible"]]), 0.0, 1.0)
    lm = np.clip(np.nan_to_num(X[:, COL["landmarks_found"]], nan=1.0), 0.0, 1.0)
    f_lm = 1.0 - ramps.landmarks_penalty * (1.0 - lm)
    px = X[:, COL["face_px"]]
    f_px = np.where(np.isfinite(px), ramp(np.nan_to_num(px), *ramps.face_px), 1.0)
    sh = X[:, COL["sharpness"]]
    lo, hi = np.log10(ramps.sharpness[0]), np.log10(ramps.sharpness[1])
    f_sh = np.where(np.isfinite(sh), ramp(np.log10(np.maximum(np.nan_to_num(sh), 1e-3)), lo, hi), 1.0)
    f_pose = np.ones(len(X))
    for name in ("yaw", "pitch", "roll"):
        a = np.abs(X[:, COL[name]])
        f_pose *= np.where(np.isfinite(a), 1.0 - ramp(np.nan_to_num(a), *getattr(ramps, name)), 1.0)
    return vis * f_lm * f_px * f_sh * f_pose


def temper(P: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Mix each row of probabilities with the uniform distribution: ``q p + (1 - q) / K``."""
    K = P.shape[1]
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)[:, None]
    return q * P + (1.0 - q) / K


@dataclass(frozen=True)
class Decision:
    """Per-bin output: the label index (-1 = uncertain or unseen) and the confidence."""

    index: np.ndarray  # (n,) int
    confidence: np.ndarray  # (n,) float, 0 where nothing was seen

    def labels(self, names: tuple[str, ...] | list[str]) -> list[str]:
        return [names[i] if i >= 0 else UNCERTAIN for i in self.index]


def decide(P: np.ndarray, q: np.ndarray, threshold: float) -> Decision:
    """Top label of the quality-tempered probabilities, or -1 below ``threshold``.

    Rows of ``P`` that are NaN (no observation) get confidence 0 and -1.
    """
    seen = np.isfinite(P).all(axis=1)
    T = temper(np.nan_to_num(P), np.where(seen, q, 0.0))
    conf = np.where(seen, T.max(axis=1), 0.0)
    idx = np.where(seen & (conf >= threshold), T.argmax(axis=1), -1)
    return Decision(idx.astype(np.int64), conf)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: bin-size-weighted |accuracy - mean confidence| over equal-width bins."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)
