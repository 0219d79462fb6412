"""Scoring expression predictions against human labels: pure numpy, no model, no I/O.

``affectline eval expressions`` (``pipeline.eval_expressions``) runs the pipeline's own face
code over labelled images and hands the outputs here; the model selection and calibration
scripts use the same functions, so every figure in the README is computed one way.

Conventions: labels are indices into ``affectline.types.EXPRESSION_CLASSES`` (FER2013 order);
``probs`` are (n, 7) rows summing to 1. "Scored" classes are the five with enough faces in
the development set to have a meaningful F1 (angry, happy, sad, surprise, neutral); disgust
and fear are reported by their confusions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from affectline.types import EXPRESSION_CLASSES

SCORED = ("angry", "happy", "sad", "surprise", "neutral")
SCORED_IDX = tuple(EXPRESSION_CLASSES.index(c) for c in SCORED)
ECE_BINS = 15


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int = len(EXPRESSION_CLASSES)) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def recalls(cm: np.ndarray) -> np.ndarray:
    """Per-class recall (NaN for a class with no true faces)."""
    n = cm.sum(1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.diag(cm) / n, np.nan)


def f1s(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 (0 where a class is neither true nor predicted: it cannot be scored as right)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, 0.0)


def macro_f1(cm: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    """Mean F1 over ``classes`` (default all). Predictions of other classes count as misses."""
    f = f1s(cm)
    idx = list(range(len(f))) if classes is None else list(classes)
    return float(np.mean(f[idx])) if idx else float("nan")


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy - mean confidence| per equal-width bin of the
    top-class confidence, weighted by the bin's share of faces."""
    probs = np.asarray(probs, float)
    if len(probs) == 0:
        return float("nan")
    conf = probs.max(1)
    right = probs.argmax(1) == np.asarray(y_true)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes in bin 0.
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for i in range(bins):
        m = b == i
        if m.any():
            total += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(total)


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = ECE_BINS) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, faces) per non-empty confidence bin: the reliability diagram."""
    probs = np.asarray(probs, float)
    conf, right = probs.max(1), probs.argmax(1) == np.asarray(y_true)
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return [(float(conf[b == i].mean()), float(right[b == i].mean()), int((b == i).sum())) for i in range(bins) if (b == i).any()]


@dataclass
class Scores:
    """The figures for one set of faces (one face size)."""

    faces: int  # labelled images
    detected: int  # the pipeline's detector found the face
    readable: int  # ... and the readability gate passed it: the pipeline gives it an expression
    answered: int  # ... and its confidence reached the uncertain threshold
    coverage: float  # readable / faces: the faces given an expression (stored and exported)
    accuracy: float  # over readable faces (the ones given an expression)
    macro_f1_5: float  # over SCORED
    macro_f1_7: float
    ece: float
    accuracy_answered: float  # over answered faces only
    accuracy_uncertain: float  # over readable faces below the threshold
    confident: float = float("nan")  # answered / faces: the share above the uncertain threshold
    recall: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # unreadable faces per reason (+ not_detected)

    def as_dict(self) -> dict:
        return asdict(self)


def score(y_true: np.ndarray, probs: np.ndarray, readable: np.ndarray, threshold: float,
          reasons: dict[str, int] | None = None, detected: np.ndarray | None = None) -> Scores:  # fmt: skip
    """Figures for n labelled faces; ``probs`` rows are ignored (may be NaN) where not readable."""
    y = np.asarray(y_true, np.int64)
    readable = np.asarray(readable, bool)
    n = len(y)
    p = np.asarray(probs, float)[readable]
    yr = y[readable]
    k = len(EXPRESSION_CLASSES)
    pred = p.argmax(1) if len(p) else np.zeros(0, np.int64)
    cm = confusion(yr, pred, k)
    conf = p.max(1) if len(p) else np.zeros(0)
    sure = conf >= threshold

    def acc(m: np.ndarray) -> float:
        return float((pred[m] == yr[m]).mean()) if m.any() else float("nan")

    rec = recalls(cm)
    return Scores(
        faces=n,
        detected=int(np.sum(detected)) if detected is not None else int(readable.sum()),
        readable=int(readable.sum()),
        answered=int(sure.sum()),
        coverage=float(readable.sum() / n) if n else float("nan"),
        accuracy=acc(np.ones(len(yr), bool)),
        macro_f1_5=macro_f1(cm, SCORED_IDX) if len(yr) else float("nan"),
        macro_f1_7=macro_f1(cm) if len(yr) else float("nan"),
        ece=ece(p, yr) if len(yr) else float("nan"),
        accuracy_answered=acc(sure),
        accuracy_uncertain=acc(~sure),
        confident=float(sure.sum() / n) if n else float("nan"),
        recall={c: float(r) for c, r in zip(EXPRESSION_CLASSES, rec)},
        confusion=cm.tolist(),
        reasons=dict(reasons or {}),
    )


# ---- calibration ------------------------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, float)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray, grid: np.ndarray | None = None) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T).

    A 1-D search (log-spaced grid, then a golden-section refinement): no optimiser state, the
    same answer every run. Dividing by T > 0 never changes the top class, only the confidence."""
    z, y = np.asarray(logits, float), np.asarray(y, np.int64)

    def nll(t: float) -> float:
        zt = z / t
        zt = zt - zt.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(zt).sum(1)) - zt[np.arange(len(y)), y]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 60)) if grid is None else grid
    i = int(np.argmin([nll(t) for t in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(40):
        c, d = b - g * (b - a), a + g * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float((a + b) / 2)
