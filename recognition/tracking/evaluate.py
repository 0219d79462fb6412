"""Identity figures of a tracker run against ground-truth people (tests and bench/identity.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from recognition.detection.evaluate import iou_matrix
from recognition.tracking.tracker import TrackSummary


def label_rows(pred: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """The ground-truth label of each predicted box (one-to-one, Hungarian on IoU); -1 where none."""
    out = np.full(len(pred), -1, np.int64)
    if len(pred) and len(gt_boxes):
        m = iou_matrix(pred, gt_boxes)
        rows, cols = linear_sum_assignment(-m)
        ok = m[rows, cols] >= iou
        out[rows[ok]] = np.asarray(gt_labels)[cols[ok]]
    return out


def final_ids(online_ids: np.ndarray, summaries: list[TrackSummary]) -> np.ndarray:
    """Map ids returned by ``Tracker.update`` to the ids of ``finish``; -1 for dropped tracks."""
    m = {src: s.track_id for s in summaries for src in s.source_ids}
    return np.array([m.get(int(i), -1) for i in np.asarray(online_ids).reshape(-1)], np.int64)


@dataclass
class IdentityFigures:
    """id_switches: consecutive sightings of one person under different ids; fragments: extra ids per
    person; shared_ids: ids given to more than one person; people, ids: counts seen."""

    id_switches: int
    fragments: int
    shared_ids: int
    people: int
    ids: int
    unmatched_rows: int


def identity_figures(times: np.ndarray, people: np.ndarray, ids: np.ndarray) -> IdentityFigures:
    """Figures over rows (time, true person or -1, track id or -1); rows of unknown person or no id are skipped."""
    times, people, ids = np.asarray(times), np.asarray(people), np.asarray(ids)
    ok = (people >= 0) & (ids >= 0)
    switches = fragments = 0
    for p in np.unique(people[ok]):
        sel = ok & (people == p)
        seq = ids[sel][np.argsort(times[sel], kind="stable")]
        switches += int((seq[1:] != seq[:-1]).sum())
        fragments += len(np.unique(seq)) - 1
    shared = sum(len(np.unique(people[ok & (ids == k)])) > 1 for k in np.unique(ids[ok]))
    return IdentityFigures(
        id_switches=switches,
        fragments=fragments,
        shared_ids=int(shared),
        people=len(np.unique(people[ok])),
        ids=len(np.unique(ids[ok])),
        unmatched_rows=int(((people >= 0) & (ids < 0)).sum()),
    )
