"""Small typed values shared by every layer.

Time is always float seconds. ``Segment`` is a [start, end) window (a chunk of a video);
``TimeGrid`` is a regular grid of bins (the session's timeline), used wherever bins are
built or joined so every stage agrees on which bin a time falls in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

ACADEMIC_CLASSES: tuple[str, ...] = ("Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction")
# FER2013 order, as the mini-Xception network outputs them.
EXPRESSION_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass(frozen=True, order=True)
class Segment:
    """A closed-open time interval [start, end) in seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not (self.end >= self.start):
            raise ValueError(f"Segment end {self.end!r} is before start {self.start!r}")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end

    def intersects(self, other: "Segment") -> bool:
        return self.start < other.end and other.start < self.end

    def __and__(self, other: "Segment") -> "Segment | None":
        s, e = max(self.start, other.start), min(self.end, other.end)
        return Segment(s, e) if e > s else None

    def __or__(self, other: "Segment") -> "Segment":
        return Segment(min(self.start, other.start), max(self.end, other.end))


@dataclass(frozen=True)
class TimeGrid:
    """Regular sampling: item i covers [start + i*step, start + (i+1)*step)."""

    step: float
    start: float = 0.0

    def __post_init__(self) -> None:
        if self.step <= 0:
            raise ValueError(f"TimeGrid step must be positive, got {self.step!r}")

    def time(self, i: int | np.ndarray) -> float | np.ndarray:
        return self.start + np.asarray(i) * self.step if isinstance(i, np.ndarray) else self.start + i * self.step

    def segment(self, i: int) -> Segment:
        return Segment(self.start + i * self.step, self.start + (i + 1) * self.step)

    def index(self, t: float | np.ndarray) -> int | np.ndarray:
        idx = np.floor((np.asarray(t) - self.start) / self.step + 1e-9).astype(np.int64)
        return idx if idx.ndim else int(idx)


@dataclass(frozen=True)
class VideoInfo:
    """A decodable video. ``fps`` is the rate the container declares; a variable-rate
    video's frames are timed by their own timestamps, so ``duration_s`` (the end of the last
    frame) is stored beside it; 0 means a constant rate, ``n_frames / fps``."""

    path: str
    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float = 0.0

    @property
    def duration(self) -> float:
        if self.duration_s > 0:
            return self.duration_s
        return self.n_frames / self.fps if self.fps > 0 else 0.0


def _as2d(a: np.ndarray | Sequence, cols: int, name: str, dtype=np.float32) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    if arr.size == 0:
        arr = arr.reshape(0, cols)
    if arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f"{name} must have shape (n, {cols}), got {arr.shape}")
    return arr


@dataclass
class Detections:
    """Faces in one frame, columnar (supervision-style).

    boxes: (n, 4) float32 xyxy pixels; scores: (n,); track_id: (n,) int64, -1 when
    not tracked yet; data: extra per-row arrays (landmarks, embeddings, ...).
    """

    boxes: np.ndarray
    scores: np.ndarray
    track_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = _as2d(self.boxes, 4, "boxes")
        n = len(self.boxes)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scores) != n:
            raise ValueError(f"scores has {len(self.scores)} rows, boxes has {n}")
        if self.track_id is None:
            self.track_id = np.full(n, -1, dtype=np.int64)
        self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        if len(self.track_id) != n:
            raise ValueError(f"track_id has {len(self.track_id)} rows, boxes has {n}")
        for k, v in self.data.items():
            if len(v) != n:
                raise ValueError(f"data[{k!r}] has {len(v)} rows, boxes has {n}")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, idx: int | slice | np.ndarray | list) -> "Detections":
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Detections(
            self.boxes[idx], self.scores[idx], self.track_id[idx], {k: np.asarray(v)[idx] for k, v in self.data.items()}
        )

    def __iter__(self) -> Iterator["Detections"]:
        for i in range(len(self)):
            yield self[i]

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    @property
    def centers(self) -> np.ndarray:
        return np.stack([(self.boxes[:, 0] + self.boxes[:, 2]) / 2, (self.boxes[:, 1] + self.boxes[:, 3]) / 2], axis=1)

    @classmethod
    def merge(cls, items: Sequence["Detections"]) -> "Detections":
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()
        keys = set.intersection(*(set(d.data) for d in items))
        return cls(
            np.concatenate([d.boxes for d in items]),
            np.concatenate([d.scores for d in items]),
            np.concatenate([d.track_id for d in items]),
            {k: np.concatenate([d.data[k] for d in items]) for k in keys},
        )
