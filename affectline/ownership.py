"""Which part of a track each sample and bin belongs to when a track is cut by time ranges: shared by a
person's split (``storage.people.split``) and by the human corrections a re-analysis applies
(``identity.overrides``), so both cut a track the same way. Plain arrays in, plain arrays out."""

from __future__ import annotations

import numpy as np


def slack(analysis_fps: float | None) -> float:
    """How far (s) outside an override's range a sample may lie and still be claimed: half a
    sampling interval, so a re-analysis at the same rate claims exactly the same samples and
    one at another rate the nearest ones."""
    return 0.5 / analysis_fps if analysis_fps else 0.0


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of a 1-d mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def fold_edges(times: np.ndarray, owner: np.ndarray, bin_seconds: float) -> np.ndarray:
    """Give an unclaimed (-1) leftover at either end of a track, reaching at most half a bin
    beyond the claimed part next to it, to that part: it would be a track without a timeline
    of its own, and a re-analysis at a higher rate than the correction's adds such ends."""
    owner = owner.copy()
    claimed = np.flatnonzero(owner >= 0)
    if not len(claimed):
        return owner
    first, last = claimed[0], claimed[-1]
    if first > 0 and times[first] - times[0] <= bin_seconds / 2 + 1e-6:
        owner[:first] = owner[first]
    if last < len(times) - 1 and times[-1] - times[last] <= bin_seconds / 2 + 1e-6:
        owner[last + 1 :] = owner[last]
    return owner


def bin_owners(times: np.ndarray, owner: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The owner of each bin: whoever owns most of its samples (ties: the lowest label, so
    the unclaimed rest); a bin without samples goes to the owner of the nearest sample."""
    out = np.empty(len(starts), np.int64)
    for j, (a, b) in enumerate(zip(starts, ends)):
        m = (times >= a) & (times < b)
        if m.any():
            labels, counts = np.unique(owner[m], return_counts=True)
            out[j] = labels[np.argmax(counts)]
        else:
            out[j] = owner[np.argmin(np.abs(times - (a + b) / 2))]
    return out
