"""Can this face-frame's expression be read? A judgement, with a reason, from what the pipeline already knows.

The expression models (FER2013 mini-Xception, and the academic cue model built on the
same face) give an answer for every crop, however small, turned or blurred the face:
a 12 px face is upsampled to 64 x 64 and classified with the same confidence as a
portrait. This module decides, per face-frame, whether an expression may be given at
all. It is pure numpy (no model, no I/O) so the pipeline, the evaluation command and
the tests judge with the same code.

Inputs are what ``pipeline.faces.FaceStep`` has for each face:
  * the detector's box (xyxy px) and, where the landmarker found the face, the
    inter-ocular distance (pupil to pupil, px; ``iod_from_landmarks``): the face's
    size. Without landmarks the box width stands in, scaled by ``IOD_PER_BOX_WIDTH``
    so the single size threshold means the same thing either way;
  * whether landmarks were found (no landmarks: no blendshapes, no pose, and the cue
    model has nothing to read);
  * head pose (yaw, pitch, roll in degrees; NaN where not found);
  * sharpness: the variance of the Laplacian of the grey crop resized to 64 x 64
    (``pipeline.faces.sharpness``), so it compares across face sizes.

Reasons, in the order they are given when several apply (the first that applies is
stored): the size first (a tiny face is also blurred and often has no landmarks; size
is the cause), then missing landmarks, then pose, then blur.

``pose_ok`` says separately whether head pose (and the engagement built on it) is
still worth reporting: the landmarker's pose holds up at smaller faces than
expressions do, so a face can be "not readable" for its expression while its head
turn is still given, flagged as such.

The thresholds are chosen from the accuracy-by-size curve measured on the
development set (README, "Readability gate").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REASONS: tuple[str, ...] = ("too_small", "no_landmarks", "turned_away", "blurred")
"""Why a visible face was not read ("" when it was)."""

# MediaPipe FaceLandmarker's 478-point mesh: the two iris centres (points 468 and 473).
IRIS_CENTRES = (468, 473)
# Outer eye corners, a fallback where a mesh has no iris points (the 468-point mesh).
EYE_OUTER_CORNERS = (33, 263)

IOD_PER_BOX_WIDTH = 0.45
"""Pupil distance / MTCNN box width: median 0.446 over 300 frontal development faces
(``bench/readability_curve.py``). Turns a box width into the iod it would have."""


@dataclass(frozen=True)
class ReadabilityParams:
    """The gate's thresholds, from the default expression model's accuracy-per-bin curve
    (``bench/readability_curve.py``, README "Readability gate"): a face is read where the
    cross-validated 5-class macro-F1 of its bin, and of every bin beyond it, is >= 0.55 (the issue's
    bar for small faces; chance 0.20), bins of >= 50 development faces (native, 16-64 px, blurred
    copies: 6500 faces). Gate version 2 (``tasks.analysis.pipeline_version``)."""

    min_iod_px: float = 10.0
    """Smallest inter-ocular distance (pupil to pupil, px) read: a face about 23 px wide. Macro-F1 by
    pupil distance: 0.42 (8-9 px), 0.59 (10-11), 0.65 (11-12), 0.62 (12-14 and 14-17), 0.64 (20-30),
    0.66 (>= 30); a 16 px face (pupils 7.4 apart): 0.45, declined."""
    max_abs_yaw: float = 40.0
    """Largest |yaw| (degrees, 0 = facing the camera) read. Measured only to 30: every bin up to it
    reaches the bar (0.65 / 0.66 / 0.58 at 0-10 / 10-20 / 20-30); beyond, the development faces are
    too few (16) to set or veto a limit, so 40 stays (the cue model's head-turn ramp is nearly full)."""
    max_abs_pitch: float = 35.0
    """Largest |pitch| (degrees) read: measured to 30 as for yaw (0.64 / 0.66 / 0.70; 5 faces beyond)."""
    min_sharpness: float = 40.0
    """Smallest Laplacian variance of the 64 x 64 grey crop read. Macro-F1 by sharpness (pupils >= 10 px,
    blurred copies included): 0.36 (20-30), 0.44 (30-40), 0.57 (40-60), 0.65 (60-80), 0.65 (>= 160).
    Unblurred development faces: median ~370 at every size, 16 px included (the crop is resized, so
    the measure follows the face's scale, not its pixels)."""
    require_landmarks: bool = True
    """Without landmarks there are no blendshapes or pose to read or check."""
    pose_min_iod_px: float = 5.0
    """Smallest iod at which head pose (and the engagement built on it) is still reported, flagged
    ``pose_ok``: measured against the same face's native-size pose (``bench/readability_curve.py``),
    yaw is off by 2.4 degrees (median; 90th percentile 6.7) at 12 px faces (pupils 5.6 apart), pitch by
    4.0 (9.0); at 16 px (pupils 7.4) 1.8 (5.2) and 3.2 (7.4); the cue model's head-turn ramp starts at 20."""

    def __post_init__(self) -> None:
        for name in ("min_iod_px", "max_abs_yaw", "max_abs_pitch", "min_sharpness", "pose_min_iod_px"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"ReadabilityParams.{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class Readability:
    """Per face-frame: may its expression be read, and if not, why."""

    readable: np.ndarray  # (n,) bool
    reason: tuple[str, ...]  # (n,) one of REASONS, "" where readable
    pose_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) head pose reportable
    iod: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n,) size used, px

    def __len__(self) -> int:
        return len(self.readable)

    def counts(self) -> dict[str, int]:
        """Face-frames per reason ("" = readable)."""
        out = {r: 0 for r in ("",) + REASONS}
        for r in self.reason:
            out[r] = out.get(r, 0) + 1
        return out


