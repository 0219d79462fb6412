"""128-d face descriptors with dlib's ResNet (the model behind ``face_recognition``).

Each face is aligned by dlib's 5-point shape predictor inside a box derived from the
detector's box, cut to a 150x150 chip and embedded. Distances follow dlib's convention:
euclidean, and two faces closer than about 0.6 are the same person (dlib reports 99.38 %
on LFW at that threshold). Quality falls with face size: below about 24 px the same
person's faces drift to 0.5-0.65 apart, so the tracker does not use embeddings of faces
that small.

Cost: dlib's CPU build here runs without BLAS, about 0.1 s a face on one core, so the
tracker asks for embeddings only where they decide something (see
``Tracker.needs_embedding``). :class:`recognition.reid.TorchFaceEmbedder` computes the
same descriptors (to ~1e-6) batched in torch, CPU or CUDA, at a fraction of that cost.
"""

from __future__ import annotations

import numpy as np

from affectline.types import Detections

EMBEDDING_DIM = 128


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) integer dlib rectangles (left, top, right, bottom) like dlib's HOG boxes,
    which the shape predictor was trained on.

    Detector boxes (MTCNN's are taller than wide, forehead to chin) are turned into a
    square of the larger side, centred a little below the box centre.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b.T
    side = np.maximum(x2 - x1, y2 - y1) * 0.9
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.05 * (y2 - y1)
    l, t = np.round(cx - side / 2), np.round(cy - side / 2)  # half to even, as Python's round
    s = np.maximum(np.round(side), 1)
    return np.stack([l, t, l + s, t + s], 1).astype(np.int64)


def _dlib_box(box: np.ndarray):
    """One detector box as a ``dlib.rectangle`` (see :func:`square_boxes`)."""
    import dlib

    l, t, r, b = (int(v) for v in square_boxes(box)[0])
    return dlib.rectangle(l, t, r, b)  # dlib reads pixels outside the frame as black


class FaceEmbedder:
    """dlib face descriptors for the faces of one frame.

    ``padding`` is dlib's chip padding around the aligned face (0.25 as in dlib's
    examples); ``jitters`` > 0 averages that many randomly jittered chips (slower, a
    little more accurate).
    """

    def __init__(self, padding: float = 0.25, jitters: int = 0) -> None:
        import dlib
        import face_recognition_models as frm

        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.padding, self.jitters = padding, jitters

    def embed(self, frame: np.ndarray, dets: Detections) -> np.ndarray:
        """(n, 128) float32 descriptors of the faces ``dets`` in the RGB uint8 ``frame``, in one batch."""
        import dlib

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be RGB uint8 HxWx3, got dtype {frame.dtype} shape {frame.shape}")
        if len(dets) == 0:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        frame = np.ascontiguousarray(frame)
        shapes = dlib.full_object_detections([self._shape(frame, _dlib_box(b)) for b in dets.boxes])
        desc = self._net.compute_face_descriptor(frame, shapes, self.jitters, self.padding)
        return np.asarray([np.asarray(d) for d in desc], dtype=np.float32).reshape(len(dets), EMBEDDING_DIM)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between descriptors; broadcasts ((128,) vs (n,128) gives (n,))."""
        return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)


def pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) euclidean distances between rows of a (n, 128) and b (m, 128); NaN rows give NaN."""
    a, b = np.asarray(a, np.float64).reshape(-1, EMBEDDING_DIM), np.asarray(b, np.float64).reshape(-1, EMBEDDING_DIM)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def robust_mean(x: np.ndarray, iters: int = 20) -> np.ndarray:
    """Geometric median of rows (Weiszfeld): one turned or blurred face barely moves it. NaN rows ignored."""
    x = np.asarray(x, np.float64).reshape(-1, EMBEDDING_DIM)
    x = x[~np.isnan(x).any(1)]
    if len(x) == 0:
        return np.full(EMBEDDING_DIM, np.nan, np.float32)
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(x - m, axis=1), 1e-6)
        new = (w[:, None] * x).sum(0) / w.sum()
        if np.linalg.norm(new - m) < 1e-6:
            break
        m = new
    return m.astype(np.float32)
