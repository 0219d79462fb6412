"""CLIP-CAER over per-person windows of 16 samples (4 s at 4 fps), batched across persons."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class CaerWindows:
    """The window model: ``new_stream()`` per chunk; ``name``/``sha256`` for provenance."""

    window = 16

    def __init__(self, scorer):
        self.scorer = scorer
        self.name = scorer.name
        self.sha256 = scorer.sha256 or ""

    def new_stream(self) -> "CaerStream":
        return CaerStream(self.scorer, self.window)


class CaerStream:
    """Collects each track's crops as they arrive and scores full windows in batches across persons.

    Memory is bounded by (active tracks + batch) x 16 crops, never by the video length.
    A track's last, partial window is padded by repeating its last crop (the official
    loader does the same for clips shorter than 16 frames).
    """

    def __init__(self, scorer, window: int):
        self.scorer, self.T = scorer, window
        self.buf: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.results: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)

    def push(self, tid: int, frame: np.ndarray, box: np.ndarray, context: np.ndarray) -> None:
        from recognition.academic.caer_runner import window_crops

        f, c = window_crops([frame], box[None], context[None])
        self.buf[tid].append((f[0], c[0]))
        if len(self.buf[tid]) == self.T:
            self._emit(tid)

    def _emit(self, tid: int) -> None:
        items = self.buf.pop(tid)
        n = len(items)
        items = items + [items[-1]] * (self.T - n)
        self.pending.append((tid, n, np.stack([i[0] for i in items]), np.stack([i[1] for i in items])))
        if len(self.pending) >= self.scorer.batch_size:
            self._score()

    def _score(self) -> None:
        if not self.pending:
            return
        probs = self.scorer.score(np.stack([p[2] for p in self.pending]), np.stack([p[3] for p in self.pending]))
        for (tid, n, _, _), pr in zip(self.pending, probs):
            self.results[tid].append((n, pr))
        self.pending = []

    def flush(self) -> dict[int, list[np.ndarray]]:
        """Score what is left; per track id, one probability row per pushed sample, in push order."""
        for tid in list(self.buf):
            self._emit(tid)
        self._score()
        return {tid: [pr for n, pr in res for _ in range(n)] for tid, res in self.results.items()}
