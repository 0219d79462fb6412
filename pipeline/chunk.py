"""One chunk's analysis, as a value a worker can store: ``ChunkResult`` and its bytes (npz + json, no pickle).

A chunk covers a nominal window [start, end) of the video and is analysed over
[start - overlap, end + overlap), clipped to the video, with its own tracker. Each of its
tracks carries

- what the session stores, for the nominal window only (bins owned by the window,
  their features, and the samples inside them), so chunks concatenate without repeats;
- what linking needs: the track's boxes in the overlap zones (the same frames were
  analysed by the neighbouring chunk, so one face shows the same boxes there) and its
  appearance (mean embedding and a few views), plus the first and last second of its
  boxes inside the window (for a motion continuation across the boundary).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from affectline.types import Segment, VideoInfo

FORMAT = 2  # 2: per-sample cue inputs, sharpness and readability (the person-relative pass)


@dataclass
class ChunkTrack:
    """One chunk-local track (after the tracker joined its fragments)."""

    track_id: int
    # Nominal window: samples and bins the session stores.
    times: np.ndarray  # (n,) float64 seconds
    face_boxes: np.ndarray  # (n, 4) float32
    context_boxes: np.ndarray  # (n, 4) float32
    bins: pd.DataFrame  # one row per owned bin of the track's span
    features: np.ndarray  # (bins, len(FEATURE_NAMES)) float32
    n_found: int  # samples with landmarks
    n_confident: int  # samples with detector confidence >= CONFIRM_SCORE
    # Linking.
    embedding: np.ndarray  # (128,) NaN when the track has none
    embedding_samples: np.ndarray  # (k, 128)
    link_times: np.ndarray  # (m,) the first and last second of the samples in the window
    link_boxes: np.ndarray  # (m, 4) smoothed boxes at link_times
    overlap_times: np.ndarray  # (o,) samples in the overlap zones (analysed by a neighbour too)
    overlap_boxes: np.ndarray  # (o, 4) raw detector boxes
    overlap_embeddings: np.ndarray  # (o, 128) NaN where not embedded
    thumbnail: bytes | None = None
    # The person-relative pass after linking (``pipeline.relative``), per sample of ``times``.
    cue_inputs: np.ndarray = field(default_factory=lambda: np.zeros((0, 9), np.float32))  # (n, len(CUE_INPUTS))
    sharp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n,) Laplacian variance
    readable: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) the gate's: may be read
    pose_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) the gate's: head pose reportable

    @property
    def n_samples(self) -> int:
        return len(self.times)


_ARRAYS = ("times", "face_boxes", "context_boxes", "features", "embedding", "embedding_samples", "link_times",
           "link_boxes", "overlap_times", "overlap_boxes", "overlap_embeddings", "cue_inputs", "sharp",
           "readable", "pose_ok")  # fmt: skip


@dataclass(frozen=True)
class JobShape:
    """What a job fixes for every chunk of it (its plan records it, ``tasks.analysis.job_shape``):
    frames analysed a second, bin length, seconds analysed beyond each side of a window. Passed to
    ``Pipeline.analyse_chunk`` with each chunk, never held by the pipeline: one set of loaded models
    serves jobs of any shape."""

    analysis_fps: float
    bin_seconds: float
    overlap_s: float = 2.0


@dataclass(frozen=True)
class ChunkWindow:
    """One chunk of a job: its index and nominal window [start, end) in seconds."""

    index: int
    start: float
    end: float


@dataclass
class ChunkResult:
    """The analysis of one chunk: its tracks and counters (see the module docstring)."""

    index: int
    window: Segment  # nominal [start, end)
    analysed: Segment  # [start - overlap, end + overlap) clipped to the video
    info: VideoInfo
    analysis_fps: float
    bin_seconds: float
    academic_model: str
    expression_model: str
    absent_academic: np.ndarray  # (5,) the cue model's scores for a bin with no face
    absent_engagement: float
    tracks: list[ChunkTrack] = field(default_factory=list)
    n_face_samples: int = 0  # faces detected in frames of the nominal window
    n_full_searches: int = 0  # frames searched whole, over the analysed span
    frames_done: int = 0  # frames analysed, overlap included
    frames_nominal: int = 0  # of which in the nominal window

    @property
    def start(self) -> float:
        return self.window.start

    @property
    def end(self) -> float:
        return self.window.end

    def to_bytes(self) -> bytes:
        """npz of the arrays with a JSON header; no pickled objects (``from_bytes`` reads it back)."""
        arrays: dict[str, np.ndarray] = {}
        meta_tracks = []
        for i, tr in enumerate(self.tracks):
            for k in _ARRAYS:
                arrays[f"{i}.{k}"] = np.asarray(getattr(tr, k))
            cols = [c for c in tr.bins.columns if tr.bins[c].dtype != object]
            text = {c: [None if v is None or v != v else str(v) for v in tr.bins[c]]
                    for c in tr.bins.columns if tr.bins[c].dtype == object}  # fmt: skip
            arrays[f"{i}.bins"] = tr.bins[cols].to_numpy(np.float64) if len(cols) else np.zeros((0, 0))
            if tr.thumbnail is not None:
                arrays[f"{i}.thumbnail"] = np.frombuffer(tr.thumbnail, np.uint8)
            meta_tracks.append({"track_id": tr.track_id, "n_found": tr.n_found, "n_confident": tr.n_confident,
                                "bin_columns": cols, "bin_dtypes": [str(tr.bins[c].dtype) for c in cols],
                                "bin_text": text, "bin_order": list(tr.bins.columns)})  # fmt: skip
        meta = {
            "format": FORMAT, "index": self.index, "window": [self.window.start, self.window.end],
            "analysed": [self.analysed.start, self.analysed.end], "info": self.info.__dict__,
            "analysis_fps": self.analysis_fps, "bin_seconds": self.bin_seconds, "academic_model": self.academic_model,
            "expression_model": self.expression_model, "absent_academic": np.asarray(self.absent_academic).tolist(),
            "absent_engagement": float(self.absent_engagement), "n_face_samples": self.n_face_samples,
            "n_full_searches": self.n_full_searches, "frames_done": self.frames_done,
            "frames_nominal": self.frames_nominal, "tracks": meta_tracks,
        }  # fmt: skip
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ChunkResult":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise ValueError(f"chunk result format {meta.get('format')!r}, this version reads {FORMAT}")
            tracks = []
            for i, m in enumerate(meta["tracks"]):
                vals = {k: z[f"{i}.{k}"] for k in _ARRAYS}
                cols = m["bin_columns"]
                bins = pd.DataFrame(z[f"{i}.bins"].reshape(-1, len(cols)), columns=cols) if cols else pd.DataFrame()
                bins = bins.astype(dict(zip(cols, m["bin_dtypes"])))
                for c, texts in m.get("bin_text", {}).items():  # text columns (the readability reason) ride in the header
                    bins[c] = pd.Series(texts, dtype=object)
                if m.get("bin_order"):
                    bins = bins[m["bin_order"]]
                thumb = z[f"{i}.thumbnail"].tobytes() if f"{i}.thumbnail" in z.files else None
                tracks.append(ChunkTrack(track_id=m["track_id"], bins=bins, n_found=m["n_found"],
                                         n_confident=m["n_confident"], thumbnail=thumb, **vals))  # fmt: skip
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in meta.items() if k in known and k not in ("window", "analysed", "info", "tracks")}
        return cls(window=Segment(*meta["window"]), analysed=Segment(*meta["analysed"]), info=VideoInfo(**meta["info"]),
                   tracks=tracks, **{**args, "absent_academic": np.asarray(meta["absent_academic"], np.float32)})  # fmt: skip
