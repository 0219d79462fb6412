"""Online face tracker: constant-velocity motion, dlib appearance, re-identification of lost tracks.

Per frame (``update``), in the spirit of ByteTrack with DeepSORT's appearance term:

1. Every track's box is predicted to the frame time by a constant-velocity Kalman filter.
2. Confident detections are matched to recently seen tracks (Hungarian) on a cost that
   mixes the centre distance (in face widths, gated) and, where both sides have one,
   the embedding distance (gated: faces further apart than ``appearance_veto``, or than
   ``appearance_gate`` for a track unseen a moment, are never the same track, which is
   what stops id switches when people cross).
3. Less confident detections only extend the remaining recent tracks, on motion alone,
   so a face that turns away or is half hidden keeps its track.
4. Detections still unmatched are compared by embedding with every track not seen in
   this frame (lost ones included, up to ``reid_window_s``): within ``reid_threshold``
   anywhere, or ``appearance_gate`` near where the track was lost (someone reappearing
   from behind another person), a person who left and came back gets their old id.
5. Confident detections left over start new tracks; the rest get track id -1.

Embeddings are expensive (about 0.1 s a face with dlib on CPU), so ``needs_embedding``
says which detections of a frame need one: new or re-appearing faces, ambiguous
matches (two faces near one track, or one face near two tracks), tracks due for a fresh
view (0.5 s after the first, doubling up to every ``embed_every_s``), and none of the
faces below ``min_embed_px``. Rows
without an embedding carry NaN and are tracked by motion.

``finish`` links fragments of one person (non-overlapping in time, alike by the rules of
``merge.pair_cost``), drops tracks shorter than ``min_hits`` detections and smooths boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from affectline.types import Detections
from recognition.reid.embedder import EMBEDDING_DIM, pairwise_distance, robust_mean
from recognition.tracking.assignment import linear_sum_assignment
from recognition.tracking.config import TrackerConfig, TrackSummary
from recognition.tracking.geometry import cxcywh, motion_cost, smooth_boxes, xyxy
from recognition.tracking.merge import link_fragments

_INF = 1e6


class _Kalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h) with continuous time steps.

    Process noise is white acceleration scaled by the face height, so a big (near) face
    is allowed to move more pixels than a small one.
    """

    ACC = np.array([1.5, 1.5, 0.5, 0.5])  # face heights / s^2
    MEAS = np.array([0.05, 0.05, 0.08, 0.08])  # face heights

    def __init__(self, z: np.ndarray) -> None:
        self.x = np.concatenate([z, np.zeros(4)])
        h = max(z[3], 1.0)
        self.P = np.diag(np.concatenate([(self.MEAS * h) ** 2, (np.full(4, 1.0) * h) ** 2]))

    def predicted(self, dt: float) -> np.ndarray:
        # Extrapolating velocity beyond a second mostly adds error (people stop and turn).
        return self.x[:4] + min(max(dt, 0.0), 1.0) * self.x[4:]

    def predict(self, dt: float) -> None:
        dt = min(max(dt, 0.0), 1.0)
        F = np.eye(8)
        F[:4, 4:] = np.eye(4) * dt
        q = (self.ACC * max(self.x[3], 1.0)) ** 2
        Q = np.zeros((8, 8))
        Q[:4, :4] = np.diag(q * dt**3 / 3)
        Q[:4, 4:] = Q[4:, :4] = np.diag(q * dt**2 / 2)
        Q[4:, 4:] = np.diag(q * dt)
        self.x = F @ self.x
        self.P = F @ self.P @ F.T + Q

    def update(self, z: np.ndarray) -> None:
        R = np.diag((self.MEAS * max(z[3], 1.0)) ** 2)
        S = self.P[:4, :4] + R
        K = self.P[:, :4] @ np.linalg.inv(S)
        self.x = self.x + K @ (z - self.x[:4])
        self.P = self.P - K @ self.P[:4, :]


@dataclass
class _Track:
    id: int
    kf: _Kalman
    times: list[float] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    emb_times: list[float] = field(default_factory=list)
    embs: list[np.ndarray] = field(default_factory=list)  # every embedding seen (for the summary)
    gallery: list[np.ndarray] = field(default_factory=list)  # bounded set used for matching

    @property
    def last_t(self) -> float:
        return self.times[-1]

    @property
    def last_emb_t(self) -> float | None:
        return self.emb_times[-1] if self.emb_times else None

    def add(self, t: float, box: np.ndarray, score: float, emb: np.ndarray | None, gallery_size: int) -> None:
        if self.times:
            self.kf.predict(t - self.last_t)
            self.kf.update(cxcywh(box)[0])
        self.times.append(t)
        self.boxes.append(np.asarray(box, np.float32))
        self.scores.append(float(score))
        if emb is not None:
            self.emb_times.append(t)
            self.embs.append(emb)
            self.gallery.append(emb)
            if len(self.gallery) > gallery_size:
                # Drop the embedding closest to another one: keeps the gallery's spread of poses.
                d = pairwise_distance(np.array(self.gallery), np.array(self.gallery))
                np.fill_diagonal(d, np.inf)
                self.gallery.pop(int(d.min(1).argmin()))


