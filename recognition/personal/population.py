"""The population expression model: FER2013 probabilities fused with blendshape cues.

No labelled data for a population fusion exists offline, so the fusion is a fixed,
documented mapping (see ``docs/personalisation.md``) rather than a trained model::

    logit_k = FER_WEIGHT * log(p_k + EPS) + sum_j CUE_WEIGHTS[k, j] * cue_j

``p`` are the FER2013 network's per-bin probabilities (columns ``p_*``); each cue is
the mean of a left/right blendshape pair (0..1). Neutral is the reference class with
no cue weights, so any expressive cue moves probability away from it. The result is a
softmax over ``EXPRESSION_CLASSES``, then smoothed over a short centred window.

With a per-child :class:`~recognition.personal.calibration.Baseline` the same mapping
reads the child's face relative to their own resting face (see ``apply``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectline.features import BLENDSHAPE_NAMES, EXPRESSION_FEATURE_NAMES, FEATURE_NAMES
from affectline.types import EXPRESSION_CLASSES

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}
BLEND_IDX = np.array([COL[n] for n in BLENDSHAPE_NAMES])
PROB_IDX = np.array([COL[n] for n in EXPRESSION_FEATURE_NAMES])
EPS = 1e-4
# Relative to a baseline, log(p + TAU) is compared rather than log p: a class the network
# gives 1e-4 at rest and 1e-2 now has not "risen 100-fold" in any way that matters.
TAU = 0.05
FER_WEIGHT = 1.0

# Cues: (name, blendshapes averaged). Left/right pairs are averaged so a half-turned face
# whose far side the landmarker guesses poorly still reads as one activation.
CUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("smile", ("mouthSmileLeft", "mouthSmileRight")),
    ("cheek_squint", ("cheekSquintLeft", "cheekSquintRight")),
    ("brow_down", ("browDownLeft", "browDownRight")),
    ("brow_inner_up", ("browInnerUp",)),
    ("brow_outer_up", ("browOuterUpLeft", "browOuterUpRight")),
    ("eye_wide", ("eyeWideLeft", "eyeWideRight")),
    ("eye_squint", ("eyeSquintLeft", "eyeSquintRight")),
    ("jaw_open", ("jawOpen",)),
    ("frown", ("mouthFrownLeft", "mouthFrownRight")),
    ("press", ("mouthPressLeft", "mouthPressRight")),
    ("sneer", ("noseSneerLeft", "noseSneerRight")),
    ("upper_lip_up", ("mouthUpperUpLeft", "mouthUpperUpRight")),
    ("stretch", ("mouthStretchLeft", "mouthStretchRight")),
)
CUE_NAMES = tuple(c for c, _ in CUES)

# Logit added per unit of cue activation, by class (FACS-style prototypes: happy = AU6+12,
# surprise = AU1+2+5+26, anger = AU4+7+23, disgust = AU9+10, sadness = AU1+4+15, fear =
# AU1+2+4+5+20). Magnitudes make a full-strength prototype worth ~3-4 logits, about as
# much as a confident FER output (log 0.9 - log 0.02), so neither source alone dominates.
_W: dict[str, dict[str, float]] = {
    "angry": {"brow_down": 3.0, "eye_squint": 1.0, "press": 1.5, "sneer": 0.5},
    "disgust": {"sneer": 3.0, "upper_lip_up": 2.5, "brow_down": 0.5},
    "fear": {"eye_wide": 2.0, "brow_inner_up": 1.5, "stretch": 2.0},
    "happy": {"smile": 4.0, "cheek_squint": 1.5},
    "sad": {"frown": 2.5, "brow_inner_up": 1.5, "smile": -1.0},
    "surprise": {"brow_outer_up": 2.0, "brow_inner_up": 1.0, "eye_wide": 2.0, "jaw_open": 2.0},
    "neutral": {},
}
CUE_WEIGHTS = np.array([[_W[k].get(c, 0.0) for c in CUE_NAMES] for k in EXPRESSION_CLASSES], np.float64)

# What a child's resting face is taken to mean once it is the reference: mostly neutral.
RESTING_PRIOR = np.array([0.4 / 6] * 6 + [0.6])
assert EXPRESSION_CLASSES[-1] == "neutral"

_CUE_MEMBERS = [np.array([COL[b] for b in members]) for _, members in CUES]


def cues(X: np.ndarray, blend_center: np.ndarray | None = None) -> np.ndarray:
    """(n, n_cues) cue activations from feature rows in ``FEATURE_NAMES`` order.

    With ``blend_center`` (52 per-blendshape resting values) each blendshape counts only
    above the child's own resting activation.
    """
    B = X[:, BLEND_IDX].astype(np.float64)
    if blend_center is not None:
        B = np.clip(B - blend_center, 0.0, None)
    full = np.zeros((len(X), len(FEATURE_NAMES)))
    full[:, BLEND_IDX] = B
    return np.stack([full[:, m].mean(axis=1) for m in _CUE_MEMBERS], axis=1)


def fused_logits(
    X: np.ndarray, logp_center: np.ndarray | None = None, blend_center: np.ndarray | None = None
) -> np.ndarray:
    """Unnormalised log-probabilities (n, 7); rows with neither FER nor blendshapes are NaN."""
    X = np.asarray(X, np.float64)
    p = np.clip(X[:, PROB_IDX], 0.0, 1.0)
    if logp_center is None:
        logp = np.log(p + EPS)
    else:  # the child's resting face reads as RESTING_PRIOR
        logp = np.log(p + TAU) - logp_center + np.log(RESTING_PRIOR)
    fer_ok = np.isfinite(logp).all(axis=1)
    c = cues(X, blend_center)
    cue_ok = np.isfinite(c).all(axis=1)
    fer_term = np.where(fer_ok[:, None], FER_WEIGHT * np.nan_to_num(logp), 0.0)
    cue_term = np.where(cue_ok[:, None], np.nan_to_num(c) @ CUE_WEIGHTS.T, 0.0)
    out = fer_term + cue_term
    out[~(fer_ok | cue_ok)] = np.nan
    return out


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - np.nanmax(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def smooth(X: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over rows (time), ignoring NaN; rows that were NaN stay NaN.

    A bin where the face was not seen is not filled in from its neighbours: it has no
    observation, and reporting one there would hide the gap from a clinician.
    """
    X = np.asarray(X, np.float64)
    if window <= 1 or len(X) == 0:
        return X.copy()
    half = window // 2
    ok = np.isfinite(X)
    v = np.where(ok, X, 0.0)
    cs = np.vstack([np.zeros((1, X.shape[1])), np.cumsum(v, axis=0)])
    cn = np.vstack([np.zeros((1, X.shape[1])), np.cumsum(ok, axis=0)])
    idx = np.arange(len(X))
    lo, hi = np.clip(idx - half, 0, len(X)), np.clip(idx + half + 1, 0, len(X))
    num, den = cs[hi] - cs[lo], cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~ok] = np.nan
    return out


@dataclass(frozen=True)
class PopulationModel:
    """The fixed fusion; ``window`` bins of centred smoothing (odd; 1 = none)."""

    window: int = 3
    labels: tuple[str, ...] = EXPRESSION_CLASSES

    def predict_proba(
        self,
        X: np.ndarray,
        logp_center: np.ndarray | None = None,
        blend_center: np.ndarray | None = None,
        smoothed: bool = False,
    ) -> np.ndarray:
        """(n, 7) probabilities over ``EXPRESSION_CLASSES`` for one track's bins in time order.

        ``smoothed=True`` says ``X`` is already smoothed (see :func:`smooth`). Rows with
        no observation are NaN.
        """
        Xs = X if smoothed else smooth(X, self.window)
        z = fused_logits(Xs, logp_center, blend_center)
        out = np.full(z.shape, np.nan)
        ok = np.isfinite(z).all(axis=1)
        out[ok] = softmax(z[ok])
        return out
