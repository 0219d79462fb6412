"""Finding and following faces frame by frame: the one per-frame rule the pipeline, benches and tests share.

Per frame, in time order:

1. **Search.** The first frame of each ``every_s`` slot of the time grid (and the first
   frame of a run) is searched whole (``full_search_frames``); the others only around the
   tracker's predicted boxes, and whole again when a face seen a frame ago is not found
   there (turned, moved fast, left). Around the predicted boxes, either the detector's
   cascade runs (``detect_near``, ~5x cheaper than a whole search on 1080p), or, with a
   ``landmark`` function, the landmarker follows each face as MediaPipe's video graph
   does: the landmarks found in the predicted box give the face's box
   (``box_from_landmarks``), and only the faces it does not find there go to
   ``detect_near``. The landmark results ride on the detections (``data["lm_*"]``) so the
   face step does not landmark those faces again. With a ``landmark`` function a whole
   search follows the tracked faces the same way first, then looks only for the other faces
   (``detect_new``: MTCNN refines no candidate centred on a followed face).
2. **Embed, then update.** The tracker says which faces need an embedding
   (``needs_embedding``: new, ambiguous, due for a refresh); only those are embedded, then
   ``update`` gives every face its track id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from affectline.types import Detections
from recognition.face.landmarks import box_from_landmarks, five_from_landmarks
from recognition.face.readability import iod_from_landmarks
from recognition.reid.embedder import EMBEDDING_DIM
from recognition.tracking.geometry import iou
from recognition.tracking.tracker import Tracker

Embed = Callable[[np.ndarray, Detections], np.ndarray]
"""(frame, dets) -> (len(dets), 128) float32 embeddings of those faces."""

Landmark = Callable[[np.ndarray, Detections], object]
"""(frame, dets) -> a ``recognition.face.landmarks.LandmarkResult`` for those boxes."""

FOLLOW_SCORE = 0.99
"""Score of a face followed by its landmarks: the landmarker found a face (presence >= its
threshold) centred in a tracked face's predicted box, so it is treated as a confident
detection of a face already confirmed by the detector."""

LANDMARK_KEYS = ("lm_done", "lm_blendshapes", "lm_pose", "lm_iod")
"""Per-row ``Detections.data`` the follower fills: landmarked while following (bool), and
those rows' blendshapes (52), head pose (3) and pupil distance in px (the face's size for the
readability gate); NaN / False on the other rows."""


def with_landmarks(dets: Detections, result=None, rows: np.ndarray | None = None) -> Detections:
    """``dets`` with the ``LANDMARK_KEYS`` columns: from ``result`` (rows ``rows`` of it, default
    all) when given, else empty (not landmarked)."""
    n = len(dets)
    data = dict(dets.data)
    if result is None:
        data["lm_done"] = np.zeros(n, bool)
        data["lm_blendshapes"] = np.full((n, 52), np.nan, np.float32)
        data["lm_pose"] = np.full((n, 3), np.nan, np.float32)
        data["lm_iod"] = np.full(n, np.nan, np.float32)
    else:
        rows = np.arange(n) if rows is None else rows
        data["lm_done"] = np.ones(n, bool)
        data["lm_blendshapes"] = np.asarray(result.blendshapes, np.float32)[rows].reshape(n, 52)  # n may be 0
        data["lm_pose"] = np.asarray(result.pose, np.float32)[rows].reshape(n, 3)
        data["lm_iod"] = iod_from_landmarks(np.asarray(result.landmarks, np.float32)[rows])
    return Detections(dets.boxes, dets.scores, dets.track_id, data)


def full_search_frames(times: np.ndarray, every_s: float, last_slot: int | None) -> tuple[np.ndarray, int | None]:
    """Which frames get a whole-frame face search, and the time slot of the last frame.

    The first frame of each ``every_s`` slot of the time grid is searched in full (and the
    first frame of a run, ``last_slot=None``), so chunked and single-pass runs agree.
    ``every_s=0``: every frame.
    """
    full = np.ones(len(times), bool)
    if every_s <= 0:
        return full, None
    for i, t in enumerate(times):
        slot = int(math.floor(float(t) / every_s + 1e-9))
        full[i] = slot != last_slot
        last_slot = slot
    return full, last_slot


def embed_then_update(tracker: Tracker, embed: Embed | None, frame: np.ndarray, t: float, dets: Detections,
                      embed_all: bool = False) -> tuple[Detections, int]:  # fmt: skip
    """Embed the faces the tracker asks for (all with ``embed_all``), then update it.

    Returns the detections with ``track_id`` filled (-1 for rejected rows) and
    ``data["embedding"]`` (NaN rows where not embedded), and the number embedded.
    """
    emb = np.full((len(dets), EMBEDDING_DIM), np.nan, np.float32)
    n = 0
    if len(dets) and embed is not None:
        need = np.ones(len(dets), bool) if embed_all else tracker.needs_embedding(dets, float(t))
        if need.any():
            emb[need] = embed(frame, dets[need])
        n = int(need.sum())
    dets = Detections(dets.boxes, dets.scores, dets.track_id, {**dets.data, "embedding": emb})
    return tracker.update(dets, float(t)), n


@dataclass
class FollowCounts:
    detected: int = 0  # faces found
    full_searches: int = 0  # frames searched whole (the others only near tracked faces)
    embedded: int = 0  # faces embedded
    followed: int = 0  # faces found by the landmarker in their predicted box
    lost: int = 0  # predicted boxes where it found none (then searched by detect_near, or whole)
    near_found: int = 0  # faces detect_near found for those
    whole_fallbacks: int = 0  # frames searched whole because faces seen a frame ago were still missing
    new_found: int = 0  # faces a whole search found away from the faces followed on its frame


EmbedMany = Callable[[Sequence[np.ndarray], Sequence[Detections]], list[np.ndarray]]
"""(frames, dets per frame) -> per frame (len(dets), 128) embeddings, in one batch."""


class FaceFollower:
    """Search, embed and track frame by frame (see the module docstring); one per run or chunk.

    ``detector`` is a ``recognition.detection.FaceDetector``; whole-frame searches of a
    batch of frames run as one ``detect`` call.

    ``embed_many`` (with ``every_s=0``: every frame searched whole) switches to the
    accelerator's rule: the frames of a batch are searched in one call and *every* face
    of them embedded in one call, then the tracker runs over them in order. Nothing then
    waits on the tracker between frames, which keeps a GPU busy; the tracker gets more
    views than it asks for, which only adds to its galleries.

    ``landmark`` (CPU rule only) follows faces by their landmarks between whole searches
    instead of searching near them with the detector; predicted boxes smaller than
    ``follow_min_px`` go straight to ``detect_near``: MediaPipe finds a face in only 30-50%
    of crops of 10-20 px faces, and a miss costs crops that the face step then spends again.
    """

    follow_min_px = 24.0

    def __init__(self, detector, embed: Embed | None, every_s: float, tracker: Tracker | None = None,
                 embed_many: EmbedMany | None = None, landmark: Landmark | None = None) -> None:  # fmt: skip
        self.detector, self.embed, self.every_s, self.embed_many = detector, embed, every_s, embed_many
        self.landmark = landmark
        self.tracker = tracker or Tracker()
        self.counts = FollowCounts()
        self._last_slot: int | None = None

    def reset(self) -> None:
        self.tracker.reset()
        self.counts = FollowCounts()
        self._last_slot = None

    def step(self, frames: Sequence[np.ndarray], times: np.ndarray) -> list[Detections]:
        """Track a batch of consecutive frames; per frame, the detections with track ids (-1: rejected)."""
        if self.embed_many is not None and self.every_s <= 0:
            return self._step_batched(frames, times)
        full, self._last_slot = full_search_frames(np.asarray(times), self.every_s, self._last_slot)
        # Following by landmarks, a whole search needs the tracker's state at its frame (the
        # faces to follow first), so it runs frame by frame; else the batch's searches are one call.
        batch = full & (self.landmark is None)
        whole = iter(self.detector.detect([f for f, k in zip(frames, batch) if k]) if batch.any() else [])
        self.counts.full_searches += int(full.sum())
        out = []
        for frame, t, k in zip(frames, times, full):
            if k:
                dets = next(whole) if self.landmark is None else self._search_whole(frame, float(t))
            else:
                dets = self._search_near(frame, float(t))
            self.counts.detected += len(dets)
            dets, n = embed_then_update(self.tracker, self.embed, frame, float(t), dets)
            self.counts.embedded += n
            out.append(dets)
        return out

    def _step_batched(self, frames: Sequence[np.ndarray], times: np.ndarray) -> list[Detections]:
        found = self.detector.detect(list(frames))
        self.counts.full_searches += len(frames)
        embs = self.embed_many(list(frames), found) if any(len(d) for d in found) else [None] * len(found)
        out = []
        for t, d, e in zip(times, found, embs):
            self.counts.detected += len(d)
            self.counts.embedded += len(d)
            e = np.zeros((0, EMBEDDING_DIM), np.float32) if e is None else np.asarray(e, np.float32)
            d = Detections(d.boxes, d.scores, d.track_id, {**d.data, "embedding": e.reshape(len(d), EMBEDDING_DIM)})
            out.append(self.tracker.update(d, float(t)))
        return out

    def _search_near(self, frame: np.ndarray, t: float) -> Detections:
        expected, n_current = self.tracker.expected_boxes(t)
        if self.landmark is not None and len(expected):
            dets = self._follow_landmarks(frame, expected)
        else:
            dets = self.detector.detect_near(frame, expected)
        if len(dets) < n_current:  # a face seen a frame ago is not near its track: look everywhere
            dets = self.detector.detect([frame])[0]
            self.counts.full_searches += 1
            self.counts.whole_fallbacks += 1
        return dets

    def _search_whole(self, frame: np.ndarray, t: float) -> Detections:
        """Follow the tracked faces by their landmarks, then search the whole frame for the
        other faces only (``detect_new``): new ones, and those the landmarker lost. On a full
        classroom nearly all of a whole search's R/O-Net candidates lie on followed faces."""
        expected, _ = self.tracker.expected_boxes(t)
        if not len(expected):
            return self.detector.detect([frame])[0]
        followed = self._follow_landmarks(frame, expected, near=False)
        new = self.detector.detect_new(frame, followed.boxes)
        self.counts.new_found += len(new)
        if not len(followed):
            return new
        new = with_landmarks(new)
        if "landmarks5" not in new.data:
            followed.data.pop("landmarks5", None)
        return Detections.merge([followed, new]) if len(new) else followed

    def _follow_landmarks(self, frame: np.ndarray, expected: np.ndarray, near: bool = True) -> Detections:
        """Landmark the predicted boxes (one call); the faces not found there by ``detect_near``
        (with ``near``; else only the followed ones)."""
        h, w = frame.shape[:2]
        try_lm = (expected[:, 3] - expected[:, 1]) >= self.follow_min_px
        found = np.zeros(len(expected), bool)
        followed = with_landmarks(Detections.empty())
        if try_lm.any():
            rows = np.flatnonzero(try_lm)
            res = self.landmark(frame, Detections(expected[rows], np.ones(len(rows), np.float32)))
            ok = np.flatnonzero(np.asarray(res.found, bool))
            boxes = box_from_landmarks(res.landmarks[ok]) if len(ok) else np.zeros((0, 4), np.float32)
            boxes[:, 0::2], boxes[:, 1::2] = boxes[:, 0::2].clip(0, w), boxes[:, 1::2].clip(0, h)
            # Two predicted boxes can land on one face (a track and its lingering duplicate): keep one.
            keep = []
            for j in range(len(ok)):
                if not keep or iou(boxes[j : j + 1], boxes[keep]).max() < 0.5:
                    keep.append(j)
            ok = ok[keep]
            found[rows[ok]] = True
            lm5 = five_from_landmarks(res.landmarks[ok]) if len(ok) else np.zeros((0, 5, 2), np.float32)
            followed = with_landmarks(Detections(boxes[keep], np.full(len(ok), FOLLOW_SCORE, np.float32),
                                                 data={"landmarks5": lm5}), res, ok)  # fmt: skip
            self.counts.followed += len(ok)
        self.counts.lost += int((~found).sum())
        if found.all() or not near:
            return followed
        near = self.detector.detect_near(frame, expected[~found])
        if len(near) and len(followed):  # a lost face's region can hold a followed neighbour
            near = near[iou(near.boxes, followed.boxes).max(1) < 0.3]
        self.counts.near_found += len(near)
        near = with_landmarks(near)
        if "landmarks5" not in near.data:
            followed.data.pop("landmarks5", None)
        return Detections.merge([followed, near]) if len(followed) else near
