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

N_QUALITY = 4  # (coverage, landmarks found, face px, sharpness): see affectline.features


def owned_bins(grid: TimeGrid, window: Segment) -> tuple[int, int]:
    """[first, last) indices of the grid's bins whose start lies in ``window``."""
    lo = int(np.ceil((window.start - grid.start) / grid.step - 1e-9))
    hi = int(np.ceil((window.end - grid.start) / grid.step - 1e-9))
    return lo, max(lo, hi)


def bin_columns() -> list[str]:
    return ["t_start", "t_end", "face_visible", "engagement", *(c.lower() for c in ACADEMIC_CLASSES), *EXPRESSION_CLASSES]


def absent_bins(grid: TimeGrid, index: np.ndarray, duration: float, academic: np.ndarray, engagement: float
                ) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """Bins with no face in them (inside a person's span): the cue model's verdict for
    'face not visible' (``academic`` (5,), ``engagement``), features unknown, coverage 0."""
    n = len(index)
    feats = np.full((n, len(FEATURE_NAMES)), np.nan, np.float32)
    feats[:, len(FEATURE_NAMES) - N_QUALITY] = 0.0
    return _frame(grid, np.asarray(index), duration, np.zeros(n, bool), np.full(n, engagement, np.float32),
                  np.tile(np.asarray(academic, np.float32), (n, 1)), np.full((n, 7), np.nan, np.float32)), feats  # fmt: skip


def _frame(grid, index, duration, visible, engagement, academic, expr) -> pd.DataFrame:
    starts = np.asarray(grid.time(np.asarray(index, np.int64)), np.float64)
    df = pd.DataFrame({"t_start": starts, "t_end": np.minimum(starts + grid.step, duration)})
    df["face_visible"] = visible
    df["engagement"] = engagement
    for j, c in enumerate(ACADEMIC_CLASSES):
        df[c.lower()] = academic[:, j]
    for j, c in enumerate(EXPRESSION_CLASSES):
        df[c] = expr[:, j]
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

    ``a`` holds the per-sample arrays (times, blend, pose, expr, found, face_px, sharp),
    ``academic`` (n, 5) and ``engagement`` (n,) the per-sample scores. Bins inside the
    span without a sample get ``absent_bins`` rows.
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
    df = _frame(grid, first + np.arange(nb), duration, vis, eng, acad, expr)
    return df, feats.astype(np.float32)
