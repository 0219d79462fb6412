"""MediaPipe's BlazeFace detector, taken from the pinned ``face_landmarker.task`` bundle.

The bundle (a zip) carries ``face_detector.tflite``, the short-range BlazeFace model the
face landmarker uses to find faces; we load it from memory, so no other model file is
needed. BlazeFace sees its input squashed to 128x128 and finds faces larger than about
an eighth of that input, so a whole 1080p frame hides every face under ~130 px. We
therefore also run it on overlapping square tiles, halving the tile side per level down
to ``8 * min_face_px``, and merge the levels with NMS: many more calls, each about 5 ms.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence

import numpy as np

from affectline.settings import Settings, get_settings
from affectline.types import Detections
from recognition.detection.base import FaceDetector, check_frames, nms

# BlazeFace keypoints: subject's right eye, left eye, nose tip, mouth centre, right ear, left ear.
# Reordered to the 5-point layout (eyes, nose, mouth corners); the mouth centre stands in for both corners.
_FIVE = (0, 1, 2, 3, 3)
_FACE_FRACTION = 8  # a face must span about 1/8 of the input side to be found


def tiles(h: int, w: int, min_face_px: int, overlap: float = 0.25) -> list[tuple[int, int, int]]:
    """Square tiles (x, y, side) over an h x w frame: the whole frame, then halving sides."""
    out = [(0, 0, max(h, w))]
    side = min(h, w)
    while side >= _FACE_FRACTION * min_face_px:
        step = max(1, int(side * (1 - overlap)))
        ys = list(range(0, max(h - side, 0) + 1, step)) + ([h - side] if h > side and (h - side) % step else [])
        xs = list(range(0, max(w - side, 0) + 1, step)) + ([w - side] if w > side and (w - side) % step else [])
        out += [(x, y, side) for y in ys for x in xs]
        side //= 2
    return out


class MediaPipeDetector(FaceDetector):
    name = "mediapipe"

    def __init__(
        self,
        settings: Settings | None = None,
        device: str = "cpu",
        min_confidence: float = 0.5,
        tiled: bool = True,
        min_face_px: int | None = None,
    ):
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import FaceDetector as MPFaceDetector
        from mediapipe.tasks.python.vision import FaceDetectorOptions

        from recognition.registry import resolve

        settings = settings or get_settings()
        with zipfile.ZipFile(resolve("face_landmarker", settings)) as z:
            model = z.read("face_detector.tflite")
        opts = FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=model), min_detection_confidence=min_confidence
        )
        self._det = MPFaceDetector.create_from_options(opts)
        self.tiled = tiled
        self.min_face_px = min_face_px or settings.min_face_px

    def _detect_square(self, img: np.ndarray, x0: int, y0: int) -> tuple[list, list, list]:
        import mediapipe as mp

        h, w = img.shape[:2]
        res = self._det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
        boxes, scores, lms = [], [], []
        for d in res.detections:
            b = d.bounding_box
            boxes.append([x0 + b.origin_x, y0 + b.origin_y, x0 + b.origin_x + b.width, y0 + b.origin_y + b.height])
            scores.append(d.categories[0].score if d.categories else 0.0)
            kp = [(x0 + k.x * w, y0 + k.y * h) for k in d.keypoints]
            lms.append([kp[i] for i in _FIVE] if len(kp) >= 4 else [(np.nan, np.nan)] * 5)
        return boxes, scores, lms

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for f in check_frames(frames):
            h, w = f.shape[:2]
            parts = tiles(h, w, self.min_face_px) if self.tiled else [(0, 0, max(h, w))]
            boxes, scores, lms = [], [], []
            for x, y, side in parts:
                # The whole-frame pass pads to a square so BlazeFace does not squash the aspect ratio.
                tile = f[y : y + side, x : x + side]
                if tile.shape[0] != tile.shape[1]:
                    sq = np.zeros((side, side, 3), np.uint8)
                    sq[: tile.shape[0], : tile.shape[1]] = tile
                    tile = sq
                b, s, l = self._detect_square(tile, x, y)
                boxes += b
                scores += s
                lms += l
            if not boxes:
                out.append(Detections.empty())
                continue
            bx, sc, lm = np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(lms, np.float32)
            keep = nms(bx, sc, 0.3, overlap="min")
            bx, sc, lm = bx[keep], sc[keep], lm[keep]
            bx[:, 0::2], bx[:, 1::2] = bx[:, 0::2].clip(0, w), bx[:, 1::2].clip(0, h)
            out.append(Detections(bx, sc, data={"landmarks5": lm}))
        return out

    def close(self) -> None:
        """Call before exit: mediapipe's own finaliser fails once the interpreter is shutting down."""
        if self._det is not None:
            self._det.close()
            self._det = None
