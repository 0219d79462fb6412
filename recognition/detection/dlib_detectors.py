"""dlib's two face detectors: HOG + linear SVM, and the MMOD CNN.

Both see faces down to a fixed window of about 80 px (measured: MMOD finds none of the
group photo's faces at 40-50 px, all six at 80-120 px), so
smaller faces need the image upsampled, which costs time quadratically; the number of
2x upsamplings is derived from ``Settings.min_face_px`` and capped by a pixel budget.
Scores are dlib's detection margins squashed to [0, 1] with a logistic function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from affectline.settings import Settings, get_settings
from affectline.types import Detections
from recognition.detection.base import FaceDetector, check_frames


def _upsamples(min_face_px: int, window_px: int, h: int, w: int, max_pixels: int) -> int:
    want = max(0, math.ceil(math.log2(window_px / min_face_px)))
    while want > 0 and h * w * 4**want > max_pixels:
        want -= 1
    return want


def _to_detections(rects: list, margins: list, h: int, w: int) -> Detections:
    if not rects:
        return Detections.empty()
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    scores = 1.0 / (1.0 + np.exp(-np.asarray(margins, np.float32)))
    return Detections(boxes, scores)


class _DlibDetector(FaceDetector):
    window_px = 80
    max_upsampled_pixels = 16_000_000  # about 4 full-HD frames; beyond that dlib takes seconds a frame

    def __init__(
        self,
        settings: Settings | None = None,
        device: str = "cpu",
        min_face_px: int | None = None,
        max_upsampled_pixels: int | None = None,
    ):
        self.min_face_px = min_face_px or (settings or get_settings()).min_face_px
        self.max_upsampled_pixels = max_upsampled_pixels or self.max_upsampled_pixels

    def upsamples(self, h: int, w: int) -> int:
        return _upsamples(self.min_face_px, self.window_px, h, w, self.max_upsampled_pixels)


class DlibHOGDetector(_DlibDetector):
    """Fast on CPU for frontal faces of 80 px and more; misses turned and small faces."""

    name = "dlib_hog"

    def __init__(self, settings: Settings | None = None, device: str = "cpu", **kw):
        import dlib

        super().__init__(settings, device, **kw)
        self._det = dlib.get_frontal_face_detector()

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for f in check_frames(frames):
            h, w = f.shape[:2]
            rects, margins, _ = self._det.run(f, self.upsamples(h, w), 0.0)
            out.append(_to_detections(list(rects), list(margins), h, w))
        return out


class DlibMMODDetector(_DlibDetector):
    """A CNN, more tolerant of pose than HOG, but slow on CPU: ~18 s for a 1200x630 image here (dlib without BLAS)."""

    name = "dlib_mmod"

    def __init__(self, settings: Settings | None = None, device: str = "cpu", **kw):
        import dlib
        import face_recognition_models

        super().__init__(settings, device, **kw)
        self._det = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for f in check_frames(frames):
            h, w = f.shape[:2]
            found = self._det(f, self.upsamples(h, w))
            out.append(_to_detections([d.rect for d in found], [d.confidence for d in found], h, w))
        return out

    def close(self) -> None:
        self._det = None
