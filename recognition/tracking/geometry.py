"""Box geometry shared by the tracker and the linkers: box formats, the motion gate, extrapolation, smoothing."""

from __future__ import annotations

import numpy as np

from recognition.tracking.config import TrackerConfig


def cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) xyxy boxes -> (n, 4) float64 (centre x, centre y, width, height)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def xyxy(c: np.ndarray) -> np.ndarray:
    """(n, 4) (cx, cy, w, h) -> (n, 4) float64 xyxy boxes."""
    c = np.asarray(c, np.float64).reshape(-1, 4)
    return np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)


def motion_cost(ref: np.ndarray, dt: np.ndarray, boxes: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """(m, n) centre distance between reference boxes (m, 4) and boxes (n, 4), over the gate.

    The distance is in face widths (the larger of the two boxes); the gate is
    ``motion_gate`` widened by ``gate_growth_per_s`` for each of the ``dt`` (m,) seconds since
    the reference was seen. Pairs outside the gate, or whose widths differ by more than
    ``max_scale_change``, are inf; the rest lie in [0, 1).
    """
    a, b = cxcywh(ref), cxcywh(boxes)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    width = np.maximum(a[:, None, 2], b[None, :, 2]).clip(1.0)
    cost = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=2) / width
    cost /= cfg.motion_gate * (1 + cfg.gate_growth_per_s * np.maximum(np.asarray(dt, np.float64), 0))[:, None]
    ratio = np.maximum(a[:, None, 2], b[None, :, 2]) / np.minimum(a[:, None, 2], b[None, :, 2]).clip(1.0)
    cost[(cost >= 1) | (ratio > cfg.max_scale_change)] = np.inf
    return cost


def extrapolate(times: np.ndarray, boxes: np.ndarray, t: float, window_s: float = 0.6) -> np.ndarray:
    """Where a track's face box would be at time ``t``: a straight-line fit of its last ``window_s``
    of boxes, run on for at most one second (as the tracker's Kalman prediction is)."""
    times, boxes = np.asarray(times, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4)
    if t <= times[-1]:
        return boxes[-1]
    recent = times >= times[-1] - window_s
    tt, bb = times[recent], cxcywh(boxes[recent])
    if len(tt) < 2 or np.ptp(tt) <= 0:
        return boxes[-1]
    slope = ((tt - tt.mean())[:, None] * (bb - bb.mean(0))).sum(0) / ((tt - tt.mean()) ** 2).sum()
    last = cxcywh(boxes[-1:])[0]
    return xyxy(last + slope * min(t - times[-1], 1.0))[0]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, n) intersection over union of xyxy boxes a (m, 4) and b (n, 4)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def smooth_boxes(times: np.ndarray, boxes: np.ndarray, sigma_s: float) -> np.ndarray:
    """Local linear regression of (cx, cy, w, h) on time with Gaussian weights (sigma ``sigma_s``).

    Unlike a plain moving average it does not drag the first and last boxes of a moving
    face towards the middle of the track, nor lag behind steady motion.
    """
    boxes = np.asarray(boxes, np.float32)
    if sigma_s <= 0 or len(boxes) < 3:
        return boxes.copy()
    t = np.asarray(times, np.float64)
    c = cxcywh(boxes)
    lo = np.searchsorted(t, t - 3 * sigma_s, "left")
    hi = np.searchsorted(t, t + 3 * sigma_s, "right")
    out = c.copy()
    for i in range(len(t)):
        dt = t[lo[i] : hi[i]] - t[i]
        w = np.exp(-0.5 * (dt / sigma_s) ** 2)
        s0, s1, s2 = w.sum(), (w * dt).sum(), (w * dt * dt).sum()
        y = c[lo[i] : hi[i]]
        m0, m1 = (w[:, None] * y).sum(0), (w[:, None] * dt[:, None] * y).sum(0)
        det = s0 * s2 - s1 * s1
        # Intercept of the weighted line fit; a plain weighted mean where the fit is degenerate.
        out[i] = (s2 * m0 - s1 * m1) / det if det > 1e-12 * max(s0 * s2, 1e-12) else m0 / s0
    return xyxy(out).astype(np.float32)
