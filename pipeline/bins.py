"""Per-sample scores -> per-bin timelines on the session's bin grid.

A bin belongs to the chunk whose nominal window holds the bin's start, so concatenating
the bins of consecutive chunks never repeats one; a bin takes every sample of its time
span (the chunk analysed a little beyond its window, so a bin overhanging the window's
end still sees all its frames). The last bin of a clip ends where the clip ends.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from affectline.features import FEATURE_NAMES
from affectline.types import ACADEMIC_CLASSES, EXPRESSION_CLASSES, Segment, TimeGrid
from recognition.face.readability import REASONS

READABILITY_CODES: tuple[str, ...] = ("",) + REASONS
"""Per-sample reason codes: 0 = readable, else 1 + the index in ``REASONS``."""
READABILITY_COLUMNS = ("readable", "unreadable_reason", "pose_reliable")
N_QUALITY = 4  # (coverage, landmarks found, face px, sharpness): see affectline.features


def owned_bins(grid: TimeGrid, window: Segment) -> tuple[int, int]:
    """[first, last) indices of the grid's bins whose start lies in ``window``."""
    lo = int(np.ceil((window.start - grid.start) / grid.step - 1e-9))
    hi = int(np.ceil((window.end - grid.start) / grid.step - 1e-9))
    return lo, max(lo, hi)


def bin_columns() -> list[str]:
    return ["t_start", "t_end", "face_visible", "engagement", *(c.lower() for c in ACADEMIC_CLASSES), *EXPRESSION_CLASSES,
            *READABILITY_COLUMNS]  # fmt: skip


def absent_bins(grid: TimeGrid, index: np.ndarray, duration: float, academic: np.ndarray, engagement: float
                ) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Bins with no face in them (inside a person's span): the cue model's verdict for
    'face not visible' (``academic`` (5,), ``engagement``), features unknown, coverage 0."""
    n = len(index)
    feats = np.full((n, len(FEATURE_NAMES)), np.nan, np.float32)
    feats[:, len(FEATURE_NAMES) - N_QUALITY] = 0.0
    return _frame(grid, np.asarray(index), duration, np.zeros(n, bool), np.full(n, engagement, np.float32),
                  np.tile(np.asarray(academic, np.float32), (n, 1)), np.full((n, 7), np.nan, np.float32)), feats  # fmt: skip


def _frame(grid, index, duration, visible, engagement, academic, expr, readable=None, reason=None,
           pose_ok=None) -> pd.DataFrame:  # fmt: skip
    starts = np.asarray(grid.time(np.asarray(index, np.int64)), np.float64)
    df = pd.DataFrame({"t_start": starts, "t_end": np.minimum(starts + grid.step, duration)})
    df["face_visible"] = visible
    df["engagement"] = engagement
    for j, c in enumerate(ACADEMIC_CLASSES):
        df[c.lower()] = academic[:, j]
    for j, c in enumerate(EXPRESSION_CLASSES):
        df[c] = expr[:, j]
    n = len(df)
    # No face in the bin: nothing was judged (NaN share, no reason).
    df["readable"] = np.full(n, np.nan, np.float32) if readable is None else readable
    df["unreadable_reason"] = pd.Series([None] * n, dtype=object) if reason is None else reason
    df["pose_reliable"] = np.full(n, np.nan, np.float32) if pose_ok is None else pose_ok
    return df


def bin_mean(x: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
    """(nb, k) float32 mean of the rows of ``x`` (n, k) per bin ``b`` (n,) in [0, nb), NaN ignored;
    NaN where a bin has no finite value."""
    n = len(b)
    x = np.asarray(x, np.float32).reshape(n, -1)
    ok = ~np.isnan(x)
    s = np.zeros((nb, x.shape[1]), np.float32)
    c = np.zeros((nb, x.shape[1]), np.float32)
    np.add.at(s, b, np.where(ok, x, 0))
    np.add.at(c, b, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def bin_samples(a: dict[str, np.ndarray], academic: np.ndarray, engagement: np.ndarray, grid: TimeGrid,
                fps: float, duration: float, absent: tuple[np.ndarray, float]) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Average one track's samples into the bins of ``grid`` they fall in, over the track's span.

    ``a`` holds the per-sample arrays (times, blend, pose, expr, found, face_px, sharp, and
    the readability gate's readable, reason code, pose_ok), ``academic`` (n, 5) and
    ``engagement`` (n,) the per-sample scores (NaN where the gate withheld them). Bins inside
    the span without a sample get ``absent_bins`` rows.

    Readability per bin: ``readable`` is the share of its face-frames judged readable (its
    expressions and academic emotions are means over those only), ``pose_reliable`` the share
    whose head pose was reliable, and ``unreadable_reason`` the most frequent reason when none
    was readable (None otherwise).
    """
    t = a["times"]
    n = len(t)
    k = np.asarray(grid.index(t), np.int64)
    first, last = int(k.min()), int(k.max())
    nb = last - first + 1
    b = k - first
    counts = np.bincount(b, minlength=nb).astype(np.float32)

    def mean(x: np.ndarray) -> np.ndarray:
        return bin_mean(x, b, nb)

    vis = counts > 0
    acad, eng, expr = mean(academic), mean(engagement)[:, 0], mean(a["expr"])
    if (~vis).any():
        acad[~vis], eng[~vis] = absent[0], absent[1]
    per_bin = max(1.0, grid.step * fps)
    quality = np.stack([
        np.minimum(counts / per_bin, 1.0),
        mean(a["found"].astype(np.float32))[:, 0],
        mean(a["face_px"])[:, 0],
        mean(a["sharp"])[:, 0],
    ], axis=1)  # fmt: skip
    feats = np.concatenate([mean(a["blend"]), mean(a["pose"]), expr, quality], axis=1)
    assert feats.shape[1] == len(FEATURE_NAMES)
    n_ok = np.ones(n, bool) if "readable" not in a else np.asarray(a["readable"], bool)
    p_ok = n_ok if "pose_ok" not in a else np.asarray(a["pose_ok"], bool)
    codes = np.zeros(n, np.int64) if "reason" not in a else np.asarray(a["reason"], np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(vis, np.bincount(b, n_ok, nb) / np.maximum(counts, 1), np.nan).astype(np.float32)
        pose_share = np.where(vis, np.bincount(b, p_ok, nb) / np.maximum(counts, 1), np.nan).astype(np.float32)
    per_reason = np.zeros((nb, len(READABILITY_CODES)), np.int64)
    np.add.at(per_reason, (b, codes), 1)
    top = per_reason[:, 1:].argmax(axis=1) + 1  # the most frequent reason (the first on ties: size before the rest)
    reason = pd.Series([READABILITY_CODES[c] if v and r == 0 else None for c, v, r in zip(top, vis, share)],
                       dtype=object)  # fmt: skip
    df = _frame(grid, first + np.arange(nb), duration, vis, eng, acad, expr, share, reason, pose_share)
    return df, feats.astype(np.float32)
