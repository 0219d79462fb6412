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
from scipy.optimize import linear_sum_assignment

from affectline.types import Detections
from recognition.reid.embedder import EMBEDDING_DIM, pairwise_distance, robust_mean

_INF = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds; each trades one failure for another (times in seconds)."""

    high_score: float = 0.8
    """Detections at or above this start tracks and are matched first. Lower: faint
    detections (often false) start tracks; higher: a face must be clear to get a track."""
    low_score: float = 0.5
    """Detections in [low_score, high_score) only extend existing tracks, on motion alone
    (ByteTrack's second pass). Lower: tracks survive worse views but may swallow a false
    detection next to them."""
    motion_gate: float = 1.0
    """Largest distance, in face widths, between a track's predicted centre and a detection
    one frame later. Larger: fast movers and low frame rates keep their tracks; smaller:
    neighbours are less likely to be confused (matters when faces sit close together)."""
    gate_growth_per_s: float = 1.0
    """The motion gate widens by this fraction per second a track goes unseen, since the
    prediction grows uncertain."""
    max_scale_change: float = 1.5
    """Largest ratio between the widths of a track's last box and a detection (a face that
    turns or bows changes its box, a face twice the size is someone else)."""
    appearance_veto: float = 0.8
    """dlib distance above which a detection can never continue a track seen a moment ago
    (within ``embed_after_gap_s``), whatever the motion says. Different people are mostly
    0.7-0.9 apart, but one person's occluded or bowed face can be 0.7 from their frontal
    one, so this bar only stops clear swaps (people crossing)."""
    appearance_gate: float = 0.65
    """The stricter bar for a track unseen a while: a face resuming it by motion, or
    re-identified near where it was lost, must be this close. dlib's own same-person bar
    is 0.6. Lower: fewer wrong joins, more broken tracks after occlusions."""
    appearance_weight: float = 0.5
    """Share of the embedding distance in the matching cost when both sides have one."""
    max_gap_s: float = 1.0
    """A track unseen for longer no longer matches by motion, only by appearance. Longer:
    bridges longer occlusions by position; shorter: less risk of a different person
    stepping into the empty place."""
    reid_threshold: float = 0.5
    """dlib distance under which an unmatched face is given a lost track's id wherever it
    appears, and under which ``finish`` joins fragments. Stricter than matching because no
    motion backs it up. Higher: fewer fragments, more risk of merging two look-alikes."""
    reid_window_s: float = 600.0
    """How long a lost track can still be re-identified."""
    near_reid_s: float = 3.0
    """A face reappearing within this long near where a track was lost (the motion gate
    widened by the time away) needs only ``appearance_gate``: someone stepping out from
    behind another person. Later, the place says little and ``reid_threshold`` applies."""
    embed_every_s: float = 5.0
    """An unambiguously matched track gets a fresh embedding this often once it is
    established. Shorter: a richer appearance gallery (better re-identification after pose
    changes) at ~0.1 s a face."""
    embed_first_s: float = 0.5
    """A new track's second embedding comes this long after its first, and the interval
    doubles up to ``embed_every_s``: a person seen only briefly still leaves a few views to be
    re-identified by (one occluded view alone often is not enough)."""
    embed_after_gap_s: float = 0.5
    """A face that resumes a track unseen for this long is embedded, to check it is the same person."""
    min_embed_px: float = 24.0
    """Faces narrower than this are not embedded (dlib descriptors of smaller faces are too
    noisy to tell people apart); they are tracked by motion only."""
    gallery_size: int = 16
    """Embeddings kept per track for matching; the most redundant is dropped first."""
    min_hits: int = 3
    """``finish`` drops tracks with fewer detections (after joining fragments): spurious
    detections rarely repeat in one place. Higher: fewer ghost tracks, but brief glimpses
    vanish. Tracks seen in the first or last frame are kept whatever their length: in a
    chunked run they may continue in the neighbouring chunk (``link_chunks``)."""
    smooth_sigma_s: float = 0.2
    """Gaussian smoothing of boxes in time in ``finish``; 0 disables it."""
    summary_samples: int = 8
    """Embeddings kept in each ``TrackSummary`` besides the mean, spread over the track."""


@dataclass
class TrackSummary:
    """One person's final track: observed times, smoothed face boxes, appearance."""

    track_id: int
    times: np.ndarray  # (n,) seconds, increasing
    boxes: np.ndarray  # (n, 4) smoothed xyxy face boxes
    scores: np.ndarray  # (n,) detector scores
    embedding: np.ndarray  # (128,) geometric median of the track's embeddings; NaN when it has none
    embedding_samples: np.ndarray  # (k, 128) a few embeddings spread over the track
    source_ids: tuple[int, ...] = ()  # online ids (as returned by update) joined into this track

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    @property
    def duration(self) -> float:
        return self.end - self.start


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


