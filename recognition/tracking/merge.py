"""Joining tracks that belong to one person: fragments within a video, tracks across chunks.

Both follow the tracker's own rules (``pair_cost``), so that what a single pass would
have kept together is joined again. One constrained agglomerative linker does the work:
candidate pairs are taken cheapest first and joined unless the two groups may not be
one person (they overlap in time, or come from the same chunk) or their mean embeddings
have drifted apart (which stops chains A~B~C from joining A and C when A and C differ).
It runs again on the joined groups until nothing changes, since a joined group knows
its direction of motion better than its pieces (a fast walker seen at 4 fps leaves a
trail of one-detection tracks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from recognition.reid.embedder import EMBEDDING_DIM, pairwise_distance, robust_mean
from recognition.tracking.config import TrackerConfig, TrackSummary
from recognition.tracking.geometry import extrapolate, motion_cost


def pair_cost(
    end_t: float, end_box: np.ndarray, start_t: float, start_box: np.ndarray, dist: float, cfg: TrackerConfig
) -> tuple[float, bool] | None:
    """Cost (in [0, 1)) of one track continuing as another that starts later, and whether it is ``near``;
    None when they cannot be one person.

    Mirrors the tracker's own decisions. Starting where the first track was heading
    (``end_box``, extrapolated to ``start_t``; the tracker's motion gate) within
    ``max_gap_s``, it is the same track by motion; with embeddings on both sides they must
    also stay under ``appearance_veto`` (within ``embed_after_gap_s``) or
    ``appearance_gate`` (later). Near but later (up to ``near_reid_s``), only appearance
    under ``appearance_gate`` joins; anywhere else, under ``reid_threshold``. Without
    embeddings only a motion continuation joins.
    """
    gap = start_t - end_t
    if gap < -0.5 * cfg.embed_after_gap_s:
        return None
    motion = float(motion_cost(end_box[None], np.array([gap]), start_box[None], cfg)[0, 0])
    near = bool(np.isfinite(motion)) and gap <= cfg.near_reid_s
    by_motion = near and gap <= cfg.max_gap_s
    if np.isnan(dist):
        return (motion, True) if by_motion else None
    if by_motion:
        bar = cfg.appearance_veto if gap < cfg.embed_after_gap_s else cfg.appearance_gate
    else:
        bar = cfg.appearance_gate if near else cfg.reid_threshold
    if dist >= bar:
        return None
    w = cfg.appearance_weight
    return ((1 - w) * motion + w * dist / bar if by_motion else dist / bar), near


@dataclass
class _Piece:
    """A track, or a group of tracks already joined: what the linker compares."""

    members: list[int]
    times: np.ndarray  # sorted
    boxes: np.ndarray
    spans: list[tuple[float, float]]  # (start, end) of each member track
    chunks: set[int]
    mean: np.ndarray  # (128,) NaN when no embedding
    weight: float
    samples: np.ndarray  # (k, 128) a few views, as the tracker's gallery

    @classmethod
    def join(cls, parts: list[_Piece]) -> _Piece:
        times = np.concatenate([p.times for p in parts])
        order = np.argsort(times, kind="stable")
        known = [p for p in parts if not np.isnan(p.mean).any()]
        w = sum(p.weight for p in known)
        mean = sum(p.mean * p.weight for p in known) / w if known and w > 0 else np.full(EMBEDDING_DIM, np.nan)
        return cls(
            members=sorted(m for p in parts for m in p.members),
            times=times[order],
            boxes=np.concatenate([p.boxes for p in parts])[order],
            spans=[s for p in parts for s in p.spans],
            chunks=set().union(*(p.chunks for p in parts)),
            mean=mean,
            weight=sum(p.weight for p in parts),
            samples=_spread(np.concatenate([p.samples for p in parts])),
        )


def _spread(samples: np.ndarray, k: int = 16) -> np.ndarray:
    samples = np.asarray(samples, np.float64).reshape(-1, EMBEDDING_DIM)
    samples = samples[~np.isnan(samples).any(1)]
    return samples if len(samples) <= k else samples[np.linspace(0, len(samples) - 1, k).round().astype(int)]


def _compatible(a: _Piece, b: _Piece) -> bool:
    """Never one person: two tracks of one chunk, or two tracks at the same time."""
    if a.chunks & b.chunks:
        return False
    return not any(s0 <= e1 and s1 <= e0 for s0, e0 in a.spans for s1, e1 in b.spans)


def _pairs(pieces: list[_Piece], cfg: TrackerConfig) -> list[tuple[float, int, int, bool]]:
    n = len(pieces)
    m = np.array([p.mean for p in pieces], np.float64).reshape(n, EMBEDDING_DIM)
    unknown = np.isnan(m).any(1)
    dist = pairwise_distance(np.nan_to_num(m), np.nan_to_num(m))
    dist[unknown] = np.nan
    dist[:, unknown] = np.nan
    starts = np.array([p.times[0] for p in pieces])
    ends = np.array([p.times[-1] for p in pieces])
    # Cheap vectorised screen before the per-pair rules (which also look at the closest views):
    # mean embeddings under the veto, and beyond near_reid_s under reid_threshold; without
    # embeddings, a follow-up within max_gap_s.
    first_end = np.where(starts[:, None] <= starts[None, :], ends[:, None], ends[None, :])
    gaps = np.maximum(starts[:, None], starts[None, :]) - first_end
    maybe = np.where(np.isnan(dist), gaps <= cfg.max_gap_s, dist < cfg.appearance_veto)
    maybe &= (gaps >= -0.5 * cfg.embed_after_gap_s) & (
        np.isnan(dist) | (dist < cfg.reid_threshold) | (gaps <= cfg.near_reid_s)
    )
    out = []
    for i, j in zip(*np.nonzero(np.triu(maybe, 1))):
        a, b = (i, j) if starts[i] <= starts[j] else (j, i)
        pa, pb = pieces[a], pieces[b]
        if not _compatible(pa, pb):
            continue
        # Like the tracker: the closest pair of views counts, and only a motion continuation
        # (within max_gap_s) is extrapolated; a re-identification looks at the last place seen.
        d = float(dist[a, b])
        if len(pa.samples) and len(pb.samples):
            d = min(d, float(pairwise_distance(pa.samples, pb.samples).min()))
        gap = starts[b] - ends[a]
        head = extrapolate(pa.times, pa.boxes, starts[b]) if gap <= cfg.max_gap_s else pa.boxes[-1]
        got = pair_cost(float(ends[a]), head, float(starts[b]), pb.boxes[0], d, cfg)
        if got is not None:
            out.append((got[0], int(a), int(b), got[1]))
    return out


def _link_once(pieces: list[_Piece], pairs: list[tuple[float, int, int, bool]], mean_bar: float) -> list[_Piece]:
    """Union pieces over ``pairs``, cheapest first (see the module docstring)."""
    parent = list(range(len(pieces)))
    group = {i: pieces[i] for i in range(len(pieces))}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j, near in sorted(pairs):
        a, b = root(i), root(j)
        if a == b or not _compatible(group[a], group[b]):
            continue
        ma, mb = group[a].mean, group[b].mean
        if not near and not (np.isnan(ma).any() or np.isnan(mb).any()) and np.linalg.norm(ma - mb) >= mean_bar:
            continue
        parent[b] = a
        group[a] = _Piece.join([group[a], group.pop(b)])
    return list(group.values())


def _link(pieces: list[_Piece], cfg: TrackerConfig, max_rounds: int = 5) -> list[list[int]]:
    for _ in range(max_rounds):
        joined = _link_once(pieces, _pairs(pieces, cfg), cfg.reid_threshold)
        done = len(joined) == len(pieces)
        pieces = joined
        if done:
            break
    return sorted((p.members for p in pieces), key=lambda m: m[0])


def link_fragments(
    times: Sequence[np.ndarray], boxes: Sequence[np.ndarray], embeddings: Sequence[np.ndarray], cfg: TrackerConfig
) -> list[list[int]]:
    """Group tracks of one video that never overlap in time and are one person by ``pair_cost``.

    ``embeddings[i]`` holds all (k, 128) embeddings of track i (k may be 0).
    """
    pieces = []
    for i, (t, b, e) in enumerate(zip(times, boxes, embeddings)):
        e = np.asarray(e, np.float64).reshape(-1, EMBEDDING_DIM)
        span = [(float(t[0]), float(t[-1]))]
        pieces.append(
            _Piece(
                [i],
                np.asarray(t, np.float64),
                np.asarray(b, np.float64),
                span,
                set(),
                robust_mean(e).astype(np.float64),
                float(max(len(e), 1)),
                _spread(e),
            )
        )
    return _link(pieces, cfg) if pieces else []


def match_by_overlap(
    left: Sequence[tuple[np.ndarray, np.ndarray]],
    right: Sequence[tuple[np.ndarray, np.ndarray]],
    min_iou: float = 0.5,
) -> list[tuple[int, int]]:
    """Pairs (i, j) of tracks of two neighbouring chunks that are one face in the frames both analysed.

    ``left[i]`` and ``right[j]`` are (times (n,), xyxy boxes (n, 4)) of each track in the
    overlap of the two chunks. Both chunks decode the same frames there, so one face
    gives boxes at the same times on both sides; two faces of one frame never overlap by
    ``min_iou`` (the detector's NMS removes such pairs). A pair's score is the number of
    shared times where its boxes overlap by ``min_iou``; a pair counts when that is more
    than half of its shared times, and each track is paired at most once (Hungarian, most
    agreement first).
    """
    from recognition.tracking.assignment import linear_sum_assignment

    from recognition.tracking.geometry import iou

    if not len(left) or not len(right):
        return []
    agree = np.zeros((len(left), len(right)))
    for i, (ta, ba) in enumerate(left):
        ka = np.round(np.asarray(ta, np.float64) * 1000).astype(np.int64)
        for j, (tb, bb) in enumerate(right):
            kb = np.round(np.asarray(tb, np.float64) * 1000).astype(np.int64)
            common, ia, ib = np.intersect1d(ka, kb, return_indices=True)
            if not len(common):
                continue
            ok = np.diag(iou(np.asarray(ba)[ia], np.asarray(bb)[ib])) >= min_iou
            if ok.sum() * 2 > len(common):
                agree[i, j] = ok.sum()
    rows, cols = linear_sum_assignment(-agree)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if agree[r, c] > 0]


def link_chunks(
    chunks: list[list[TrackSummary]],
    threshold: float | None = None,
    config: TrackerConfig | None = None,
    joined: Sequence[tuple[tuple[int, int], tuple[int, int]]] = (),
) -> dict[tuple[int, int], int]:
    """Map (chunk index, local track id) to a global person id across chunks of one video.

    Chunks are consecutive time windows tracked separately (``times`` in session seconds).
    Tracks of different chunks join by the tracker's own rules (``pair_cost``): one that
    picks up at a boundary where another was heading continues it as the tracker's
    motion match would (unless their faces are further apart than ``appearance_veto``);
    one that appears elsewhere, later, must be within ``threshold`` (default: the
    tracker's ``reid_threshold``) of the other's mean embedding, as a single pass would
    re-identify it. So a chunked run gives the persons of a single pass. Tracks of one
    chunk never join each other. ``joined`` lists pairs of (chunk, track id) known to be
    one person already (seen in the overlap of two chunks, ``match_by_overlap``): they are
    joined first. Global ids are numbered 0, 1, ... in order of first appearance.
    """
    cfg = config or TrackerConfig()
    if threshold is not None:
        cfg = replace(cfg, reid_threshold=threshold)
    items = [(ci, s) for ci, chunk in enumerate(chunks) for s in chunk]
    if not items:
        return {}
    pieces = [
        _Piece(
            [k],
            np.asarray(s.times, np.float64),
            np.asarray(s.boxes, np.float64),
            [(s.start, s.end)],
            {ci},
            np.asarray(s.embedding, np.float64),
            float(max(len(s.embedding_samples), 1)),
            _spread(s.embedding_samples),
        )
        for k, (ci, s) in enumerate(items)
    ]
    if joined:
        pieces = _join_known(pieces, items, joined)
    groups = _link(pieces, cfg)
    groups.sort(key=lambda g: min((items[k][1].start, items[k][0], items[k][1].track_id) for k in g))
    return {(items[k][0], items[k][1].track_id): gid for gid, g in enumerate(groups) for k in g}


def _join_known(pieces: list[_Piece], items, joined) -> list[_Piece]:
    """Union the pieces named in ``joined`` (pairs of (chunk, track id)) before linking the rest."""
    key = {(ci, s.track_id): k for k, (ci, s) in enumerate(items)}
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in joined:
        if a in key and b in key:
            ra, rb = root(key[a]), root(key[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[_Piece]] = {}
    for k, p in enumerate(pieces):
        groups.setdefault(root(k), []).append(p)
    return [g[0] if len(g) == 1 else _Piece.join(g) for g in groups.values()]
