"""Face detection: one interface (:class:`FaceDetector`), four detectors selectable by name.

>>> det = load_detector("mtcnn", settings, device="cuda")
>>> dets = det.detect(frames)  # one Detections per RGB uint8 frame
"""

from recognition.detection.base import DETECTORS, FaceDetector, check_frames, load_detector

__all__ = ["DETECTORS", "FaceDetector", "check_frames", "load_detector"]
