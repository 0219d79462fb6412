"""Joining tracks that belong to one person: fragments within a video, tracks across chunks.

Both use one constrained agglomerative linker: candidate pairs are taken cheapest first
and joined unless the two groups may not be one person (they overlap in time, or come
from the same chunk) or their mean embeddings have drifted apart (which stops chains
A~B~C from joining A and C when A and C differ).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from recognition.reid.embedder import EMBEDDING_DIM, pairwise_distance
from recognition.tracking.tracker import TrackerConfig, TrackSummary, motion_cost


def _link(
    n: int,
    pairs: list[tuple[float, int, int, bool]],
    means: np.ndarray,
    weights: np.ndarray,
    compatible: Callable[[list[int], list[int]], bool],
    mean_bar: float,
) -> list[list[int]]:
    """Union items over ``pairs`` (cost < 1, i, j, near), cheapest first; returns groups of item indices.

    Groups join only if ``compatible`` and, unless the pair is ``near`` (one track picks up
    where the other stopped, which already vouches for it), their weighted mean
    embeddings are closer than ``mean_bar``.
    """
    parent = list(range(n))
    members = {i: [i] for i in range(n)}
    mean = {i: means[i].astype(np.float64) for i in range(n)}
    weight = {i: float(weights[i]) for i in range(n)}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j, near in sorted(pairs):
        a, b = root(i), root(j)
        if a == b or not compatible(members[a], members[b]):
            continue
        ma, mb = mean[a], mean[b]
        known_a, known_b = not np.isnan(ma).any(), not np.isnan(mb).any()
        if known_a and known_b and not near and np.linalg.norm(ma - mb) >= mean_bar:
            continue
        parent[b] = a
        members[a] += members.pop(b)
        wa, wb = weight[a], weight.pop(b)
        mb = mean.pop(b)
        if known_a and known_b:
            mean[a] = (ma * wa + mb * wb) / max(wa + wb, 1e-9)
        elif known_b:
            mean[a] = mb
        weight[a] = wa + wb
    return sorted((sorted(m) for m in members.values()), key=lambda m: m[0])


def pair_cost(
    end_t: float, end_box: np.ndarray, start_t: float, start_box: np.ndarray, dist: float, cfg: TrackerConfig
) -> tuple[float, bool] | None:
    """Cost (< 1 to join) of one track continuing as another that starts later, and whether it is ``near``.

    The appearance bar depends on where and when the second track starts, as in the
    tracker: picking up within ``embed_after_gap_s`` at the place the first stopped (the
    tracker's motion gate), the distance must stay under ``appearance_veto``; near the place
    but later, under ``appearance_gate``; anywhere else, under ``reid_threshold``. Without
    embeddings only an immediate pick-up at the same place joins.
    """
    gap = start_t - end_t
    if gap < -0.5 * cfg.embed_after_gap_s:
        return None
    near = bool(np.isfinite(motion_cost(end_box[None], np.array([gap]), start_box[None], cfg)[0, 0]))
    soon = gap < cfg.embed_after_gap_s
    if np.isnan(dist):
        return (0.99, True) if near and soon else None
    bar = cfg.appearance_veto if near and soon else cfg.appearance_gate if near else cfg.reid_threshold
    cost = dist / bar
    return (float(cost), near) if cost < 1 else None


def _span_pairs(
    starts: np.ndarray, ends: np.ndarray, first_boxes: np.ndarray, last_boxes: np.ndarray, dist: np.ndarray,
    allowed: np.ndarray, cfg: TrackerConfig,
) -> list[tuple[float, int, int, bool]]:
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(allowed, 1))):
        a, b = (i, j) if starts[i] <= starts[j] else (j, i)
        got = pair_cost(ends[a], last_boxes[a], starts[b], first_boxes[b], dist[a, b], cfg)
        if got is not None:
            pairs.append((got[0], int(a), int(b), got[1]))
    return pairs


def _mean_distances(means: np.ndarray) -> np.ndarray:
    m = np.asarray(means, np.float64).reshape(-1, EMBEDDING_DIM)
    unknown = np.isnan(m).any(1)
    d = pairwise_distance(np.nan_to_num(m), np.nan_to_num(m))
    d[unknown] = np.nan
    d[:, unknown] = np.nan
    return d


def link_fragments(
    times: Sequence[np.ndarray], boxes: Sequence[np.ndarray], means: Sequence[np.ndarray], cfg: TrackerConfig
) -> list[list[int]]:
    """Group tracks of one video that never overlap in time and look alike (see ``pair_cost``)."""
    n = len(times)
    if n == 0:
        return []
    starts = np.array([t[0] for t in times], np.float64)
    ends = np.array([t[-1] for t in times], np.float64)
    overlap = (starts[:, None] <= ends[None, :]) & (starts[None, :] <= ends[:, None])
    pairs = _span_pairs(
        starts, ends, np.array([b[0] for b in boxes]), np.array([b[-1] for b in boxes]), _mean_distances(means),
        ~overlap, cfg,
    )

    def compatible(a: list[int], b: list[int]) -> bool:
        return not overlap[np.ix_(a, b)].any()

    weights = np.array([len(t) for t in times], np.float64)
    return _link(n, pairs, np.array(means, np.float64).reshape(n, EMBEDDING_DIM), weights, compatible, cfg.reid_threshold)


def link_chunks(
    chunks: list[list[TrackSummary]],
    threshold: float | None = None,
    config: TrackerConfig | None = None,
) -> dict[tuple[int, int], int]:
    """Map (chunk index, local track id) to a global person id across chunks of one video.

    Chunks are consecutive time windows tracked separately (``times`` in session seconds).
    Tracks of different chunks join by the tracker's own rules (``pair_cost``): one that
    picks up at a boundary where another stopped needs only to stay under
    ``appearance_veto``; one that appears elsewhere, later, must be within ``threshold``
    (default: the tracker's ``reid_threshold``) of the other's mean embedding, as a single
    pass would re-identify it. So a chunked run gives the persons of a single pass.
    Tracks of one chunk never join each other. Global ids are numbered 0, 1, ... in order
    of first appearance.
    """
    cfg = config or TrackerConfig()
    if threshold is not None:
        cfg = replace(cfg, reid_threshold=threshold)
    items = [(ci, s) for ci, chunk in enumerate(chunks) for s in chunk]
    n = len(items)
    if n == 0:
        return {}
    chunk_of = np.array([ci for ci, _ in items])
    tracks = [s for _, s in items]
    means = np.array([s.embedding for s in tracks], np.float64).reshape(n, EMBEDDING_DIM)
    pairs = _span_pairs(
        np.array([s.start for s in tracks]), np.array([s.end for s in tracks]),
        np.array([s.boxes[0] for s in tracks]), np.array([s.boxes[-1] for s in tracks]),
        _mean_distances(means), chunk_of[:, None] != chunk_of[None, :], cfg,
    )

    def compatible(x: list[int], y: list[int]) -> bool:
        return not (set(chunk_of[x].tolist()) & set(chunk_of[y].tolist()))

    weights = np.array([max(len(s.embedding_samples), 1) for s in tracks], np.float64)
    groups = _link(n, pairs, means, weights, compatible, cfg.reid_threshold)
    groups.sort(key=lambda g: min((tracks[k].start, chunk_of[k], tracks[k].track_id) for k in g))
    return {(int(chunk_of[k]), tracks[k].track_id): gid for gid, g in enumerate(groups) for k in g}
