"""Picks the face landmarker the settings name: MediaPipe itself or its re-implementation.

All give the same ``LandmarkResult`` from ``analyze(frame, dets)``. The re-implementation
(``recognition.face.mesh.landmarker.TorchFaceLandmarker``) also has ``analyze_many(frames,
dets_list)``, batched across frames, and runs MediaPipe's three networks either in torch
(CPU or CUDA) or in LiteRT's XNNPACK kernels (CPU).
"""

from __future__ import annotations

from affectline.settings import Settings, get_settings


def load_landmarker(settings: Settings | None = None, device: str | None = None, *, threads: int = 1):
    """The landmarker ``settings.landmarker`` names, on ``device`` (default ``settings.torch_device()``):

    - 'torch': ``TorchFaceLandmarker`` with the torch graph, on the CPU or CUDA;
    - 'litert': ``TorchFaceLandmarker`` with LiteRT's networks, ``threads`` sets side by side (CPU only);
    - 'mediapipe': MediaPipe's ``FaceLandmarker``, ``threads`` graphs side by side (CPU only);
    - 'auto': torch on CUDA; on the CPU litert, or MediaPipe where LiteRT is not installed.

    On 2 CPU cores (``bench/landmarks.py``, quiet) litert landmarks a face in 5.0 ms of wall time and
    8.7 CPU-ms, MediaPipe's own graph in 6.2 ms and 10.6 CPU-ms, the torch graph in 11.4 ms and
    14.8 CPU-ms: MediaPipe spends ~3.8 CPU-ms a face around its networks (ours 1.9), and
    XNNPACK beats torch's CPU convolutions."""
    s = settings or get_settings()
    device = device or s.torch_device()
    name = s.landmarker
    if name == "auto":
        from recognition.face.mesh.litert import available

        name = "torch" if device.startswith("cuda") else "litert" if available() else "mediapipe"
    if name in ("torch", "litert"):
        from recognition.face.mesh.landmarker import TorchFaceLandmarker

        if name == "litert":
            from recognition.face.mesh.litert import available

            if not device.startswith("cpu"):
                raise ValueError(f"landmarker 'litert' runs on the CPU only, not on {device}: use 'torch' or 'auto' there")
            if not available():
                raise RuntimeError("landmarker 'litert' needs the ai-edge-litert package (pip install ai-edge-litert)")
            return TorchFaceLandmarker(s, device="cpu", runtime="litert", threads=threads)
        return TorchFaceLandmarker(s, device=device)
    from recognition.face.landmarks import FaceLandmarker

    return FaceLandmarker(s, threads=threads)
