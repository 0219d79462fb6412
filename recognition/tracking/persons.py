"""Assigning a session's tracks to enrolled persons."""

from __future__ import annotations

import numpy as np

from recognition.reid.embedder import EMBEDDING_DIM, pairwise_distance
from recognition.tracking.assignment import linear_sum_assignment


def similarity(distance: np.ndarray | float, threshold: float) -> np.ndarray | float:
    """Map a dlib distance to a [0, 1] score for the UI: 1 at 0, 0.5 at ``threshold``, 0 from 2x threshold."""
    return np.clip(1.0 - np.asarray(distance, np.float64) / (2.0 * threshold), 0.0, 1.0)


def assign_to_persons(
    track_embeddings: np.ndarray,
    person_embeddings: dict[int, np.ndarray],
    threshold: float,
) -> list[tuple[int | None, float]]:
    """Match tracks (m, 128) to enrolled persons {person_id: (k, 128)} one to one.

    The distance between a track and a person is the smallest distance to any of the
    person's enrolled embeddings (a person enrolled from several sessions matches the one
    that looks most alike). Tracks and persons are paired by the Hungarian algorithm on
    those distances, so a person gets at most one track of a session and a track at most
    one person; a pair further than ``threshold`` is not accepted. Returns, per track,
    (person_id or None, similarity in [0, 1] to the assigned person, or to the nearest
    person when unassigned; 0 with no persons or no embedding).
    """
    tracks = np.asarray(track_embeddings, np.float64).reshape(-1, EMBEDDING_DIM)
    ids = list(person_embeddings)
    if not ids or not len(tracks):
        return [(None, 0.0)] * len(tracks)
    dist = np.full((len(tracks), len(ids)), np.inf)
    ok_rows = ~np.isnan(tracks).any(1)
    for k, pid in enumerate(ids):
        emb = np.asarray(person_embeddings[pid], np.float64).reshape(-1, EMBEDDING_DIM)
        emb = emb[~np.isnan(emb).any(1)]
        if len(emb) and ok_rows.any():
            dist[ok_rows, k] = pairwise_distance(tracks[ok_rows], emb).min(1)
    cost = np.where(dist < threshold, dist, 1e6)
    rows, cols = linear_sum_assignment(cost)
    out: list[tuple[int | None, float]] = []
    best = dist.min(1)
    for r in range(len(tracks)):
        out.append((None, float(similarity(best[r], threshold)) if np.isfinite(best[r]) else 0.0))
    for r, c in zip(rows, cols):
        if dist[r, c] < threshold:
            out[r] = (ids[c], float(similarity(dist[r, c], threshold)))
    return out
