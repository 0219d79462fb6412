"""The face-detector interface, the registry of detector names, and frame validation."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self

import numpy as np

from affectline.settings import Settings, get_settings
from affectline.types import Detections

# name -> (module, class, one-line description). Modules are imported only when a
# detector is loaded, so choosing MTCNN never imports dlib or mediapipe.
DETECTORS: dict[str, tuple[str, str, str]] = {
    "mtcnn": ("recognition.detection.mtcnn", "MTCNNDetector", "MTCNN P/R/O-Net cascade in torch (default)"),
    "dlib_hog": ("recognition.detection.dlib_detectors", "DlibHOGDetector", "dlib HOG + linear SVM, frontal faces"),
    "dlib_mmod": ("recognition.detection.dlib_detectors", "DlibMMODDetector", "dlib MMOD CNN (slow on CPU)"),
    "mediapipe": ("recognition.detection.mediapipe_detector", "MediaPipeDetector", "MediaPipe BlazeFace short range"),
}


def check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a batch of RGB uint8 HxWx3 frames; raise one clear line naming the bad frame."""
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        raise ValueError(f"frames must be a sequence of HxWx3 images, got one array of shape {frames.shape}")
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frame {i} must be RGB uint8 HxWx3, got dtype {f.dtype} shape {f.shape}")
        out.append(f)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float, overlap: str = "iou") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first.

    ``overlap="min"`` measures intersection over the smaller box, which also removes a box
    nested inside a larger one (a face part found as a face).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    b = np.asarray(boxes, np.float64)[order]
    area = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    lt, rb = np.maximum(b[:, None, :2], b[None, :, :2]), np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    denom = np.minimum(area[:, None], area[None, :]) if overlap == "min" else area[:, None] + area[None, :] - inter
    over = inter / np.maximum(denom, 1e-9) > thr
    dropped = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not dropped[i]:
            keep.append(i)
            dropped |= over[i]
    return order[np.asarray(keep, dtype=np.int64)]


def off_known(dets: Detections, known: np.ndarray) -> Detections:
    """The detections that are not one of the ``known`` faces (n, 4 xyxy): centre in none of
    those boxes and IoU below 0.3 with each (a box can be found a little off the known one)."""
    known = np.asarray(known, np.float32).reshape(-1, 4)
    if len(dets) == 0 or len(known) == 0:
        return dets
    b = dets.boxes
    c = (b[:, None, :2] + b[:, None, 2:]) / 2
    inside = ((c >= known[None, :, :2]) & (c < known[None, :, 2:])).all(2).any(1)
    lt, rb = np.maximum(b[:, None, :2], known[None, :, :2]), np.minimum(b[:, None, 2:], known[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_b, area_k = (np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1) for x in (b, known))
    over = (inter / np.maximum(area_b[:, None] + area_k[None, :] - inter, 1e-9)).max(1) >= 0.3
    return dets[~(inside | over)]


class FaceDetector(ABC):
    """Finds faces in batches of RGB frames.

    ``detect`` returns one :class:`Detections` per input frame, boxes in xyxy pixels of
    that frame and scores in [0, 1]; detectors that locate landmarks put them in
    ``data["landmarks5"]`` (n, 5, 2): eyes, nose tip, mouth corners (left then right
    in image order).
    """

    name: str = ""

    @abstractmethod
    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]: ...

    def detect_near(self, frame: np.ndarray, boxes: np.ndarray) -> Detections:
        """Faces near ``boxes`` (n, 4 xyxy): where a tracker expects the faces it follows.

        Detectors with a cheap local search override this (MTCNN searches a few face-widths
        around each box); the default searches the whole frame, so any detector can be used.
        """
        return self.detect([frame])[0]

    def detect_new(self, frame: np.ndarray, known: np.ndarray) -> Detections:
        """Faces in ``frame`` other than the ``known`` ones (n, 4 xyxy): faces already followed.

        MTCNN skips the refinement of candidates on known faces (most of a whole search's cost
        on a full classroom); the default searches the whole frame and drops them afterwards."""
        return off_known(self.detect([frame])[0], known)

    def close(self) -> None:
        """Release native resources; the detector is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_detector(name: str, settings: Settings | None = None, device: str = "cpu") -> FaceDetector:
    """Build the detector called ``name`` (see :data:`DETECTORS`); ``device`` matters for torch detectors."""
    try:
        module, cls, _ = DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}") from None
    factory = getattr(importlib.import_module(module), cls)
    return factory(settings or get_settings(), device=device)