def iod_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(n, K, 2|3) landmark pixels -> (n,) pupil-to-pupil distance in px.

    With the 478-point mesh the iris centres are used; with a 468-point mesh the outer
    eye corners, scaled by 0.66 (their distance is ~1.5x the pupils' on frontal faces).
    NaN where landmarks are NaN.
    """
    lm = np.asarray(landmarks, np.float32)
    if lm.ndim != 3 or lm.shape[0] == 0:
        return np.full(lm.shape[0] if lm.ndim else 0, np.nan, np.float32)
    if lm.shape[1] > max(IRIS_CENTRES):
        a, b = IRIS_CENTRES
        scale = 1.0
    else:
        a, b = EYE_OUTER_CORNERS
        scale = 0.66
    return (np.linalg.norm(lm[:, a, :2] - lm[:, b, :2], axis=1) * scale).astype(np.float32)


def face_size(boxes: np.ndarray, iod: np.ndarray | None, found: np.ndarray) -> np.ndarray:
    """(n,) face size as an iod in px: the landmarks' where found and finite, else from the box width."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    from_box = (boxes[:, 2] - boxes[:, 0]) * IOD_PER_BOX_WIDTH
    if iod is None:
        return from_box.astype(np.float32)
    iod = np.asarray(iod, np.float32).reshape(-1)
    use = np.asarray(found, bool) & np.isfinite(iod)
    return np.where(use, iod, from_box).astype(np.float32)


def judge(boxes: np.ndarray, found: np.ndarray, pose: np.ndarray, sharp: np.ndarray,
          iod: np.ndarray | None = None, params: ReadabilityParams = ReadabilityParams()) -> Readability:  # fmt: skip
    """Judge n face-frames.

    boxes (n, 4) xyxy px; found (n,) landmarks found; pose (n, 3) yaw/pitch/roll degrees
    (NaN where unknown); sharp (n,) Laplacian variance (NaN where the crop was empty);
    iod (n,) pupil distance in px from the landmarks (NaN / None where unknown).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    found = np.asarray(found, bool).reshape(-1)
    pose = np.asarray(pose, np.float32).reshape(-1, 3) if n else np.zeros((0, 3), np.float32)
    sharp = np.asarray(sharp, np.float32).reshape(-1)
    for name, arr in (("found", found), ("pose", pose), ("sharp", sharp)):
        if len(arr) != n:
            raise ValueError(f"judge: {name} has {len(arr)} rows, boxes has {n}")
    if iod is not None and len(np.asarray(iod).reshape(-1)) != n:
        raise ValueError(f"judge: iod has {len(np.asarray(iod).reshape(-1))} rows, boxes has {n}")
    size = face_size(boxes, iod, found)
    p = params
    with np.errstate(invalid="ignore"):
        small = ~(size >= p.min_iod_px)  # NaN size (no usable box) counts as too small
        no_lm = ~found if p.require_landmarks else np.zeros(n, bool)
        turned = (np.abs(pose[:, 0]) > p.max_abs_yaw) | (np.abs(pose[:, 1]) > p.max_abs_pitch)  # NaN -> False
        blurred = ~(sharp >= p.min_sharpness)  # NaN (empty crop) counts as blurred
        pose_ok = found & (size >= p.pose_min_iod_px) & np.all(np.isfinite(pose[:, :2]), axis=1)
    reason = np.full(n, "", dtype=object)
    for name, hit in zip(REASONS, (small, no_lm, turned, blurred)):
        reason[(reason == "") & hit] = name
    readable = reason == ""
    return Readability(readable.astype(bool), tuple(str(r) for r in reason), pose_ok.astype(bool), size)
