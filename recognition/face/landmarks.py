"""Face landmarks, blendshapes and head pose from MediaPipe's FaceLandmarker.

MediaPipe's built-in face detector is tuned for selfies and misses most faces in a
classroom or crowd shot, so the boxes come from the project's detector and each face
is landmarked on its own square crop, resampled to a fixed size. The landmarker still
runs its short-range detector on that crop, which then sees one large, centred face.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import numpy as np

from affectline.features import BLENDSHAPE_NAMES
from affectline.settings import Settings
from affectline.types import Detections

N_LANDMARKS = 478


@dataclass
class LandmarkResult:
    """Per-face outputs, one row per input box; rows where no face was found are NaN.

    blendshapes: (n, 52) float32, columns in ``affectline.features.BLENDSHAPE_NAMES`` order.
    pose: (n, 3) float32 degrees (yaw, pitch, roll), see ``pose_from_matrix``.
    landmarks: (n, 478, 3) float32 frame pixels; z is relative depth in the same pixel
        scale (smaller = closer to the camera), as MediaPipe defines it.
    found: (n,) bool.
    """

    blendshapes: np.ndarray
    pose: np.ndarray
    landmarks: np.ndarray
    found: np.ndarray

    @classmethod
    def empty(cls, n: int) -> LandmarkResult:
        return cls(
            np.full((n, len(BLENDSHAPE_NAMES)), np.nan, np.float32),
            np.full((n, 3), np.nan, np.float32),
            np.full((n, N_LANDMARKS, 3), np.nan, np.float32),
            np.zeros(n, bool),
        )

    def __len__(self) -> int:
        return len(self.found)


def pose_from_matrix(m: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from MediaPipe's 4x4 facial transformation matrix.

    The matrix maps the canonical face model into camera space (x right, y up, z
    towards the viewer), so its rotation columns are the face's axes seen by the camera.
    Conventions, all 0 for a face looking straight into the camera:
      yaw   > 0: the face points towards the image's right (the person's own left);
      pitch > 0: the face points up (chin up); < 0: head down;
      roll  > 0: the head tilts counter-clockwise as seen in the image (top of the head
            towards the image's left, i.e. towards the person's right shoulder).
    Decomposition R = Ry(yaw) @ Rx(-pitch) @ Rz(roll) (yaw, then pitch, then roll).
    """
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    # Remove any scale the solver left in the matrix.
    r = r / np.linalg.norm(r, axis=0, keepdims=True)
    fx, fy, fz = r[:, 2]  # face forward axis (out of the face) in camera coordinates
    yaw = np.arctan2(fx, fz)
    pitch = np.arctan2(fy, np.hypot(fx, fz))
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(-pitch), np.sin(-pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = rx.T @ ry.T @ r
    roll = np.arctan2(rz[1, 0], rz[0, 0])
    return np.degrees([yaw, pitch, roll]).astype(np.float32)


def crop_transform(box: np.ndarray, scale: float, size: int) -> tuple[np.ndarray, float, float, float]:
    """Affine (2x3) taking frame pixels to a ``size`` x ``size`` square crop around ``box``.

    The square is ``scale`` times the box's longer side, centred on the box. Returns the
    matrix and (x0, y0, side) of the square in frame pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    x0, y0 = (x1 + x2 - side) / 2, (y1 + y2 - side) / 2
    k = size / side
    return np.array([[k, 0, -k * x0], [0, k, -k * y0]], np.float64), x0, y0, side


# The detector's (MTCNN's) box from the extents of the 478 landmarks: centre shifted by
# (DX, DY) landmark widths/heights, sides scaled by (SX, SY). Fitted (per-coefficient medians)
# on 184 faces where MTCNN and MediaPipe both found the face: group_multiface.jpg,
# two_people_head_turns, classroom_4students, crowd_walk_1080p and a 30-face 1080p composite
# (tests.realseq.classroom_of). Mean IoU with MTCNN's box: 0.87-0.90 on 70-105 px faces
# (0.84-0.90 leaving each source out of the fit), 0.77 on the 16 px classroom faces, where
# MTCNN's own box is that unsteady. The box is taller than the mesh and sits higher: MTCNN
# boxes reach up into the forehead the mesh stops short of.
BOX_FROM_LANDMARKS = (-0.027, -0.065, 0.976, 1.101)  # DX, DY, SX, SY

# Mesh points for the detector's five landmarks: iris centres, nose tip, mouth corners.
_FIVE = (468, 473, 1, 61, 291)


def box_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(n, 478, 2 or 3) frame-pixel landmarks -> (n, 4) float32 xyxy boxes in the detector's
    convention (see ``BOX_FROM_LANDMARKS``), so FER crops, re-id chips and context boxes see
    the face as they do on a detector's box."""
    p = np.asarray(points, np.float32)
    if len(p) == 0:
        return np.zeros((0, 4), np.float32)
    lo, hi = p[:, :, :2].min(1), p[:, :, :2].max(1)
    size = hi - lo
    dx, dy, sx, sy = BOX_FROM_LANDMARKS
    c = (lo + hi) / 2 + size * np.array([dx, dy], np.float32)
    half = size * np.array([sx, sy], np.float32) / 2
    return np.concatenate([c - half, c + half], 1).astype(np.float32)


def five_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(n, 478, 2+) landmarks -> (n, 5, 2) eyes, nose tip, mouth corners, left then right in
    image order (as detectors give ``data["landmarks5"]``)."""
    p = np.asarray(points, np.float32)[:, list(_FIVE), :2].copy()
    for a, b in ((0, 1), (3, 4)):
        swap = p[:, a, 0] > p[:, b, 0]
        p[swap, a], p[swap, b] = p[swap, b].copy(), p[swap, a].copy()
    return p


class FaceLandmarker:
    """Landmarks, 52 blendshapes and head pose for each given face box.

    Holds a native MediaPipe graph: use as a context manager or call ``close()``.
    Calls from several threads are serialised by a lock.

    scales: crop sides to try, as multiples of the box's longer side, until a face is
        found. MediaPipe still runs its own face detector on the crop and needs context
        around the face; on 10-20 px classroom faces it finds a face in about 30% of
        crops at 1.8x and in about 50% when 1.3x and 2.5x are tried after it, while
        faces of 70 px and more are found at the first try.
    size: crop side in pixels fed to MediaPipe (small faces upsampled, large ones shrunk).
    min_confidence: MediaPipe's face detection and presence thresholds on the crop.
    threads: MediaPipe landmarkers run side by side, each on its share of a frame's faces.
        One landmarker runs one crop at a time on about one core; two on 2 cores landmark
        a 30-face frame 1.7x faster, with the same results.
    ``crops_seen`` and ``seconds`` count the crops run and the time spent in MediaPipe.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        scales: tuple[float, ...] = (1.8, 1.3, 2.5),
        size: int = 256,
        min_confidence: float = 0.5,
        threads: int = 1,
    ) -> None:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        from recognition.registry import resolve

        if not scales or min(scales) < 1.0 or size < 64:
            raise ValueError(f"FaceLandmarker needs scales >= 1 and size >= 64, got scales={scales}, size={size}")
        self.scales, self.size = tuple(scales), size
        self.model_path = resolve("face_landmarker", settings)
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
        )
        self._landmarkers = [vision.FaceLandmarker.create_from_options(options) for _ in range(max(1, threads))]
        self._pool = ThreadPoolExecutor(len(self._landmarkers)) if len(self._landmarkers) > 1 else None
        self._lock = threading.Lock()  # the counters and the one-time name check
        self._names_checked = False
        self.crops_seen = 0
        self.seconds = 0.0  # time spent inside MediaPipe, for ms/crop figures

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for lm in self._landmarkers:
            lm.close()
        self._landmarkers = []

    def _check_names(self, categories) -> None:
        names = tuple(c.category_name for c in categories)
        if names != BLENDSHAPE_NAMES:
            diff = next((i for i, (a, b) in enumerate(zip(names, BLENDSHAPE_NAMES)) if a != b), min(len(names), 52))
            raise RuntimeError(
                f"MediaPipe blendshape order differs from affectline.features.BLENDSHAPE_NAMES at index {diff} "
                f"({len(names)} names from {self.model_path.name})"
            )
        self._names_checked = True

    def analyze(self, frame: np.ndarray, dets: Detections, scales: tuple[float, ...] | None = None) -> LandmarkResult:
        """Landmark every box of ``dets`` in ``frame`` (H x W x 3 uint8 RGB).

        Each box is tried at each of ``scales`` (default ``self.scales``) in turn until a face
        is found whose landmarks are centred inside the box; a miss costs len(scales) crops.
        """
        scales = tuple(scales) if scales else self.scales
        if not self._landmarkers:
            raise RuntimeError("FaceLandmarker.analyze called after close()")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be H x W x 3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")
        out = LandmarkResult.empty(len(dets))
        ok = [i for i, b in enumerate(dets.boxes) if np.all(np.isfinite(b)) and b[2] > b[0] and b[3] > b[1]]
        n = len(self._landmarkers)
        if self._pool is None or len(ok) < 2:
            self._landmark_many(0, frame, dets.boxes, ok, out, scales)
        else:  # each landmarker takes every n-th face; rows of ``out`` are written by one thread each
            list(self._pool.map(lambda k: self._landmark_many(k, frame, dets.boxes, ok[k::n], out, scales), range(n)))
        return out

    def _landmark_many(self, k: int, frame: np.ndarray, boxes: np.ndarray, rows: list[int], out: LandmarkResult,
                       scales: tuple[float, ...]) -> None:  # fmt: skip
        for i in rows:
            for scale in scales:
                if self._landmark_one(k, frame, boxes[i], scale, out, i):
                    break

    def _landmark_one(self, k: int, frame: np.ndarray, box: np.ndarray, scale: float, out: LandmarkResult, i: int) -> bool:
        import cv2  # here, not at the top: the torch landmarker imports this module where cv2 is absent
        import mediapipe as mp

        a, x0, y0, side = crop_transform(box, scale, self.size)
        crop = cv2.warpAffine(frame, a, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        t = time.perf_counter()
        res = self._landmarkers[k].detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop))
        with self._lock:
            self.seconds += time.perf_counter() - t
            self.crops_seen += 1
        if not res.face_landmarks:
            return False
        # Normalised crop coordinates -> frame pixels (z shares x's normalisation).
        lm = np.array([(p.x, p.y, p.z) for p in res.face_landmarks[0]], np.float32) * side
        lm += np.array([x0, y0, 0], np.float32)
        # A wide crop can hold a neighbour's face: keep only a face centred inside the box.
        cx, cy = (lm[:, 0].min() + lm[:, 0].max()) / 2, (lm[:, 1].min() + lm[:, 1].max()) / 2
        if not (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
            return False
        if not self._names_checked:
            with self._lock:
                self._check_names(res.face_blendshapes[0])
        out.landmarks[i] = lm
        out.blendshapes[i] = [c.score for c in res.face_blendshapes[0]]
        out.pose[i] = pose_from_matrix(np.asarray(res.facial_transformation_matrixes[0]))
        out.found[i] = True
        return True
