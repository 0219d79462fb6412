"""The analysis pipeline: video -> per-person tracks -> per-bin emotion and engagement.

``Pipeline.apply(video, hook=None)`` drives the models over the video in chunks
(``Settings.chunk_seconds``). Each chunk is tracked on its own and the chunks are
linked by face embedding afterwards, so a chunk can run anywhere and a long video
never sits in memory. The hook receives ``(fraction_done, message)`` and feeds the
CLI progress bar and the Celery job row alike.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from affectline.features import FEATURE_NAMES
from affectline.settings import Settings, get_settings
from affectline.types import ACADEMIC_CLASSES, EXPRESSION_CLASSES, Detections, VideoInfo
from ingest.video import VideoSource

log = logging.getLogger(__name__)

Hook = Callable[[float, str], None]


@dataclass
class _Samples:
    """Per-detection values of one chunk-local track, appended frame by frame."""

    times: list[float] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    context: list[np.ndarray] = field(default_factory=list)
    blend: list[np.ndarray] = field(default_factory=list)
    pose: list[np.ndarray] = field(default_factory=list)
    found: list[bool] = field(default_factory=list)
    expr: list[np.ndarray] = field(default_factory=list)
    face_px: list[float] = field(default_factory=list)
    sharp: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)  # detector confidence
    academic: list[np.ndarray] = field(default_factory=list)  # filled by a window model (CLIP-CAER) if any

    def extend(self, other: "_Samples") -> None:
        for k in self.__dataclass_fields__:
            getattr(self, k).extend(getattr(other, k))

    def arrays(self) -> dict[str, np.ndarray]:
        order = np.argsort(np.asarray(self.times), kind="stable")
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if k == "academic" and len(v) != len(self.times):
                continue
            out[k] = np.asarray(v)[order] if len(v) else np.asarray(v)
        return out


@dataclass
class PersonTrack:
    """One linked person-track of the analysed video, before storage."""

    key: int
    times: np.ndarray
    face_boxes: np.ndarray
    context_boxes: np.ndarray
    embedding: np.ndarray | None
    bins: pd.DataFrame
    features: np.ndarray
    thumbnail: bytes | None = None


@dataclass
class PipelineOutput:
    info: VideoInfo
    analysis_fps: float
    bin_seconds: float
    academic_model: str
    expression_model: str
    tracks: list[PersonTrack]
    n_face_samples: int = 0
    n_full_searches: int = 0  # frames searched whole for faces; the others only near tracked faces


def _sharpness(gray: np.ndarray, box: np.ndarray) -> float:
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    crop = gray[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    if crop.size < 16:
        return float("nan")
    # Normalise to a fixed size so sharpness compares across face sizes.
    crop = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(crop, cv2.CV_32F).var())


def _thumbnail(frame: np.ndarray, box: np.ndarray, size: int = 48) -> bytes:
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    crop = frame[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


def full_search_frames(times: np.ndarray, every_s: float, last_slot: int | None) -> tuple[np.ndarray, int | None]:
    """Which frames get a whole-frame face search, and the time slot of the last frame.

    The first frame of each ``every_s`` slot of the time grid is searched in full (and the
    first frame of a chunk, ``last_slot=None``), so chunked and single-pass runs agree. The
    other frames are searched only around the faces being tracked (``detect_near``, ~5x
    cheaper on 1080p) and in full again when a face seen a frame ago is not found there
    (turned, moved fast, left): the faces being followed keep the full search's recall, and
    a face entering the scene waits at most one slot to be found. ``every_s=0``: every frame.
    """
    full = np.ones(len(times), bool)
    if every_s <= 0:
        return full, None
    for i, t in enumerate(times):
        slot = int(math.floor(float(t) / every_s + 1e-9))
        full[i] = slot != last_slot
        last_slot = slot
    return full, last_slot


def _limit_heap_fragmentation() -> None:
    """Serve large allocations with mmap so they go back to the OS when freed.

    The detector allocates differently sized tensors every frame; with glibc's default
    dynamic threshold they fragment the heap and RSS climbs with video length
    (measured +2.8 MB a frame at 360p). With a fixed 128 KiB threshold RSS stays flat.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


class _CaerWindows:
    """CLIP-CAER over per-person windows of 16 samples (4 s at 4 fps)."""

    window = 16

    def __init__(self, scorer):
        self.scorer = scorer
        self.name = scorer.name
        self.sha256 = scorer.sha256 or ""

    def new_stream(self) -> "_CaerStream":
        return _CaerStream(self.scorer, self.window)


