"""Per-face models: MediaPipe landmarks/blendshapes/head pose, and FER2013 expressions.

Both take a full RGB frame plus the face boxes found elsewhere (``Detections``), so the
face detector can be chosen for the footage (MTCNN for small classroom faces) while
these models only look at one crop per face.
"""
