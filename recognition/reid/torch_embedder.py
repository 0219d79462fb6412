"""dlib's face descriptors computed in batches with torch: many faces, many frames, one forward.

Same steps and numbers as :class:`recognition.reid.embedder.FaceEmbedder` (dlib):
square box from the detector box -> dlib's 5-point landmarks -> aligned 150x150 chip
(padding 0.25) -> dlib's face ResNet -> 128-d descriptor, with

- landmarks from :mod:`recognition.reid.landmarks` (dlib's regression trees in numpy,
  integer-identical to dlib), or from dlib itself with ``landmarks="dlib"``;
- chips from :mod:`recognition.reid.chips` (torch; dlib's chips bit for bit, image
  pyramid for faces over ~250 px included);
- the network from :mod:`recognition.reid.resnet` (torch; dlib's own descriptors to
  ~1e-6 on identical chips).

Nothing here needs dlib once the converted weights are in ``model_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from affectline.types import Detections
from recognition.reid.chips import chip_geometry, extract_chips
from recognition.reid.embedder import EMBEDDING_DIM, square_boxes
from recognition.reid.resnet import CHIP_SIZE, load_face_resnet


def _check_frame(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be RGB uint8 HxWx3, got dtype {frame.dtype} shape {frame.shape}")
    return frame


class TorchFaceEmbedder:
    """dlib face descriptors in torch, batched across faces and frames.

    ``batch_size`` bounds the chips in one forward pass (memory: ~40 MB of activations
    per 64 chips on CPU). ``padding`` is dlib's chip padding (0.25 as FaceEmbedder).
    """

    def __init__(
        self,
        model_dir: Path | str,
        device: str = "cpu",
        batch_size: int = 64,
        padding: float = 0.25,
        landmarks: Literal["numpy", "dlib"] = "numpy",
    ) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.padding = batch_size, padding
        self.net = load_face_resnet(Path(model_dir), device=str(self.device))
        if landmarks == "dlib":
            import dlib
            import face_recognition_models as frm

            self._dlib_shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
            self._shape = None
        elif landmarks == "numpy":
            from recognition.reid.landmarks import load_shape_predictor

            self._shape = load_shape_predictor(Path(model_dir))
        else:
            raise ValueError(f"landmarks must be 'numpy' or 'dlib', got {landmarks!r}")

    # -- steps ---------------------------------------------------------------------------

    def landmarks(self, frames: Sequence[np.ndarray], image_idx: np.ndarray, rects: np.ndarray) -> np.ndarray:
        """(n, 5, 2) integer landmarks of the faces in dlib rectangles ``rects``."""
        if self._shape is not None:
            return self._shape(list(frames), image_idx, rects)
        import dlib

        out = np.zeros((len(rects), 5, 2), np.int64)
        for i, (u, r) in enumerate(zip(image_idx, rects)):
            det = self._dlib_shape(frames[u], dlib.rectangle(*(int(v) for v in r)))
            out[i] = [(p.x, p.y) for p in det.parts()]
        return out

    def chips(self, frames: Sequence[np.ndarray], image_idx: np.ndarray, landmarks: np.ndarray):
        """(n, 3, 150, 150) float chips on the embedder's device."""
        geom = chip_geometry(landmarks, CHIP_SIZE, self.padding)
        return extract_chips(frames, image_idx, geom, device=str(self.device))

    def embed_chips(self, chips) -> np.ndarray:
        """(n, 128) float32 descriptors of (n, 3, 150, 150) chips, ``batch_size`` at a time."""
        import torch

        out = np.zeros((len(chips), EMBEDDING_DIM), np.float32)
        with torch.inference_mode():
            for s in range(0, len(chips), self.batch_size):
                x = torch.as_tensor(chips[s : s + self.batch_size], device=self.device)
                out[s : s + len(x)] = self.net(x).float().cpu().numpy()
        return out

    # -- FaceEmbedder API ----------------------------------------------------------------

    def embed_many(self, frames: Sequence[np.ndarray], dets_list: Sequence[Detections]) -> list[np.ndarray]:
        """One (n_i, 128) float32 array per frame; all faces go through the network together."""
        if len(frames) != len(dets_list):
            raise ValueError(f"{len(frames)} frames but {len(dets_list)} detection sets")
        frames = [_check_frame(f) for f in frames]
        counts = [len(d) for d in dets_list]
        if sum(counts) == 0:
            return [np.zeros((0, EMBEDDING_DIM), np.float32) for _ in frames]
        image_idx = np.repeat(np.arange(len(frames)), counts)
        boxes = np.concatenate([d.boxes for d in dets_list if len(d)])
        if not np.isfinite(boxes).all():
            raise ValueError(f"face boxes must be finite, got {boxes[~np.isfinite(boxes).all(1)][0].tolist()}")
        rects = square_boxes(boxes)
        lm = self.landmarks(frames, image_idx, rects)
        desc = self.embed_chips(self.chips(frames, image_idx, lm))
        return np.split(desc, np.cumsum(counts)[:-1])

    def embed(self, frame: np.ndarray, dets: Detections) -> np.ndarray:
        """(n, 128) float32 descriptors of the faces ``dets`` in the RGB uint8 ``frame``."""
        return self.embed_many([frame], [dets])[0]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean distance between descriptors; broadcasts ((128,) vs (n,128) gives (n,))."""
        return np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)
