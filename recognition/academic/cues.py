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

Relative to the person (``baseline``): each raw input (``CUE_INPUTS``: mean mouthSmile,
p_happy, mean browDown, browInnerUp, p_angry + p_fear + p_sad, the look-down-discounted
eyeBlink, jawOpen, yaw, pitch) named in ``CueParams.relative_inputs`` (all but the
smile's) is read minus a shift,
  shift = w * (person's resting value - population resting value),  w = n / (n + prior_n),
clipped at 0 for the expression inputs (a baseline explains a resting frown or a narrow
eye away; it never makes a cue easier to fire than for the population) and signed for
yaw and pitch (a student who faces the board, not the camera, is not turned away). The
person's resting value is the median of their readable samples over the whole session
(``fit_baseline``) or a clinician's baseline (``baseline_from_center``); n counts the
distinct seconds (bins) or photos behind it, so a person seen briefly is read mostly
against the population (``CueParams.population``, ``baseline_prior_n``). No baseline =
the population: the absolute reading.

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
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from affectline.features import BLENDSHAPE_NAMES, POSE_NAMES
from affectline.types import EXPRESSION_CLASSES

CUE_NAMES: tuple[str, ...] = ("smile", "confusion", "eye_closure", "yawn", "fatigue", "head_away")
CUE_INPUTS: tuple[str, ...] = (
    "smile_blend", "p_happy", "brow_down", "brow_inner_up", "p_negative", "eye_closed", "jaw_open", "yaw", "pitch",
)  # fmt: skip
"""The raw per-row quantities the cues ramp (``CueModel.inputs``); a baseline shifts these."""
_I = {n: i for i, n in enumerate(CUE_INPUTS)}
_EXPR_INPUTS = np.array([_I["p_happy"], _I["p_negative"]])
_LM_INPUTS = np.array([i for i in range(len(CUE_INPUTS)) if i not in _EXPR_INPUTS])
_SIGNED = np.array([_I["yaw"], _I["pitch"]])  # shifted both ways; the others only down

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
    # Person-relative reading (see the module docstring). The population's resting value of
    # each CUE_INPUTS entry: the medians of the LFW development set's neutral faces
    # (bench/cues.py; yaw and pitch 0 = facing the camera, what the absolute ramps assume).
    population: tuple[float, ...] = (0.0, 0.0, 0.1, 0.01, 0.7, 0.05, 0.02, 0.0, 0.0)
    baseline_prior_n: float = 3.0  # seconds (bins) or photos of a person worth as much as the population
    relative_inputs: tuple[str, ...] = (
        "brow_down", "brow_inner_up", "p_negative", "eye_closed", "jaw_open", "yaw", "pitch",
    )  # fmt: skip
    # The CUE_INPUTS a baseline shifts; the smile is read as it is (a resting smile is rare, and
    # reading it against the person lowered Enjoyment's AUC on the development set: bench/cues.py).


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
class CueBaseline:
    """A person's resting value of each ``CUE_INPUTS`` entry and how much to trust it.

    ``center`` (len(CUE_INPUTS),) NaN where unknown (then the population's is used);
    ``n`` (len(CUE_INPUTS),) the distinct seconds (bins) or photos behind each entry;
    ``source``: "session" (their own median), "clinician" (a clinician's baseline
    segments), "population" (nothing known: the absolute reading).
    """

    center: np.ndarray
    n: np.ndarray
    source: str

    @classmethod
    def population(cls) -> CueBaseline:
        d = len(CUE_INPUTS)
        return cls(np.full(d, np.nan), np.zeros(d), "population")

    def shift(self, params: CueParams) -> np.ndarray:
        """(len(CUE_INPUTS),) what the cues subtract from each input: w * (center - population)."""
        n = np.asarray(self.n, np.float64)
        w = n / (n + params.baseline_prior_n) if params.baseline_prior_n > 0 else (n > 0).astype(np.float64)
        d = np.nan_to_num(w * (np.asarray(self.center, np.float64) - np.asarray(params.population, np.float64)))
        signed = np.zeros(len(d), bool)
        signed[_SIGNED] = True
        d = np.where(signed, d, np.maximum(d, 0.0))
        return np.where(np.isin(CUE_INPUTS, params.relative_inputs), d, 0.0)


@dataclass(frozen=True)
class CueModel:
    """Interpretable academic-emotion and engagement estimate from per-frame cues.

    ``predict(blendshapes (n,52), pose (n,3), expr (n,7), visible (n,) bool)`` returns
    ``(academic (n,5) float32 probabilities in ACADEMIC_CLASSES order, engagement (n,)
    float32)``. See the module docstring for every formula.
    """

    params: CueParams = field(default_factory=CueParams)
    name: str = "cues"
    version: str = "2"  # 2: person-relative reading (CueBaseline)

    @property
    def sha256(self) -> str:
        """Fingerprint of the model's name, version and parameters (recorded like a weights hash)."""
        blob = json.dumps({"name": self.name, "version": self.version, "params": asdict(self.params)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def inputs(self, blendshapes: np.ndarray, pose: np.ndarray, expr: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """(n, len(CUE_INPUTS)) float64 raw inputs; NaN where not measured (no landmarks, no
        expression, or the face not visible)."""
        bs = _check(blendshapes, len(BLENDSHAPE_NAMES), "blendshapes", None).astype(np.float64)
        n = len(bs)
        pose = _check(pose, len(POSE_NAMES), "pose", n).astype(np.float64)
        expr = _check(expr, len(EXPRESSION_CLASSES), "expr", n).astype(np.float64)
        visible = _check(visible, None, "visible", n).astype(bool)
        has_lm = visible & np.isfinite(bs).all(1) & np.isfinite(pose).all(1)
        has_ex = visible & np.isfinite(expr).all(1)

        def mean2(a: str, b: str) -> np.ndarray:
            return (bs[:, _B[a]] + bs[:, _B[b]]) / 2

        x = np.full((n, len(CUE_INPUTS)), np.nan)
        cols = {
            "smile_blend": mean2("mouthSmileLeft", "mouthSmileRight"),
            "p_happy": expr[:, _E["happy"]],
            "brow_down": mean2("browDownLeft", "browDownRight"),
            "brow_inner_up": bs[:, _B["browInnerUp"]],
            "p_negative": expr[:, _E["angry"]] + expr[:, _E["fear"]] + expr[:, _E["sad"]],
            "eye_closed": mean2("eyeBlinkLeft", "eyeBlinkRight")
            - self.params.look_down_discount * mean2("eyeLookDownLeft", "eyeLookDownRight"),
            "jaw_open": bs[:, _B["jawOpen"]],
            "yaw": pose[:, _YAW],
            "pitch": pose[:, _PITCH],
        }
        for k, v in cols.items():
            ok = has_ex if _I[k] in _EXPR_INPUTS else has_lm
            x[ok, _I[k]] = v[ok]
        return x

    def fit_baseline(self, inputs: np.ndarray, groups: np.ndarray | None = None) -> CueBaseline:
        """A person's baseline from their (readable) rows of ``inputs``: the median of each input.

        ``groups`` (m,) labels the rows (e.g. their bin index): n counts distinct labels, so
        many samples of one second weigh as one second; without it every row counts.
        """
        x = _check(inputs, len(CUE_INPUTS), "inputs", None).astype(np.float64)
        if not len(x):
            return CueBaseline.population()
        g = np.arange(len(x)) if groups is None else _check(groups, None, "groups", len(x))
        ok = np.isfinite(x)
        n = np.array([len(np.unique(g[ok[:, j]])) for j in range(x.shape[1])], np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: unknown (n = 0), not an error
            center = np.nanmedian(x, axis=0)
        return CueBaseline(center, n, "session" if n.any() else "population")

    def baseline_from_center(self, blend: np.ndarray, pose: np.ndarray, expr: np.ndarray, n: int,
                             source: str = "clinician") -> CueBaseline:  # fmt: skip
        """A baseline from one resting feature row (e.g. a clinician's calibration centre:
        blendshapes (52,), pose (3,), FER probabilities (7,)) worth ``n`` seconds."""
        x = self.inputs(np.reshape(blend, (1, -1)), np.reshape(pose, (1, -1)), np.reshape(expr, (1, -1)), np.ones(1, bool))[0]
        return CueBaseline(x, np.where(np.isfinite(x), float(n), 0.0), source)

    def cues(
        self, blendshapes: np.ndarray, pose: np.ndarray, expr: np.ndarray, visible: np.ndarray,
        baseline: CueBaseline | None = None,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """Each cue in ``CUE_NAMES`` as an (n,) float64 array, plus boolean masks
        ``landmarks`` and ``expression`` telling which inputs each row had."""
        x = self.inputs(blendshapes, pose, expr, visible)
        return self.cues_from_inputs(x, np.asarray(visible, bool), baseline)

    def cues_from_inputs(self, inputs: np.ndarray, visible: np.ndarray, baseline: CueBaseline | None = None
                         ) -> dict[str, np.ndarray]:  # fmt: skip
        """``cues`` from ``inputs`` rows (as ``inputs`` returns them), read against ``baseline``."""
        x = _check(inputs, len(CUE_INPUTS), "inputs", None).astype(np.float64)
        visible = _check(visible, None, "visible", len(x)).astype(bool)
        p = self.params
        has_lm = visible & np.isfinite(x[:, _LM_INPUTS]).all(1)
        has_ex = visible & np.isfinite(x[:, _EXPR_INPUTS]).all(1)
        if baseline is not None:
            x = x - baseline.shift(p)
        col = {k: x[:, i] for k, i in _I.items()}
        smile_bs = ramp(col["smile_blend"], p.smile_blend)
        smile = _weighted(
            [
                (smile_bs, has_lm, p.smile_weights[0]),
                (ramp(col["p_happy"], p.smile_happy), has_ex, p.smile_weights[1]),
            ]
        )
        brows = np.maximum(ramp(col["brow_down"], p.brow_down), ramp(col["brow_inner_up"], p.brow_inner_up))
        negative = ramp(col["p_negative"], p.negative_expr)
        confusion = _weighted([(brows, has_lm, p.confusion_weights[0]), (negative, has_ex, p.confusion_weights[1])])
        eye_closure = np.where(has_lm, ramp(col["eye_closed"], p.eye_closure), 0.0)
        yawn = np.where(has_lm, ramp(col["jaw_open"], p.jaw_open) * (1 - smile_bs), 0.0)
        yaw, pitch = col["yaw"], col["pitch"]
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
        self, blendshapes: np.ndarray, pose: np.ndarray, expr: np.ndarray, visible: np.ndarray,
        baseline: CueBaseline | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(academic (n, 5) float32 probabilities, engagement (n,) float32); NaN rows as documented above."""
        return self.predict_inputs(self.inputs(blendshapes, pose, expr, visible), visible, baseline)

    def predict_inputs(self, inputs: np.ndarray, visible: np.ndarray, baseline: CueBaseline | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``predict`` from ``inputs`` rows, read against ``baseline`` (None: the population)."""
        c = self.cues_from_inputs(inputs, visible, baseline)
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
