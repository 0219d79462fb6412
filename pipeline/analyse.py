"""The analysis pipeline: video -> per-person tracks -> per-bin emotion and engagement.

Stages, each in its own module:

    decode (pipeline.video)  ->  detect + track (recognition.tracking.follow)
      ->  batched face step (pipeline.faces)  ->  windows (pipeline.windows)
      ->  bins (pipeline.bins)  ->  chunk result (pipeline.chunk)
      ->  link chunks (pipeline.link)

``Pipeline.analyse_chunk(video, window, shape)`` analyses one time window of a video on its own
(with a few seconds of overlap each side) at the job's shape (``JobShape``: frames a second, bin
length, overlap, passed in, so the loaded models serve jobs of any shape) and returns a
``ChunkResult`` a worker can store;
``link_chunk_results`` stitches chunks into persons. ``Pipeline.apply(video, hook=None)``
does both for a whole video in one process. The hook receives ``(fraction_done,
message)`` and feeds the CLI progress bar and the Celery job row alike.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from affectline.settings import Settings, get_settings
from affectline.types import ACADEMIC_CLASSES, Segment, TimeGrid
from pipeline.bins import READABILITY_CODES, bin_samples, owned_bins
from pipeline.chunk import ChunkResult, ChunkTrack, ChunkWindow, JobShape
from pipeline.faces import FaceStep, StageClock, embed_one_frame
from pipeline.link import CONFIRM_SCORE, PersonTrack, PipelineOutput, link_chunk_results
from recognition.academic.cues import CUE_INPUTS
from pipeline.decode import Prefetch, open_video
from pipeline.video import VideoSource, sample_indices
from recognition.tracking.follow import full_search_frames

log = logging.getLogger(__name__)

Hook = Callable[[float, str], None]

__all__ = ["Pipeline", "PipelineOutput", "PersonTrack", "ChunkResult", "ChunkWindow", "JobShape", "link_chunk_results",
           "full_search_frames", "JOB_FIELDS"]

JOB_FIELDS = frozenset({"analysis_fps", "bin_seconds", "chunk_seconds"})
"""Settings a job fixes for itself (``JobShape``): never part of what identifies a set of loaded models."""


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
    readable: list[bool] = field(default_factory=list)  # recognition.face.readability
    reason: list[int] = field(default_factory=list)  # index into READABILITY_CODES ("" = readable)
    pose_ok: list[bool] = field(default_factory=list)
    score: list[float] = field(default_factory=list)  # detector confidence
    emb: list[np.ndarray] = field(default_factory=list)  # re-id embedding where the tracker asked for one
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


def _thumbnail(frame: np.ndarray, box: np.ndarray, size: int = 48) -> bytes:
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    crop = frame[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else b""


MMAP_THRESHOLD = 64 * 2**20
TRIM_EVERY_BATCHES = 8  # free pages handed back every 8 batches: not so often that they are faulted in again each batch


@functools.cache
def _libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def _limit_heap_fragmentation() -> None:
    """A fixed mmap threshold, with free heap pages handed back after every batch (``_release_free_heap``).

    The detector allocates differently sized tensors every frame; with glibc's default
    dynamic threshold they fragment the heap and RSS climbs with video length (measured
    +2.8 MB a frame at 360p). A 128 KiB threshold kept RSS flat but made every tensor
    above it a fresh mmap, zero-filled page by page on first touch: the face models ran
    1.6-2.6x slower inside the pipeline than on their own (FER 3.2 vs 1.2 ms a face on the
    lesson bench). Above 64 MiB (whole decode bursts) allocations are still mmapped.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD (also stops the dynamic adjustment)