class _CaerStream:
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

    def push(self, tid: int, t: float, frame: np.ndarray, box: np.ndarray, context: np.ndarray) -> None:
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

    def flush(self, samples: dict[int, "_Samples"]) -> None:
        for tid in list(self.buf):
            self._emit(tid)
        self._score()
        for tid, res in self.results.items():
            samples[tid].academic = [pr for n, pr in res for _ in range(n)]


class Pipeline:
    """Holds the loaded models; one instance per worker process (models load once)."""

    def __init__(self, settings: Settings | None = None, device: str | None = None):
        from recognition.academic.cues import CueModel
        from recognition.detection import load_detector
        from recognition.face.expression import ExpressionModel
        from recognition.face.landmarks import FaceLandmarker
        from recognition.reid import FaceEmbedder

        _limit_heap_fragmentation()
        self.settings = s = settings or get_settings()
        self.device = device or s.torch_device()
        self.detector = load_detector(s.detector, s, device=self.device)
        self.embedder = FaceEmbedder()
        # One MediaPipe landmarker per core, up to 4: each runs one face crop at a time.
        self.landmarker = FaceLandmarker(s, threads=min(s.resolved_torch_threads, 4))
        # Threads per worker are explicit: with several workers on one machine, oversubscribed
        # torch threads spin and starve each other (measured 6-40x slower FER under load).
        self.expression = ExpressionModel.load(s, device=self.device, threads=s.resolved_torch_threads)
        self.cues = CueModel()
        self.window_model = self._load_window_model()
        self.n_full_searches = 0  # whole-frame face searches so far (the rest were local)

    def _load_window_model(self):
        """CLIP-CAER when a trained checkpoint is configured (or 'auto' finds one); else None (cue model)."""
        s = self.settings
        if s.academic_model == "cues":
            return None
        from recognition.academic.caer_checkpoint import WeightsNotFound, find_caer_checkpoint

        try:
            ckpt = find_caer_checkpoint(s.caer_checkpoint, s.model_dir)
        except WeightsNotFound:
            if s.academic_model == "clip_caer":
                raise  # asked for explicitly: say what is missing and where to put it
            return None
        from recognition.academic.caer_runner import CaerScorer
        from recognition.academic.clip_caer import ClipCaer

        model = ClipCaer.from_official_checkpoint(ckpt, text_heads=s.caer_text_heads, device=self.device)
        if tuple(model.class_names) != ACADEMIC_CLASSES:
            raise ValueError(f"{ckpt}: classes {model.class_names} are not the academic classes {ACADEMIC_CLASSES}")
        return _CaerWindows(CaerScorer(model, batch_size=16 if self.device == "cpu" else 128))

    @property
    def academic_name(self) -> str:
        m = self.window_model or self.cues
        return f"{m.name}@{m.sha256[:12]}"

    @property
    def expression_name(self) -> str:
        return f"{self.expression.name}@{self.expression.sha256[:12]}"

    def close(self) -> None:
        self.landmarker.close()
        self.detector.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def apply(self, video: str | Path | VideoSource, hook: Hook | None = None, fps: float | None = None) -> PipelineOutput:
        """Analyse ``video`` at ``fps`` (default ``Settings.analysis_fps``)."""
        from recognition.tracking import Tracker, link_chunks

        src = video if isinstance(video, VideoSource) else VideoSource(video)
        info, s = src.info, self.settings
        fps = min(fps or s.analysis_fps, info.fps)
        n_chunks = max(1, math.ceil(info.duration / s.chunk_seconds))
        n_expected = max(1, int(info.duration * fps))
        hook = hook or (lambda f, m: None)
        chunk_summaries, chunk_samples = [], []
        done = 0
        tracker = Tracker()
        n_faces, searches0 = 0, self.n_full_searches
        for c in range(n_chunks):
            tracker.reset()
            samples: dict[int, _Samples] = defaultdict(_Samples)
            thumbs: dict[int, bytes] = {}
            window = self.window_model.new_stream() if self.window_model else None
            last_slot = None
            for batch in src.batches(fps, batch_size=8, start=c * s.chunk_seconds, end=(c + 1) * s.chunk_seconds):
                full, last_slot = full_search_frames(batch.times, s.full_search_every_s, last_slot)
                found = iter(self.detector.detect([f for f, k in zip(batch.frames, full) if k]) if full.any() else [])
                self.n_full_searches += int(full.sum())
                dets_list = [next(found) if k else None for k in full]
                n_faces += self._batch(batch.frames, batch.times, dets_list, tracker, samples, thumbs, window)
                done += len(batch.indices)
                hook(min(done / n_expected, 1.0) * 0.95, f"chunk {c + 1}/{n_chunks}: {done}/{n_expected} frames")
            if window is not None:
                window.flush(samples)
            summaries = tracker.finish()
            chunk_summaries.append(summaries)
            chunk_samples.append((samples, thumbs))
        hook(0.96, "linking identities across chunks")
        mapping = link_chunks(chunk_summaries) if n_chunks > 1 else {
            (0, t.track_id): t.track_id for t in chunk_summaries[0]
        }  # fmt: skip
        tracks = self._assemble(chunk_summaries, chunk_samples, mapping, info, fps)
        hook(1.0, f"{len(tracks)} persons")
        return PipelineOutput(
            info=info, analysis_fps=fps, bin_seconds=s.bin_seconds, academic_model=self.academic_name,
            expression_model=self.expression_name, tracks=tracks, n_face_samples=n_faces,
            n_full_searches=self.n_full_searches - searches0,
        )  # fmt: skip

    def _batch(self, frames, times, dets_list: list[Detections | None], tracker, samples, thumbs, window) -> int:
        """Track each frame in order, then score every tracked face of the batch at once.

        A ``None`` in ``dets_list`` means: search near the tracked faces only. Returns the
        number of faces detected."""
        from recognition.tracking import context_box

        tracked: list[Detections] = []
        landmarks = []
        n_found = 0
        for frame, t, dets in zip(frames, times, dets_list):
            if dets is None:
                expected, n_current = tracker.expected_boxes(float(t))
                dets = self.detector.detect_near(frame, expected)
                if len(dets) < n_current:  # a face seen a frame ago is not near its track: look everywhere
                    dets = self.detector.detect([frame])[0]
                    self.n_full_searches += 1
            n_found += len(dets)
            if len(dets):
                # dlib embeddings cost ~0.1 s a face on one core: compute only those that
                # decide or check an association (new or ambiguous faces, periodic refresh).
                need = tracker.needs_embedding(dets, float(t))
                emb = np.full((len(dets), 128), np.nan, np.float32)
                if need.any():
                    emb[need] = self.embedder.embed(frame, dets[need])
                dets.data["embedding"] = emb
            dets = tracker.update(dets, float(t))
            dets = dets[dets.track_id >= 0]
            tracked.append(dets)
            landmarks.append(self.landmarker.analyze(frame, dets) if len(dets) else None)
        # One FER forward pass over all faces of the batch (per-frame calls cost ~5x more).
        exprs = self.expression.predict_many(list(frames), tracked)
        for frame, t, dets, lm, expr in zip(frames, times, tracked, landmarks, exprs):
            if not len(dets):
                continue
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            h, w = frame.shape[:2]
            for i, tid in enumerate(dets.track_id.tolist()):
                box = dets.boxes[i]
                sm = samples[tid]
                sm.times.append(float(t))
                sm.boxes.append(box)
                sm.context.append(context_box(box, w, h))
                sm.blend.append(lm.blendshapes[i])
                sm.pose.append(lm.pose[i])
                sm.found.append(bool(lm.found[i]))
                sm.expr.append(expr[i])
                sm.face_px.append(float(box[3] - box[1]))
                sm.sharp.append(_sharpness(gray, box))
                sm.score.append(float(dets.scores[i]))
                if self.settings.store_thumbnails and tid not in thumbs and box[3] - box[1] >= 24:
                    thumbs[tid] = _thumbnail(frame, box)
                if window is not None:
                    window.push(tid, float(t), frame, box, sm.context[-1])
        return n_found

    def _assemble(self, chunk_summaries, chunk_samples, mapping, info: VideoInfo, fps: float) -> list[PersonTrack]:
        merged: dict[int, _Samples] = defaultdict(_Samples)
        embs: dict[int, list[np.ndarray]] = defaultdict(list)
        thumbs: dict[int, bytes] = {}
        for c, summaries in enumerate(chunk_summaries):
            samples, th = chunk_samples[c]
            for summ in summaries:
                gid = mapping.get((c, summ.track_id))
                if gid is None:
                    continue
                # finish() joins fragments of one person; their samples live under each fragment id.
                for sid in summ.source_ids or (summ.track_id,):
                    if sid in samples:
                        merged[gid].extend(samples[sid])
                    if sid in th:
                        thumbs.setdefault(gid, th[sid])
                embs[gid].append(np.asarray(summ.embedding, np.float32))
        out = []
        confirmed = {gid: sm for gid, sm in merged.items() if self._is_face(sm)}
        for key, (gid, sm) in enumerate(sorted(confirmed.items(), key=lambda kv: min(kv[1].times))):
            arr = sm.arrays()
            valid = [e for e in embs[gid] if e.shape == (128,) and np.isfinite(e).all()]
            emb = np.mean(valid, axis=0) if valid else None  # faces too small to embed have none
            bins, feats = self._bins(arr, fps, info.duration)
            out.append(PersonTrack(
                key=key, times=arr["times"].astype(np.float32), face_boxes=arr["boxes"].astype(np.float32),
                context_boxes=arr["context"].astype(np.float32), embedding=emb, bins=bins, features=feats,
                thumbnail=thumbs.get(gid),
            ))  # fmt: skip
        return out

    CONFIRM_SCORE = 0.95

    def _is_face(self, sm: _Samples) -> bool:
        """A track counts as a person once the landmarker confirmed a face in it at least once,
        or the detector was sure of it (median confidence >= 0.95). Detector false positives
        (hair, patterned cloth) persist for seconds at ~0.88 and never give landmarks; real
        faces too small to landmark (10-20 px classroom faces) score above 0.95."""
        return any(sm.found) or float(np.median(sm.score)) >= self.CONFIRM_SCORE

    def _bins(self, a: dict[str, np.ndarray], fps: float, duration: float) -> tuple[pd.DataFrame, np.ndarray]:
        """Average a track's samples into bins of ``bin_seconds`` over the track's span."""
        step = self.settings.bin_seconds
        t = a["times"]
        n = len(t)
        visible = np.ones(n, bool)
        if "academic" in a:
            academic = a["academic"].astype(np.float32)
            _, engagement = self.cues.predict(a["blend"], a["pose"], a["expr"], visible)
        else:
            academic, engagement = self.cues.predict(a["blend"], a["pose"], a["expr"], visible)
        first = int(math.floor(t.min() / step + 1e-9))
        last = int(math.floor(t.max() / step + 1e-9))
        nb = last - first + 1
        b = np.floor(t / step + 1e-9).astype(np.int64) - first
        counts = np.bincount(b, minlength=nb).astype(np.float32)

        def mean(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, np.float32).reshape(n, -1)
            ok = ~np.isnan(x)
            s = np.zeros((nb, x.shape[1]), np.float32)
            c = np.zeros((nb, x.shape[1]), np.float32)
            np.add.at(s, b, np.where(ok, x, 0))
            np.add.at(c, b, ok)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(c > 0, s / np.maximum(c, 1), np.nan)

        vis = counts > 0
        acad, eng, expr = mean(academic), mean(engagement)[:, 0], mean(a["expr"])
        # Bins inside the span with no face: the cue model's own verdict for "face not visible".
        if (~vis).any():
            nan = np.full((1, 52), np.nan, np.float32)
            a0, e0 = self.cues.predict(nan, np.full((1, 3), np.nan, np.float32), np.full((1, 7), np.nan, np.float32), np.zeros(1, bool))
            acad[~vis], eng[~vis] = a0[0], e0[0]
        per_bin = max(1.0, step * fps)
        quality = np.stack([
            np.minimum(counts / per_bin, 1.0),
            mean(a["found"].astype(np.float32))[:, 0],
            mean(a["face_px"])[:, 0],
            mean(a["sharp"])[:, 0],
        ], axis=1)  # fmt: skip
        feats = np.concatenate([mean(a["blend"]), mean(a["pose"]), expr, quality], axis=1)
        assert feats.shape[1] == len(FEATURE_NAMES)
        starts = (first + np.arange(nb)) * step
        df = pd.DataFrame({"t_start": starts, "t_end": np.minimum(starts + step, max(duration, starts[-1] + step))})
        df["face_visible"] = vis
        df["engagement"] = eng
        for j, c in enumerate(ACADEMIC_CLASSES):
            df[c.lower()] = acad[:, j]
        for j, c in enumerate(EXPRESSION_CLASSES):
            df[c] = expr[:, j]
        return df, feats.astype(np.float32)

