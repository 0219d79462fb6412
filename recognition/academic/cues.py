"""A cue-based, interpretable estimate of academic emotions and engagement.

Not a trained classifier: a handful of hand-set rules over per-frame face features
(MediaPipe blendshapes and head pose, FER2013 expression probabilities, and whether a
face was seen), each cue a linear ramp between two documented thresholds. It is the
offline default when no trained academic model (CLIP-CAER) is available. It has not
been validated against labelled students; see docs/cue_model.md for what it is and is not.

Cues, each in [0, 1] (``ramp(x, lo, hi)`` = clip((x - lo) / (hi - lo), 0, 1)):
  smile       = weighted mean of ramp(mean mouthSmileL/R) and ramp(p_happy)
  confusion   = weighted mean of max(ramp(mean browDownL/R), ramp(browInnerUp)) and
                ramp(p_angry + p_fear + p_sad)
  eye_closure = ramp(mean eyeBlinkL/R - k * mean eyeLookDownL/R)   (looking down lowers
                the lids and raises MediaPipe's eyeBlink; k discounts that)
  yawn        = ramp(jawOpen) * (1 - ramp(mean mouthSmileL/R))       (wide jaw, no smile)
  fatigue     = max(eye_closure, yawn)
  head_away   = max(ramp(|yaw|), ramp(-pitch) [head down], ramp(pitch) [head up])
A cue whose inputs are missing counts as absent (0); a weighted mean uses the inputs present.

Academic probabilities: softmax(gain * [neutral_level, smile, confusion, fatigue, head_away])
over (Neutrality, Enjoyment, Confusion, Fatigue, Distraction): Neutrality wins until a
cue passes ``neutral_level``.

Engagement = (1 - head_away) * (1 - fatigue), in [0, 1]: looking roughly at the front
with eyes open and not yawning. Smiles and frowns do not change it.

Missing data, row by row:
  * face not visible (``visible`` False): head_away = 1, other cues 0 (so Distraction
    dominates) and engagement = 0, whatever the other inputs hold;
  * visible but no landmarks (NaN blendshapes or pose, e.g. a 12 px face): academic from
    the expression cues only, engagement NaN (its cues need landmarks);
  * visible with neither landmarks nor expressions: academic and engagement NaN.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from affectline.features import BLENDSHAPE_NAMES, POSE_NAMES
from affectline.types import EXPRESSION_CLASSES

CUE_NAMES: tuple[str, ...] = ("smile", "confusion", "eye_closure", "yawn", "fatigue", "head_away")

_B = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
_E = {n: i for i, n in enumerate(EXPRESSION_CLASSES)}
_YAW, _PITCH = POSE_NAMES.index("yaw"), POSE_NAMES.index("pitch")


@dataclass(frozen=True)
class CueParams:
    """Every number the cue model uses; its fingerprint is a hash of these.

    Ramps are (lo, hi): the cue is 0 at or below lo and 1 at or above hi. Angles in
    degrees, blendshapes and probabilities in [0, 1].
    """

    gain: float = 5.0  # softmax sharpness: cue 1 vs none gives ~0.95 for that class
    neutral_level: float = 0.3  # Neutrality's score: a cue must pass it to win
    smile_blend: tuple[float, float] = (0.2, 0.6)  # mean mouthSmileLeft/Right
    smile_happy: tuple[float, float] = (0.3, 0.8)  # p_happy
    smile_weights: tuple[float, float] = (0.5, 0.5)  # (blendshapes, expression)
    brow_down: tuple[float, float] = (0.3, 0.8)  # mean browDownLeft/Right
    brow_inner_up: tuple[float, float] = (0.3, 0.7)  # browInnerUp
    negative_expr: tuple[float, float] = (0.5, 0.9)  # p_angry + p_fear + p_sad
    confusion_weights: tuple[float, float] = (0.7, 0.3)  # (brows, expression)
    look_down_discount: float = 0.5  # k in eye_closure
    eye_closure: tuple[float, float] = (0.1, 0.4)  # mean eyeBlink - k * mean eyeLookDown
    jaw_open: tuple[float, float] = (0.35, 0.7)  # jawOpen
    yaw: tuple[float, float] = (20.0, 45.0)  # |yaw|
    head_down: tuple[float, float] = (15.0, 35.0)  # -pitch
    head_up: tuple[float, float] = (20.0, 40.0)  # pitch


def ramp(x: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    lo, hi = lo_hi
    return np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _weighted(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Mean of (value, present, weight) parts over those present; 0 where none is."""
    num = sum(np.where(ok, np.nan_to_num(v), 0.0) * w for v, ok, w in parts)
    den = sum(ok * w for _, ok, w in parts)
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _check(a: np.ndarray, cols: int | None, name: str, n: int | None) -> np.ndarray:
    a = np.asarray(a)
    shape_ok = a.ndim == (2 if cols else 1) and (cols is None or a.shape[1] == cols)
    if not shape_ok or (n is not None and len(a) != n):
        want = f"({n if n is not None else 'n'}, {cols})" if cols else f"({n if n is not None else 'n'},)"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    return a


