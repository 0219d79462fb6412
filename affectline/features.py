"""Names of the per-bin feature vector stored in ``feature_series``.

This is the contract between the pipeline (which writes it) and the clinicians'
models (which re-score from it without touching the video). Bins where the face
was not seen hold NaN in every column but ``face_visible``.
"""

from __future__ import annotations

from affectline.types import EXPRESSION_CLASSES

# MediaPipe FaceLandmarker blendshape categories, in the model's output order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)  # fmt: skip
assert len(BLENDSHAPE_NAMES) == 52

POSE_NAMES: tuple[str, ...] = ("yaw", "pitch", "roll")  # degrees; yaw 0 = facing the camera
EXPRESSION_FEATURE_NAMES: tuple[str, ...] = tuple(f"p_{c}" for c in EXPRESSION_CLASSES)
# Quality: fraction of the bin's samples with a face; landmarks found; face height in px; sharpness
# (variance of the Laplacian of the grey face crop, higher is sharper).
QUALITY_NAMES: tuple[str, ...] = ("face_visible", "landmarks_found", "face_px", "sharpness")

FEATURE_NAMES: tuple[str, ...] = BLENDSHAPE_NAMES + POSE_NAMES + EXPRESSION_FEATURE_NAMES + QUALITY_NAMES