def _cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def _xyxy(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64).reshape(-1, 4)
    return np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)


def motion_cost(ref: np.ndarray, dt: np.ndarray, boxes: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """(m, n) centre distance between reference boxes (m, 4) and boxes (n, 4), over the gate.

    The distance is in face widths (the larger of the two boxes); the gate is
    ``motion_gate`` widened by ``gate_growth_per_s`` for each of the ``dt`` (m,) seconds since
    the reference was seen. Pairs outside the gate, or whose widths differ by more than
    ``max_scale_change``, are inf; the rest lie in [0, 1).
    """
    a, b = _cxcywh(ref), _cxcywh(boxes)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    width = np.maximum(a[:, None, 2], b[None, :, 2]).clip(1.0)
    cost = np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=2) / width
    cost /= cfg.motion_gate * (1 + cfg.gate_growth_per_s * np.maximum(np.asarray(dt, np.float64), 0))[:, None]
    ratio = np.maximum(a[:, None, 2], b[None, :, 2]) / np.minimum(a[:, None, 2], b[None, :, 2]).clip(1.0)
    cost[(cost >= 1) | (ratio > cfg.max_scale_change)] = np.inf
    return cost


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
            self.kf.update(_cxcywh(box)[0])
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
        return _xyxy(np.array([tr.kf.predicted(t - tr.last_t) for tr in tracks]).reshape(-1, 4))

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
            tr = _Track(self._next_id, _Kalman(_cxcywh(dets.boxes[j])[0]))
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
        from recognition.tracking.merge import link_fragments

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


def smooth_boxes(times: np.ndarray, boxes: np.ndarray, sigma_s: float) -> np.ndarray:
    """Local linear regression of (cx, cy, w, h) on time with Gaussian weights (sigma ``sigma_s``).

    Unlike a plain moving average it does not drag the first and last boxes of a moving
    face towards the middle of the track, nor lag behind steady motion.
    """
    boxes = np.asarray(boxes, np.float32)
    if sigma_s <= 0 or len(boxes) < 3:
        return boxes.copy()
    t = np.asarray(times, np.float64)
    c = _cxcywh(boxes)
    lo = np.searchsorted(t, t - 3 * sigma_s, "left")
    hi = np.searchsorted(t, t + 3 * sigma_s, "right")
    out = c.copy()
    for i in range(len(t)):
        dt = t[lo[i] : hi[i]] - t[i]
        w = np.exp(-0.5 * (dt / sigma_s) ** 2)
        s0, s1, s2 = w.sum(), (w * dt).sum(), (w * dt * dt).sum()
        y = c[lo[i] : hi[i]]
        m0, m1 = (w[:, None] * y).sum(0), (w[:, None] * dt[:, None] * y).sum(0)
        det = s0 * s2 - s1 * s1
        # Intercept of the weighted line fit; a plain weighted mean where the fit is degenerate.
        out[i] = (s2 * m0 - s1 * m1) / det if det > 1e-12 * max(s0 * s2, 1e-12) else m0 / s0
    return _xyxy(out).astype(np.float32)