@dataclass(frozen=True)
class CueModel:
    """Interpretable academic-emotion and engagement estimate from per-frame cues.

    ``predict(blendshapes (n,52), pose (n,3), expr (n,7), visible (n,) bool)`` returns
    ``(academic (n,5) float32 probabilities in ACADEMIC_CLASSES order, engagement (n,)
    float32)``. See the module docstring for every formula.
    """

    params: CueParams = field(default_factory=CueParams)
    name: str = "cues"
    version: str = "1"

    @property
    def sha256(self) -> str:
        """Fingerprint of the model's name, version and parameters (recorded like a weights hash)."""
        blob = json.dumps({"name": self.name, "version": self.version, "params": asdict(self.params)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def cues(
        self, blendshapes: np.ndarray, pose: np.ndarray, expr: np.ndarray, visible: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each cue in ``CUE_NAMES`` as an (n,) float64 array, plus boolean masks
        ``landmarks`` and ``expression`` telling which inputs each row had."""
        bs = _check(blendshapes, len(BLENDSHAPE_NAMES), "blendshapes", None).astype(np.float64)
        n = len(bs)
        pose = _check(pose, len(POSE_NAMES), "pose", n).astype(np.float64)
        expr = _check(expr, len(EXPRESSION_CLASSES), "expr", n).astype(np.float64)
        visible = _check(visible, None, "visible", n).astype(bool)
        p = self.params
        has_lm = visible & np.isfinite(bs).all(1) & np.isfinite(pose).all(1)
        has_ex = visible & np.isfinite(expr).all(1)

        def mean2(a: str, b: str) -> np.ndarray:
            return (bs[:, _B[a]] + bs[:, _B[b]]) / 2

        smile_bs = ramp(mean2("mouthSmileLeft", "mouthSmileRight"), p.smile_blend)
        smile = _weighted(
            [
                (smile_bs, has_lm, p.smile_weights[0]),
                (ramp(expr[:, _E["happy"]], p.smile_happy), has_ex, p.smile_weights[1]),
            ]
        )
        brows = np.maximum(
            ramp(mean2("browDownLeft", "browDownRight"), p.brow_down), ramp(bs[:, _B["browInnerUp"]], p.brow_inner_up)
        )
        negative = ramp(expr[:, _E["angry"]] + expr[:, _E["fear"]] + expr[:, _E["sad"]], p.negative_expr)
        confusion = _weighted([(brows, has_lm, p.confusion_weights[0]), (negative, has_ex, p.confusion_weights[1])])
        closed = mean2("eyeBlinkLeft", "eyeBlinkRight") - p.look_down_discount * mean2(
            "eyeLookDownLeft", "eyeLookDownRight"
        )
        eye_closure = np.where(has_lm, ramp(closed, p.eye_closure), 0.0)
        yawn = np.where(has_lm, ramp(bs[:, _B["jawOpen"]], p.jaw_open) * (1 - smile_bs), 0.0)
        yaw, pitch = pose[:, _YAW], pose[:, _PITCH]
        away = np.maximum.reduce([ramp(np.abs(yaw), p.yaw), ramp(-pitch, p.head_down), ramp(pitch, p.head_up)])
        head_away = np.where(has_lm, away, 0.0)
        head_away[~visible] = 1.0  # not seen at all: the strongest distraction cue
        out = {
            "smile": smile,
            "confusion": confusion,
            "eye_closure": eye_closure,
            "yawn": yawn,
            "fatigue": np.maximum(eye_closure, yawn),
            "head_away": head_away,
        }
        # NaN inputs never leak into cues: a missing input is an absent cue.
        out = {k: np.nan_to_num(v) for k, v in out.items()}
        out["landmarks"], out["expression"] = has_lm, has_ex
        return out

    def predict(
        self, blendshapes: np.ndarray, pose: np.ndarray, expr: np.ndarray, visible: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(academic (n, 5) float32 probabilities, engagement (n,) float32); NaN rows as documented above."""
        c = self.cues(blendshapes, pose, expr, visible)
        visible = np.asarray(visible, bool)
        scores = np.stack(
            [
                np.full(len(visible), self.params.neutral_level),
                c["smile"],
                c["confusion"],
                c["fatigue"],
                c["head_away"],
            ],
            axis=1,
        )
        logits = self.params.gain * scores
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        academic = e / e.sum(axis=1, keepdims=True)
        engagement = (1 - c["head_away"]) * (1 - c["fatigue"])
        engagement[visible & ~c["landmarks"]] = np.nan
        academic[visible & ~c["landmarks"] & ~c["expression"]] = np.nan
        return academic.astype(np.float32), engagement.astype(np.float32)
