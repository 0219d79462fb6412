"""Scoring detections against annotated faces (used by the tests and bench/identity.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a (n, 4) and b (m, 4)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Score:
    """Counts over annotated faces: hits, misses and detections on no face."""

    tp: int = 0
    fn: int = 0
    fp: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)


def score_frame(pred: np.ndarray, faces: np.ndarray, hard: np.ndarray | None = None, iou: float = 0.3) -> Score:
    """One-to-one matching (Hungarian on IoU) of predicted boxes to annotated faces.

    A prediction that matches no face but overlaps a 'hard' face (profile, occluded) by
    ``iou`` is ignored rather than counted as a false positive. The IoU bar is low (0.3)
    because detectors draw face boxes of different extents (dlib's are square and lower).
    """
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    faces = np.asarray(faces, np.float64).reshape(-1, 4)
    matched = np.zeros(len(pred), bool)
    tp = 0
    if len(pred) and len(faces):
        m = iou_matrix(pred, faces)
        rows, cols = linear_sum_assignment(-m)
        ok = m[rows, cols] >= iou
        matched[rows[ok]] = True
        tp = int(ok.sum())
    rest = ~matched
    if hard is not None and len(hard) and rest.any():
        rest[rest] = iou_matrix(pred[rest], hard).max(1) < iou
    return Score(tp=tp, fn=len(faces) - tp, fp=int(rest.sum()))
