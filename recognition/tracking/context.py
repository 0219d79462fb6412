"""The body/context box around a face, for the context stream of the academic-emotion model.

CLIP-CAER's context stream sees the person rather than the face: posture, hands, what is
on the desk. From one face box (width w, height h, centre cx) we take

- horizontally: cx +- 1.75 w (3.5 face widths: shoulders and elbows of a seated person);
- vertically: from 0.5 h above the face top to 2.5 h below the face bottom (hair to
  desk level: 4 face heights in all),

then shift the box back inside the frame where it sticks out (keeping its size when the
frame allows, so the context keeps the same scale near the borders) and clip what still
does not fit. The model letterboxes the crop, so its aspect ratio need not be square.
"""

from __future__ import annotations

import numpy as np

# Extents relative to the face box, as (left, top, right, bottom) multiples of w or h.
LEFT_RIGHT_W = 1.75
ABOVE_H = 0.5
BELOW_H = 2.5


def context_box(face_box: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
    """(4,) float32 xyxy context box for one xyxy face box inside a frame_w x frame_h frame."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(face_box).reshape(4))
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"face_box must be xyxy with positive size, got {list(np.asarray(face_box).reshape(4))}")
    if frame_w <= 0 or frame_h <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    w, h, cx = x2 - x1, y2 - y1, (x1 + x2) / 2
    box = np.array([cx - LEFT_RIGHT_W * w, y1 - ABOVE_H * h, cx + LEFT_RIGHT_W * w, y2 + BELOW_H * h])
    for lo, hi, size in ((0, 2, frame_w), (1, 3, frame_h)):
        shift = max(0.0, -box[lo]) - max(0.0, box[hi] - size)
        box[[lo, hi]] += shift
        box[[lo, hi]] = box[[lo, hi]].clip(0, size)
    return box.astype(np.float32)


def context_boxes(face_boxes: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
    """(n, 4) context boxes for (n, 4) face boxes."""
    return np.array(
        [context_box(b, frame_w, frame_h) for b in np.asarray(face_boxes).reshape(-1, 4)], np.float32
    ).reshape(-1, 4)
