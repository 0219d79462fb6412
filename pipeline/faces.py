"""The batched face step: every tracked face of a window of frames through each face model at once.

Landmarks + blendshapes + head pose (``analyze_many``) and FER (``predict_many``) each
run once over all faces of all frames of the window (landmarks only for the faces the
follower did not already landmark while following them, ``data["lm_done"]``); sharpness is a cheap per-crop
measure on the CPU. Between the two, every face-frame is judged readable or not (size,
landmarks, pose, blur: ``recognition.face.readability``); the expression model runs on the
readable faces only, the others get NaN expressions and the reason. Re-identification embeddings are not here: the tracker needs them
frame by frame, before it decides who is who (``recognition.tracking.follow``); they are
batched across the faces of one frame (``Embedder.embed_many``).

The models are reached through small adapters so the step works both with the batch
interfaces (``analyze_many`` / ``embed_many``) and with models that only score one frame
at a time (``analyze`` / ``embed``), looping those.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from affectline.types import Detections
from recognition.face.readability import Readability, ReadabilityParams, iod_from_landmarks, judge


class StageClock:
    """Seconds spent per stage name (for the benches' per-stage share)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, name: str, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        return run

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


def analyze_many(landmarker, frames: Sequence[np.ndarray], dets: Sequence[Detections]) -> list:
    """Landmark results per frame: the batch call when the landmarker has one, else frame by frame."""
    if hasattr(landmarker, "analyze_many"):
        return list(landmarker.analyze_many(list(frames), list(dets)))
    return [landmarker.analyze(f, d) for f, d in zip(frames, dets)]


def embed_one_frame(embedder):
    """(frame, dets) -> (n, 128): one batch over the faces of a frame."""
    if hasattr(embedder, "embed_many"):
        return lambda frame, dets: np.asarray(embedder.embed_many([frame], [dets])[0], np.float32)
    return lambda frame, dets: np.asarray(embedder.embed(frame, dets), np.float32)


def sharpness(gray: np.ndarray, box: np.ndarray) -> float:
    """Laplacian variance of the face crop resized to 64 x 64 (so it compares across face sizes)."""
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    crop = gray[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    if crop.size < 16:
        return float("nan")
    crop = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_32F).var())


@dataclass
class FaceRows:
    """The face models' outputs for the tracked faces of one frame, one row per face."""

    blend: np.ndarray  # (n, 52)
    pose: np.ndarray  # (n, 3)
    found: np.ndarray  # (n,) landmarks found
    expr: np.ndarray  # (n, 7), NaN rows where not readable
    sharp: np.ndarray  # (n,)
    readability: Readability | None = None  # per face: readable, reason, pose_ok, iod

    @property
    def readable(self) -> np.ndarray:
        return self.readability.readable if self.readability is not None else np.ones(len(self.found), bool)


class FaceStep:
    """Runs the face models over the tracked faces of a window of frames, each model once."""

    def __init__(self, landmarker, expression, clock: StageClock | None = None,
                 readability: ReadabilityParams | None = None) -> None:  # fmt: skip
        self.landmarker, self.expression = landmarker, expression
        self.clock = clock or StageClock()
        self.params = readability or ReadabilityParams()

    def run(self, frames: Sequence[np.ndarray], dets: Sequence[Detections]) -> list[FaceRows]:
        keep = [i for i, d in enumerate(dets) if len(d)]
        out = [FaceRows(np.zeros((0, 52), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, bool),
                        np.zeros((0, 7), np.float32), np.zeros(0, np.float32)) for _ in dets]  # fmt: skip
        if not keep:
            return out
        fr, dd = [frames[i] for i in keep], [dets[i] for i in keep]
        t0 = time.perf_counter()
        # Rows the face follower already landmarked (``data["lm_done"]``) are not run again.
        todo = [~np.asarray(d.data["lm_done"], bool) if "lm_done" in d.data else np.ones(len(d), bool) for d in dd]
        run = [k for k, m in enumerate(todo) if m.any()]
        lms = dict(zip(run, analyze_many(self.landmarker, [fr[k] for k in run], [dd[k][todo[k]] for k in run])))
        t1 = time.perf_counter()
        judged = []
        for k, (f, d) in enumerate(zip(fr, dd)):
            gray = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
            sharp = np.array([sharpness(gray, b) for b in d.boxes], np.float32)
            blend = np.full((len(d), 52), np.nan, np.float32)
            pose = np.full((len(d), 3), np.nan, np.float32)
            iod = np.full(len(d), np.nan, np.float32)
            found = np.zeros(len(d), bool)
            m = todo[k]
            if (~m).any():
                blend[~m], pose[~m], found[~m] = d.data["lm_blendshapes"][~m], d.data["lm_pose"][~m], True
                if "lm_iod" in d.data:
                    iod[~m] = d.data["lm_iod"][~m]
            if k in lms:
                lm = lms[k]
                blend[m], pose[m], found[m] = lm.blendshapes, lm.pose, lm.found
                iod[m] = iod_from_landmarks(lm.landmarks)
            judged.append((blend, pose, found, sharp, judge(d.boxes, found, pose, sharp, iod, self.params)))
        t2 = time.perf_counter()
        # The expression model sees the readable faces only: an unreadable one has no expression to give.
        readable = [j[4].readable for j in judged]
        faces = [d[r] for d, r in zip(dd, readable)]
        if getattr(self.expression, "needs_landmarks", False):  # a head over blendshapes + pose too
            extra = [{"blend": j[0][r], "pose": j[1][r]} for j, r in zip(judged, readable)]
            exprs = self.expression.predict_many(fr, faces, extra)
        else:
            exprs = self.expression.predict_many(fr, faces)
        t3 = time.perf_counter()
        for i, d, (blend, pose, found, sharp, rd), ex in zip(keep, dd, judged, exprs):
            expr = np.full((len(d), 7), np.nan, np.float32)
            expr[rd.readable] = np.asarray(ex, np.float32).reshape(-1, 7)
            out[i] = FaceRows(blend, pose, found, expr, sharp, rd)
        self.clock.add("landmarks", t1 - t0)
        self.clock.add("sharpness", t2 - t1)
        self.clock.add("fer", t3 - t2)
        return out
