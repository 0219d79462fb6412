"""Picks the face landmarker the settings name: MediaPipe itself or its torch re-implementation.

Both give the same ``LandmarkResult`` from ``analyze(frame, dets)``; the torch one also
has ``analyze_many(frames, dets_list)``, batched across frames, and runs on CUDA.
"""

from __future__ import annotations

from affectline.settings import Settings, get_settings


def load_landmarker(settings: Settings | None = None, device: str | None = None, *, threads: int = 1):
    """``TorchFaceLandmarker`` on ``device`` (default ``settings.torch_device()``) when
    ``settings.landmarker`` is 'torch', or 'auto' and the device is CUDA; else MediaPipe's
    ``FaceLandmarker`` with ``threads`` graphs side by side (CPU only; ``device`` is ignored).

    'auto' keeps MediaPipe on CPU because there one XNNPACK graph per core is faster per face
    than the torch graph (bench/landmarks.py), while the torch one is what runs on a GPU."""
    s = settings or get_settings()
    device = device or s.torch_device()
    if s.landmarker == "torch" or (s.landmarker == "auto" and device.startswith("cuda")):
        from recognition.face.mesh.landmarker import TorchFaceLandmarker

        return TorchFaceLandmarker(s, device=device)
    from recognition.face.landmarks import FaceLandmarker

    return FaceLandmarker(s, threads=threads)
