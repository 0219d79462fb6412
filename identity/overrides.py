"""Human corrections applied to a fresh analysis: the tracks, or parts of tracks, an identity override
claims go to the person it names, cut the way a person's split cuts them (``affectline.ownership``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol, TypeVar

import numpy as np

from affectline.ownership import bin_owners, fold_edges


class Override(Protocol):
    """An identity override as the roster holds it (``storage.people.OverrideSpec``): who, when, and
    what the face looked like."""

    person_id: int
    t_start: float
    t_end: float
    vector: np.ndarray  # (128,)


R = TypeVar("R")  # a track record: track_key, times, face_boxes, context_boxes, bins, features, embedding, person_id


def apply_overrides(tracks: Sequence[R], overrides: Sequence[Override], threshold: float, tol: float = 0.0) -> list[R]:
    """Give the tracks of a new analysis to the persons human corrections name.

    An override claims the samples of a track that lie within its time range (widened by
    ``tol`` seconds, see ``affectline.ownership.slack``) when the track's embedding is within ``threshold``
    (Euclidean, as dlib's) of the override's. Later overrides win where several claim the
    same samples. A track claimed in part is cut the way ``storage.people.split`` cuts it (``affectline.ownership``): each
    person's part becomes a record of its own (the unclaimed rest keeps the key, other parts
    take the next free keys), bins and feature rows go with the part owning most of their
    samples, and a leftover end shorter than half a bin goes with its neighbour. Claimed
    records have ``person_id`` set and ``match_score`` None (a person's decision, not a
    match); the others are returned unchanged, for embedding matching.
    """
    out: list[R] = []
    next_key = max((t.track_key for t in tracks), default=-1) + 1
    for tr in tracks:
        if not overrides or tr.embedding is None or not len(tr.times) or tr.person_id is not None:
            out.append(tr)
            continue
        times = np.asarray(tr.times, np.float64)
        owner = np.full(len(times), -1, np.int64)
        emb = np.asarray(tr.embedding, np.float32)
        for o in overrides:
            if float(np.linalg.norm(emb - o.vector)) < threshold:
                owner[(times >= o.t_start - tol) & (times <= o.t_end + tol)] = o.person_id
        if (owner < 0).all():
            out.append(tr)
            continue
        starts, ends = (tr.bins[c].to_numpy(np.float64) for c in ("t_start", "t_end"))
        owner = fold_edges(times, owner, float(np.median(ends - starts)) if len(starts) else 0.0)
        bin_owner = bin_owners(times, owner, starts, ends)
        parts = list(dict.fromkeys(owner.tolist()))  # in order of first appearance
        keep_key = -1 if -1 in parts else parts[0]
        for pid in parts:
            m, bm = owner == pid, bin_owner == pid
            if pid == keep_key:
                key = tr.track_key
            else:
                key, next_key = next_key, next_key + 1
            out.append(dataclasses.replace(
                tr, track_key=key, times=tr.times[m], face_boxes=tr.face_boxes[m], context_boxes=tr.context_boxes[m],
                bins=tr.bins[bm].reset_index(drop=True), features=tr.features[bm],
                person_id=None if pid < 0 else int(pid), match_score=None,
            ))  # fmt: skip
    return out
