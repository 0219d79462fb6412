"""Face re-identification: dlib 128-d descriptors and the distances between them.

Two embedders give the same descriptors: :class:`FaceEmbedder` (dlib, one face at a
time) and :class:`TorchFaceEmbedder` (dlib's models parsed and run in torch, batched
across faces and frames, CPU or CUDA, no dlib needed once converted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recognition.reid.embedder import EMBEDDING_DIM, FaceEmbedder, pairwise_distance, robust_mean
from recognition.reid.torch_embedder import TorchFaceEmbedder

if TYPE_CHECKING:
    from affectline.settings import Settings

__all__ = ["EMBEDDING_DIM", "FaceEmbedder", "TorchFaceEmbedder", "load_embedder", "pairwise_distance", "robust_mean"]


def load_embedder(settings: "Settings", device: str = "cpu"):
    """The embedder ``settings.embedder`` names: "torch" (batched, default) or "dlib"."""
    kind = getattr(settings, "embedder", "torch")
    if kind == "dlib":
        return FaceEmbedder()
    if kind == "torch":
        return TorchFaceEmbedder(settings.model_dir, device=settings.torch_device() if device == "auto" else device)
    raise ValueError(f"unknown embedder {kind!r} (expected 'torch' or 'dlib')")