def _release_free_heap() -> None:
    """Return the heap's free pages to the OS (glibc ``malloc_trim``): RSS stays flat in video length."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _load_landmarker(s: Settings, device: str):
    """The landmarker ``Settings.landmarker`` names (``recognition.face.landmarker.load_landmarker``:
    litert, torch or MediaPipe, as configured; a missing runtime is an error, never a silent swap)."""
    from recognition.face.landmarker import load_landmarker

    return load_landmarker(s, device, threads=min(s.resolved_torch_threads, 4))  # network sets side by side


def _load_embedder(s: Settings, device: str):
    """The embedder ``Settings.embedder`` names (``recognition.reid.load_embedder``)."""
    from recognition.reid import load_embedder

    return load_embedder(s, device)


def chunk_windows(duration: float, chunk_seconds: float, bin_seconds: float) -> list[Segment]:
    """Nominal chunk windows covering [0, duration): ``chunk_seconds`` rounded to whole bins,
    so no bin straddles two chunks."""
    step = max(1, round(chunk_seconds / bin_seconds)) * bin_seconds
    n = max(1, math.ceil(duration / step - 1e-9))
    return [Segment(c * step, duration if c == n - 1 else (c + 1) * step) for c in range(n)]


class Pipeline:
    """Holds the loaded models; one instance per worker process (models load once)."""

    chunk_overlap_s = 2.0
    """Seconds analysed beyond each side of a chunk's window: the tracker sees the faces of a
    boundary from both chunks, which is what stitches them (``link_chunk_results``)."""

    CONFIRM_SCORE = CONFIRM_SCORE

    batch_across_frames = False
    """Search every frame whole and embed every face, a batch of frames per call (on CUDA): see
    ``FaceFollower``. On CPU the tracker asks for the few embeddings it needs and faces are
    searched near their tracks between whole searches (``Settings.full_search_every_s``)."""

    prefetch_batches = 1
    """Batches decoded ahead on a background thread (``pipeline.decode.Prefetch``); 0 = none."""

    frames_per_batch = 8
    """Frames decoded, tracked and sent through the face step together (every face of them in one
    call per face model). On CUDA 32: bigger batches keep the GPU busy; on CPU 8 keeps memory small."""

    def __init__(self, settings: Settings | None = None, device: str | None = None):
        from recognition.academic.cues import CueModel
        from recognition.detection import load_detector
        from recognition.face.expression import load_expression_model

        _limit_heap_fragmentation()
        self.settings = s = settings or get_settings()
        self.device = device or s.torch_device()
        if str(self.device).startswith("cuda") and (s.landmarker, s.embedder) != ("torch", "torch"):
            # MediaPipe and dlib run on the CPU only: on a GPU their torch ports carry the work.
            log.info("device %s: torch landmarker and embedder instead of %s/%s", self.device, s.landmarker, s.embedder)
            s = self.settings = s.model_copy(update={"landmarker": "torch", "embedder": "torch"})
        self.clock = StageClock()
        self.detector = load_detector(s.detector, s, device=self.device)
        self.embedder = _load_embedder(s, self.device)
        self.landmarker = _load_landmarker(s, self.device)
        # Torch's threads per process are the entry point's (tasks.eager.pin_torch_threads), not a loader's.
        self.expression = load_expression_model(s, device=self.device)
        from recognition.face.readability import ReadabilityParams

        self.faces = FaceStep(self.landmarker, self.expression, self.clock, ReadabilityParams(**s.readability_overrides()))
        self.cues = CueModel()
        self.window_model = self._load_window_model()
        self.n_full_searches = 0  # whole-frame face searches so far (the rest were local)
        self.follow_counts: dict[str, int] = defaultdict(int)  # FollowCounts summed over chunks
        if str(self.device).startswith("cuda"):
            self.frames_per_batch, self.batch_across_frames = 32, True

    def _follow_landmark(self, frame: np.ndarray, dets):
        """The landmarker on the predicted boxes while following: only its first crop scale is
        tried there (a miss falls back to the detector, and the face step tries all scales on
        the box it finds)."""
        scales = getattr(self.landmarker, "scales", None)
        if scales:
            return self.landmarker.analyze(frame, dets, scales=scales[:1])
        return self.landmarker.analyze(frame, dets)

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
        from pipeline.windows import CaerWindows
        from recognition.academic.caer_runner import CaerScorer
        from recognition.academic.clip_caer import ClipCaer

        model = ClipCaer.from_official_checkpoint(ckpt, text_heads=s.caer_text_heads, device=self.device)
        if tuple(model.class_names) != ACADEMIC_CLASSES:
            raise ValueError(f"{ckpt}: classes {model.class_names} are not the academic classes {ACADEMIC_CLASSES}")
        return CaerWindows(CaerScorer(model, batch_size=16 if self.device == "cpu" else 128))

    @property
    def academic_name(self) -> str:
        m = self.window_model or self.cues
        return f"{m.name}@{m.sha256[:12]}"

    @property
    def expression_name(self) -> str:
        return f"{self.expression.name}@{self.expression.sha256[:12]}"

    def close(self) -> None:
        for m in (self.landmarker, self.detector, self.embedder):
            if hasattr(m, "close"):
                m.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------

    def apply(self, video: str | Path | VideoSource, hook: Hook | None = None, fps: float | None = None) -> PipelineOutput:
        """Analyse ``video`` at ``fps`` (default ``Settings.analysis_fps``): every chunk, then link."""
        src = video if hasattr(video, "batches") else open_video(video)
        info, s = src.info, self.settings
        fps = min(fps or s.analysis_fps, info.fps)
        shape = JobShape(fps, s.bin_seconds, self.chunk_overlap_s)
        hook = hook or (lambda f, m: None)
        windows = chunk_windows(info.duration, s.chunk_seconds, s.bin_seconds)
        totals = [len(self._frames_in(src, self._analysed(src, w, self.chunk_overlap_s), fps)) for w in windows]
        total, before = max(sum(totals), 1), 0
        results = []
        for c, w in enumerate(windows):
            def sub(frac: float, _msg: str, c=c, before=before) -> None:
                done = before + round(frac * totals[c])
                hook(0.95 * done / total, f"chunk {c + 1}/{len(windows)}: {done}/{total} frames")

            results.append(self.analyse_chunk(src, ChunkWindow(c, w.start, w.end), shape, hook=sub))
            before += totals[c]
        hook(0.96, "linking identities across chunks")
        out = link_chunk_results(results, info, fps, s)
        hook(1.0, f"{len(out.tracks)} persons")
        return out

    @staticmethod
    def _analysed(src: VideoSource, window: Segment, overlap_s: float) -> Segment:
        return Segment(max(0.0, window.start - overlap_s), min(src.info.duration, window.end + overlap_s))

    @staticmethod
    def _frames_in(src: VideoSource, span: Segment, fps: float) -> np.ndarray:
        """Times of the sampled frames in ``span`` (as ``VideoSource.batches`` yields them: each
        frame's own timestamp, so a variable-rate video's chunk holds the frames of its seconds)."""
        if hasattr(src, "sample"):
            return src.sample(fps, span.start, span.end)[1]
        info = src.info  # a source without timestamps: a constant rate
        t = sample_indices(info.n_frames, info.fps, fps) / info.fps
        return t[(t >= span.start) & (t < span.end)]

    def analyse_chunk(self, video: str | Path | VideoSource, window: ChunkWindow, shape: JobShape,
                      hook: Hook | None = None, tap=None) -> ChunkResult:  # fmt: skip
        """Analyse ``window`` of ``video`` at the job's ``shape`` (see ``pipeline.chunk``).

        Frames in [start - overlap_s, end + overlap_s) are analysed at ``shape.analysis_fps`` with a
        tracker of the chunk's own and binned in ``shape.bin_seconds``; only bins starting inside the
        window are returned. ``hook`` gets
        (fraction of this chunk done, "done/total frames"). ``tap`` (``pipeline.video.FrameTap``,
        e.g. the review copy's writer) is handed the decoded frames it wants, on the decode thread.
        """
        from recognition.tracking import Tracker, context_box
        from recognition.tracking.follow import FaceFollower

        src = video if hasattr(video, "batches") else open_video(video)
        info, s = src.info, self.settings
        index, overlap_s, bin_s = window.index, float(shape.overlap_s), float(shape.bin_seconds)
        fps = min(float(shape.analysis_fps), info.fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"analysis fps must be a positive number, got {fps!r}")
        if not (math.isfinite(bin_s) and bin_s > 0):
            raise ValueError(f"bin length must be a positive number of seconds, got {bin_s!r}")
        window = Segment(max(0.0, float(window.start)), min(float(window.end), info.duration))
        analysed = self._analysed(src, window, overlap_s)
        grid = TimeGrid(bin_s)
        lo, hi = owned_bins(grid, window)
        total = len(self._frames_in(src, analysed, fps))
        hook = hook or (lambda f, m: None)
        clock = self.clock
        many = getattr(self.embedder, "embed_many", None) if self.batch_across_frames else None
        follower = FaceFollower(_TimedDetector(self.detector, clock), clock.timed("embed", embed_one_frame(self.embedder)),
                                0.0 if many else s.full_search_every_s, Tracker(),
                                clock.timed("embed", many) if many else None,
                                None if many or s.follow != "landmarks" else clock.timed("landmarks", self._follow_landmark))  # fmt: skip
        samples: dict[int, _Samples] = defaultdict(_Samples)
        thumbs: dict[int, bytes] = {}
        stream = self.window_model.new_stream() if self.window_model else None
        res = ChunkResult(index=index, window=window, analysed=analysed, info=info, analysis_fps=fps,
                          bin_seconds=bin_s, academic_model=self.academic_name,
                          expression_model=self.expression_name, absent_academic=np.zeros(5, np.float32),
                          absent_engagement=0.0)  # fmt: skip
        done = n_batches = 0
        extra = {"tap": tap} if tap is not None else {}
        batches = src.batches(fps, batch_size=self.frames_per_batch, start=analysed.start, end=analysed.end, **extra)
        # The next batch decodes on a thread while the models run on this one.
        batches = Prefetch(batches, self.prefetch_batches) if self.prefetch_batches else iter(batches)
        try:
            while True:
                with _Timer(clock, "decode"):
                    batch = next(batches, None)
                if batch is None:
                    break
                # The landmarks run while following count under "landmarks", not here.
                lm0, t0 = clock.seconds["landmarks"], time.perf_counter()
                dets = follower.step(batch.frames, batch.times)
                clock.add("detect+track", time.perf_counter() - t0 - (clock.seconds["landmarks"] - lm0))
                own = (np.asarray(grid.index(batch.times)) >= lo) & (np.asarray(grid.index(batch.times)) < hi)
                res.n_face_samples += sum(len(d) for d, o in zip(dets, own) if o)
                res.frames_nominal += int(own.sum())
                tracked = [d[d.track_id >= 0] for d in dets]
                rows = self.faces.run(batch.frames, tracked)
                h, w = batch.frames.shape[1:3]
                for frame, t, d, r, o in zip(batch.frames, batch.times, tracked, rows, own):
                    emb = d.data.get("embedding")
                    for i, tid in enumerate(d.track_id.tolist()):
                        box = d.boxes[i]
                        sm = samples[tid]
                        sm.times.append(float(t))
                        sm.boxes.append(box)
                        sm.context.append(context_box(box, w, h))
                        sm.blend.append(r.blend[i])
                        sm.pose.append(r.pose[i])
                        sm.found.append(bool(r.found[i]))
                        sm.expr.append(r.expr[i])
                        sm.face_px.append(float(box[3] - box[1]))
                        sm.sharp.append(float(r.sharp[i]))
                        rd = r.readability
                        sm.readable.append(bool(rd.readable[i]))
                        sm.reason.append(READABILITY_CODES.index(rd.reason[i]))
                        sm.pose_ok.append(bool(rd.pose_ok[i]))
                        sm.score.append(float(d.scores[i]))
                        sm.emb.append(emb[i] if emb is not None else np.full(128, np.nan, np.float32))
                        if s.store_thumbnails and o and tid not in thumbs and box[3] - box[1] >= 24:
                            thumbs[tid] = _thumbnail(frame, box)
                        if stream is not None:
                            with _Timer(clock, "clip_caer"):
                                stream.push(tid, frame, box, sm.context[-1])
                done += len(batch.indices)
                n_batches += 1
                if n_batches % TRIM_EVERY_BATCHES == 0:
                    _release_free_heap()
                hook(min(done / max(total, 1), 1.0), f"{min(done, total)}/{total} frames")
        finally:
            if isinstance(batches, Prefetch):
                batches.close()
        if stream is not None:
            with _Timer(clock, "clip_caer"):
                for tid, probs in stream.flush().items():
                    samples[tid].academic = probs
        res.frames_done = done
        res.n_full_searches = follower.counts.full_searches
        self.n_full_searches += follower.counts.full_searches
        for k, v in vars(follower.counts).items():
            self.follow_counts[k] += v
        a0, e0 = self.cues.predict(np.full((1, 52), np.nan, np.float32), np.full((1, 3), np.nan, np.float32),
                                   np.full((1, 7), np.nan, np.float32), np.zeros(1, bool))  # fmt: skip
        res.absent_academic, res.absent_engagement = a0[0], float(e0[0])
        with _Timer(clock, "bins"):
            for summ in follower.tracker.finish():
                merged = _Samples()
                for sid in summ.source_ids or (summ.track_id,):  # finish() joined these fragments
                    if sid in samples:
                        merged.extend(samples[sid])
                if merged.times:
                    thumb = next((thumbs[i] for i in summ.source_ids if i in thumbs), None)
                    res.tracks.append(self._chunk_track(summ, merged.arrays(), grid, (lo, hi), window, overlap_s,
                                                        fps, info.duration, thumb, res))  # fmt: skip
        return res

    def _chunk_track(self, summ, a: dict[str, np.ndarray], grid: TimeGrid, owned: tuple[int, int], window: Segment,
                     overlap_s: float, fps: float, duration: float, thumb: bytes | None, res: ChunkResult) -> ChunkTrack:  # fmt: skip
        t = a["times"]
        k = np.asarray(grid.index(t))
        own = (k >= owned[0]) & (k < owned[1])
        zone = (t < window.start + overlap_s) | (t >= window.end - overlap_s)
        bins, feats = None, np.zeros((0, 0), np.float32)
        inputs = np.zeros((0, len(CUE_INPUTS)), np.float32)
        if own.any():
            o = {key: v[own] for key, v in a.items()}
            # The chunk's own (absolute) scores; the link step re-reads them against the person (pipeline.relative).
            inputs = self.cues.inputs(o["blend"], o["pose"], o["expr"], np.ones(int(own.sum()), bool)).astype(np.float32)
            academic, engagement = self.cues.predict_inputs(inputs, np.ones(int(own.sum()), bool))
            if "academic" in o:
                academic = o["academic"].astype(np.float32)
            # The readability gate: no academic emotion (nor its inputs in the stored features) for a face
            # that cannot be read; engagement and head pose only where the pose holds up at that size.
            readable, pose_ok = o["readable"].astype(bool), o["pose_ok"].astype(bool)
            academic = np.where(readable[:, None], academic, np.nan).astype(np.float32)
            engagement = np.where(pose_ok, engagement, np.nan).astype(np.float32)
            o["blend"] = np.where(readable[:, None], o["blend"], np.nan)
            o["pose"] = np.where(pose_ok[:, None], o["pose"], np.nan)
            bins, feats = bin_samples(o, academic, engagement, grid, fps, duration,
                                      (res.absent_academic, res.absent_engagement))  # fmt: skip
        st = np.asarray(summ.times, np.float64)
        sk = np.asarray(grid.index(st))
        s_own = (sk >= owned[0]) & (sk < owned[1])
        if s_own.any():
            t0, t1 = st[s_own].min(), st[s_own].max()
            link = s_own & ((st <= t0 + 1.0) | (st >= t1 - 1.0))
        else:
            link = s_own
        return ChunkTrack(
            track_id=int(summ.track_id),
            times=t[own].astype(np.float64), face_boxes=a["boxes"][own].astype(np.float32).reshape(-1, 4),
            context_boxes=a["context"][own].astype(np.float32).reshape(-1, 4),
            bins=bins if bins is not None else pd.DataFrame(), features=feats,
            n_found=int(a["found"][own].sum()), n_confident=int((a["score"][own] >= self.CONFIRM_SCORE).sum()),
            embedding=np.asarray(summ.embedding, np.float32), embedding_samples=np.asarray(summ.embedding_samples, np.float32).reshape(-1, 128),
            link_times=st[link], link_boxes=np.asarray(summ.boxes, np.float32)[link].reshape(-1, 4),
            overlap_times=t[zone].astype(np.float64), overlap_boxes=a["boxes"][zone].astype(np.float32).reshape(-1, 4),
            overlap_embeddings=a["emb"][zone].astype(np.float32).reshape(-1, 128), thumbnail=thumb,
            cue_inputs=inputs, sharp=a["sharp"][own].astype(np.float32),
            readable=a["readable"][own].astype(bool), pose_ok=a["pose_ok"][own].astype(bool),
        )  # fmt: skip


class _TimedDetector:
    """The detector with its whole-frame and local searches timed apart (for the benches)."""

    def __init__(self, detector, clock: StageClock) -> None:
        self.detect = clock.timed("detect whole", detector.detect)
        self.detect_near = clock.timed("detect near", detector.detect_near)
        self.detect_new = clock.timed("detect whole", detector.detect_new)


class _Timer:
    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self):
        import time

        self.t0 = time.perf_counter()

    def __exit__(self, *exc) -> None:
        import time

        self.clock.add(self.name, time.perf_counter() - self.t0)