class Tracker:
    """Assigns stable ids to faces over time; see the module docstring for the algorithm.

    >>> tr = Tracker()
    >>> need = tr.needs_embedding(dets, t)          # optional: which rows to embed
    >>> dets.data["embedding"] = ...                 # (n, 128), NaN rows where not embedded
    >>> dets = tr.update(dets, t)                    # dets.track_id filled, -1 where rejected
    >>> tracks = tr.finish()                         # after the last frame
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again at 0."""
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_t: float | None = None

    # -- association -----------------------------------------------------------------
    def _recent(self, t: float) -> list[_Track]:
        return [tr for tr in self._tracks if t - tr.last_t <= self.config.max_gap_s]

    @staticmethod
    def _predicted(tracks: list[_Track], t: float) -> np.ndarray:
        """(tracks, 4) xyxy boxes: each track's Kalman prediction at ``t``."""
        return xyxy(np.array([tr.kf.predicted(t - tr.last_t) for tr in tracks]).reshape(-1, 4))

    def _motion_cost(self, tracks: list[_Track], dets: Detections, t: float) -> np.ndarray:
        """(tracks, dets) gated motion cost against each track's Kalman prediction at ``t``."""
        return motion_cost(self._predicted(tracks, t), np.array([t - tr.last_t for tr in tracks]), dets.boxes, self.config)

    def _app_dist(self, tracks: list[_Track], emb: np.ndarray) -> np.ndarray:
        """(tracks, dets) smallest distance between a detection and a track's gallery; NaN if unknown."""
        out = np.full((len(tracks), len(emb)), np.nan)
        known = ~np.isnan(emb).any(1)
        if not known.any():
            return out
        for i, tr in enumerate(tracks):
            if tr.gallery:
                out[i, known] = pairwise_distance(np.array(tr.gallery), emb[known]).min(0)
        return out

    def _embeddings(self, dets: Detections) -> np.ndarray:
        emb = dets.data.get("embedding")
        if emb is None:
            return np.full((len(dets), EMBEDDING_DIM), np.nan)
        emb = np.asarray(emb, np.float64)
        if emb.shape != (len(dets), EMBEDDING_DIM):
            raise ValueError(f"dets.data['embedding'] must be ({len(dets)}, {EMBEDDING_DIM}), got {emb.shape}")
        emb = emb.copy()
        emb[dets.widths < self.config.min_embed_px] = np.nan  # too small to trust
        return emb

    @staticmethod
    def _assign(cost: np.ndarray) -> list[tuple[int, int]]:
        if cost.size == 0:
            return []
        finite = np.where(np.isfinite(cost), cost, _INF)
        rows, cols = linear_sum_assignment(finite)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if finite[r, c] < _INF]

    def expected_boxes(self, t: float) -> tuple[np.ndarray, int]:
        """Where the recent tracks' faces should be at time ``t`` (Kalman prediction): (k, 4)
        xyxy boxes, and how many of those tracks were seen in the previous frame."""
        tracks = self._recent(t)
        return self._predicted(tracks, t).astype(np.float32), sum(tr.last_t == self._last_t for tr in tracks)

    def needs_embedding(self, dets: Detections, t: float) -> np.ndarray:
        """(n,) bool: the rows whose embedding would change or check a decision in ``update``."""
        c = self.config
        n = len(dets)
        big = dets.widths >= c.min_embed_px
        if n == 0:
            return np.zeros(0, bool)
        tracks = self._recent(t)
        gated = np.isfinite(self._motion_cost(tracks, dets, t))
        need = np.zeros(n, bool)
        for j in range(n):
            cand = np.flatnonzero(gated[:, j])
            if len(cand) != 1 or gated[cand[0]].sum() > 1:
                need[j] = True  # new face, or ambiguous between neighbours
                continue
            tr = tracks[cand[0]]
            last = tr.last_emb_t
            every = min(c.embed_every_s, c.embed_first_s * 2 ** max(len(tr.embs) - 1, 0))
            need[j] = last is None or t - last >= every or t - tr.last_t >= c.embed_after_gap_s
        return need & big

    def update(self, dets: Detections, t: float) -> Detections:
        """Give each detection of the frame at time ``t`` (seconds) a track id; -1 for rejected rows.

        ``dets.data["embedding"]`` (n, 128) is used where present and not NaN; without it the
        tracker works on motion alone.
        """
        c = self.config
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frame time {t} is before the previous frame's {self._last_t}; call reset() first")
        self._last_t = t
        n = len(dets)
        emb = self._embeddings(dets)
        ids = np.full(n, -1, np.int64)
        high = dets.scores >= c.high_score
        low = (dets.scores >= c.low_score) & ~high
        recent = self._recent(t)
        taken_tracks: set[int] = set()

        # 1. Confident detections against recent tracks: motion + appearance.
        hi = np.flatnonzero(high)
        cost = self._motion_cost(recent, dets[hi], t) if len(hi) else np.zeros((len(recent), 0))
        if len(hi) and recent:
            app = self._app_dist(recent, emb[hi])
            both = ~np.isnan(app)
            unseen = np.array([t - tr.last_t >= c.embed_after_gap_s for tr in recent])[:, None]
            bar = np.where(unseen, c.appearance_gate, c.appearance_veto)
            cost = np.where(both & (app > bar), np.inf, cost)
            mixed = (1 - c.appearance_weight) * cost + c.appearance_weight * app / c.appearance_veto
            cost = np.where(both, mixed, cost)
        for r, k in self._assign(cost):
            ids[hi[k]] = recent[r].id
            taken_tracks.add(recent[r].id)

        # 2. Less confident detections extend the remaining recent tracks on motion alone.
        rest = [tr for tr in recent if tr.id not in taken_tracks]
        lo = np.flatnonzero(low)
        if len(lo) and rest:
            for r, k in self._assign(self._motion_cost(rest, dets[lo], t)):
                ids[lo[k]] = rest[r].id
                taken_tracks.add(rest[r].id)

        # 3. Unmatched confident faces with an embedding: re-identify against tracks not seen now,
        #    anywhere within reid_threshold, or within appearance_gate near where the track was lost.
        open_ = np.flatnonzero(high & (ids < 0) & ~np.isnan(emb).any(1))
        pool = [
            tr
            for tr in self._tracks
            if tr.id not in taken_tracks and tr.last_t < t and t - tr.last_t <= c.reid_window_s
        ]
        if len(open_) and pool:
            app = self._app_dist(pool, emb[open_])
            last = np.array([tr.boxes[-1] for tr in pool])
            away = np.array([t - tr.last_t for tr in pool])
            near = np.isfinite(motion_cost(last, away, dets.boxes[open_], c)) & (away <= c.near_reid_s)[:, None]
            ok = np.nan_to_num(app, nan=np.inf) < np.where(near, c.appearance_gate, c.reid_threshold)
            for r, k in self._assign(np.where(ok, app, np.inf)):
                ids[open_[k]] = pool[r].id
                taken_tracks.add(pool[r].id)

        # 4. New tracks for the confident faces left over.
        by_id = {tr.id: tr for tr in self._tracks}
        for j in np.flatnonzero(high & (ids < 0)):
            tr = _Track(self._next_id, _Kalman(cxcywh(dets.boxes[j])[0]))
            self._tracks.append(tr)
            by_id[tr.id] = tr
            ids[j] = tr.id
            self._next_id += 1
        for j in np.flatnonzero(ids >= 0):
            e = None if np.isnan(emb[j]).any() else emb[j].astype(np.float32)
            by_id[int(ids[j])].add(t, dets.boxes[j], float(dets.scores[j]), e, c.gallery_size)

        return Detections(dets.boxes, dets.scores, ids, dict(dets.data))

    # -- end of video ------------------------------------------------------------------
    def finish(self) -> list[TrackSummary]:
        """Final tracks after the last frame: fragments joined, short tracks dropped, boxes smoothed."""
        c = self.config
        groups = link_fragments(
            [np.array(tr.times) for tr in self._tracks],
            [np.array(tr.boxes) for tr in self._tracks],
            [np.array(tr.embs).reshape(-1, EMBEDDING_DIM) for tr in self._tracks],
            c,
        )
        out = []
        first = min((tr.times[0] for tr in self._tracks), default=0.0)
        for members in groups:
            parts = [self._tracks[i] for i in members]
            times = np.concatenate([p.times for p in parts])
            # A short track at the first or last frame may go on in the neighbouring chunk: keep it.
            at_edge = times.min() <= first or times.max() >= (self._last_t or 0.0)
            if len(times) < c.min_hits and not at_edge:
                continue
            order = np.argsort(times, kind="stable")
            boxes = np.concatenate([np.array(p.boxes) for p in parts])[order]
            scores = np.concatenate([p.scores for p in parts])[order]
            emb_t = np.concatenate([p.emb_times for p in parts]) if any(p.embs for p in parts) else np.zeros(0)
            embs = np.concatenate([np.array(p.embs) for p in parts if p.embs]) if len(emb_t) else np.zeros((0, 128))
            embs = embs[np.argsort(emb_t, kind="stable")]
            pick = np.unique(np.linspace(0, len(embs) - 1, min(len(embs), c.summary_samples)).round().astype(int))
            out.append(
                TrackSummary(
                    track_id=min(p.id for p in parts),
                    times=times[order].astype(np.float64),
                    boxes=smooth_boxes(times[order], boxes, c.smooth_sigma_s),
                    scores=scores.astype(np.float32),
                    embedding=robust_mean(embs),
                    embedding_samples=embs[pick].astype(np.float32) if len(embs) else np.zeros((0, 128), np.float32),
                    source_ids=tuple(sorted(p.id for p in parts)),
                )
            )
        return sorted(out, key=lambda s: s.track_id)


__all__ = ["Tracker", "TrackerConfig", "TrackSummary", "smooth_boxes"]
