"""CLIP-CAER in the pipeline: window crops per track, batched scoring with bounded memory.

A window is 16 frames of one person (4 s at the default 4 fps analysis rate): 16 face
crops and 16 context crops, each 224 x 224 uint8 RGB (``window_crops`` makes them from
a track's boxes). ``CaerScorer.score`` takes all windows of a chunk, for all persons,
as arrays or as iterators, and runs them through the model ``batch_size`` windows at a
time: the text side once, mixed precision on CUDA. Peak memory depends on the batch
size, not on how many windows come in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import numpy as np
import torch

from recognition.academic.caer_data import context_crop, face_crop
from recognition.academic.caer_train import autocast_for, resolve_device
from recognition.academic.clip_caer import ClipCaer


def window_crops(
    frames: Sequence[np.ndarray] | np.ndarray,
    face_boxes: np.ndarray,
    context_boxes: np.ndarray,
    size: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame face and context crops of one track, as the official loader makes them.

    frames: T uint8 RGB frames (H, W, 3); face_boxes: (T, 4) xyxy pixels, a NaN row where
    the face was not detected (the whole frame is used then, as in the official code);
    context_boxes: (T, 4) per frame or (4,) for the whole window (NaN = whole frame).
    Face: box widened by 20 px per side, clipped, bilinear resize to size x size
    ignoring aspect. Context: box cropped, then letterboxed to size x size.
    Returns (faces, contexts), each uint8 (T, size, size, 3).
    """
    n = len(frames)
    face_boxes = np.asarray(face_boxes, dtype=np.float64).reshape(-1, 4)
    context_boxes = np.asarray(context_boxes, dtype=np.float64)
    if context_boxes.ndim == 1:
        context_boxes = np.broadcast_to(context_boxes.reshape(1, 4), (n, 4))
    if len(face_boxes) != n or len(context_boxes) != n:
        raise ValueError(f"{n} frames but {len(face_boxes)} face boxes and {len(context_boxes)} context boxes")
    faces = np.stack([face_crop(f, b, size) for f, b in zip(frames, face_boxes)])
    contexts = np.stack([context_crop(f, b, size) for f, b in zip(frames, context_boxes)])
    return faces, contexts


def _batches(windows: np.ndarray | Iterable[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """(k, T, H, W, 3) slices of an array, or stacks of up to n windows from an iterator."""
    if isinstance(windows, np.ndarray):
        if windows.ndim != 5:
            raise ValueError(f"windows must be (N, T, H, W, 3), got shape {windows.shape}")
        for i in range(0, len(windows), n):
            yield windows[i : i + n]
        return
    it = iter(windows)
    while chunk := list(islice(it, n)):
        yield np.stack(chunk)


class CaerScorer:
    """Batched CLIP-CAER inference over windows: ``score(faces, contexts) -> (N, n_classes)`` probabilities.

    ``device`` None keeps the model where it is; "auto" picks CUDA when present. On CUDA
    the model runs under autocast (bf16 where supported, else fp16); on CPU in float32.
    ``name`` and ``sha256`` say which model and weights produced the numbers.
    """

    def __init__(
        self, model: ClipCaer, batch_size: int = 32, device: str | torch.device | None = None, amp: str = "auto"
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self._cast, _ = autocast_for(self.device, amp)
        with torch.inference_mode(), self._cast:
            self._text = self.model.text_features()  # video-independent: computed once

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def sha256(self) -> str | None:
        return self.model.sha256

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    def iter_scores(
        self, face_windows: np.ndarray | Iterable[np.ndarray], context_windows: np.ndarray | Iterable[np.ndarray]
    ) -> Iterator[np.ndarray]:
        """Probabilities batch by batch (each (k, n_classes) float32), for streaming callers."""
        faces, contexts = _batches(face_windows, self.batch_size), _batches(context_windows, self.batch_size)
        done = 0
        for f in faces:
            c = next(contexts, None)
            if c is None or len(c) != len(f):
                raise ValueError(
                    f"fewer context windows than face windows (after {done + (0 if c is None else len(c))})"
                )
            done += len(f)
            with torch.inference_mode(), self._cast:
                logits = self.model(self.model.to_input(f, "face"), self.model.to_input(c, "context"), self._text)
            yield torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if next(contexts, None) is not None:
            raise ValueError(f"more context windows than the {done} face windows")

    def score(
        self, face_windows: np.ndarray | Iterable[np.ndarray], context_windows: np.ndarray | Iterable[np.ndarray]
    ) -> np.ndarray:
        """(N, n_classes) probabilities for N windows.

        Windows come as (N, T, H, W, 3) uint8 arrays or as iterators of (T, H, W, 3) arrays.
        """
        out = list(self.iter_scores(face_windows, context_windows))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)
