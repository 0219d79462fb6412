"""MediaPipe landmarks, blendshapes and head pose on face crops of real footage.

Faces are found with dlib's HOG detector (the landmarker never detects on the full
frame); what is asserted was checked by eye on the frames named.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import decord
import dlib
import numpy as np
import pytest

from affectline.features import BLENDSHAPE_NAMES
from affectline.types import Detections
from recognition.face.landmarks import FaceLandmarker, LandmarkResult, crop_transform, pose_from_matrix

from tests.paths import MEDIA
HOG = dlib.get_frontal_face_detector()
# MediaPipe's 478-point mesh: nose tip, cheek extremes, outer eye corners, forehead, chin.
NOSE, CHEEK_R, CHEEK_L, EYE_R, EYE_L, FOREHEAD, CHIN = 1, 234, 454, 33, 263, 10, 152


def hog(frame: np.ndarray, upsample: int) -> Detections:
    rects = HOG(frame, upsample)
    boxes = np.array(sorted([r.left(), r.top(), r.right(), r.bottom()] for r in rects), np.float32).reshape(-1, 4)
    return Detections(boxes, np.ones(len(boxes)))


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker() as fl:
        yield fl


@pytest.fixture(scope="module")
def group():
    frame = cv2.cvtColor(cv2.imread(str(MEDIA / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    return frame, hog(frame, 1)


@pytest.fixture(scope="module")
def turns():
    """Frames of the head-turn clip; the two people sit still, so frame 0's HOG boxes serve all frames."""
    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    frames = {i: vr[i].asnumpy() for i in (0, 17, 20, 40, 43)}
    dets = hog(frames[0], 1)
    assert len(dets) == 2  # woman (left), man (right)
    return frames, dets


def test_all_group_faces_are_landmarked_in_frame_coordinates(landmarker, group):
    frame, dets = group
    assert len(dets) == 6
    r = landmarker.analyze(frame, dets)
    assert r.found.all()
    assert r.blendshapes.shape == (6, 52) and r.blendshapes.dtype == np.float32
    assert r.pose.shape == (6, 3) and r.landmarks.shape == (6, 478, 3)
    assert np.all((r.blendshapes >= 0) & (r.blendshapes <= 1))
    for box, lm in zip(dets.boxes, r.landmarks):
        # The mesh's outline spans the detector's box (not the crop's, nor the neighbour's).
        lx1, ly1, lx2, ly2 = lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()
        ix = max(0.0, min(lx2, box[2]) - max(lx1, box[0])) * max(0.0, min(ly2, box[3]) - max(ly1, box[1]))
        union = (lx2 - lx1) * (ly2 - ly1) + (box[2] - box[0]) * (box[3] - box[1]) - ix
        assert ix / union > 0.4, (box, (lx1, ly1, lx2, ly2))
        assert box[0] <= lm[NOSE, 0] <= box[2] and box[1] <= lm[NOSE, 1] <= box[3]
    assert landmarker._names_checked


def test_smiles_show_in_the_blendshapes(landmarker, group):
    frame, dets = group
    r = landmarker.analyze(frame, dets)
    smile = r.blendshapes[
        :, [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]
    ].mean(1)
    # Seen in the photo: four broad grins; the man resting his chin on his hand (centre ~(470, 190)) is not smiling.
    chin = int(np.argmin(np.hypot(dets.centers[:, 0] - 470, dets.centers[:, 1] - 190)))
    assert smile[chin] < 0.2
    assert (np.delete(smile, chin) > 0.6).sum() >= 4


def test_pose_signs_agree_with_the_image_geometry(landmarker, turns):
    """yaw > 0 = face towards image right; roll > 0 = head tilted counter-clockwise in the image."""
    frames, dets = turns
    for i in (0, 20, 40):
        r = landmarker.analyze(frames[i], dets)
        assert r.found.all()
        for lm, (yaw, pitch, roll) in zip(r.landmarks, r.pose):
            width = lm[CHEEK_L, 0] - lm[CHEEK_R, 0]
            nose_offset = (lm[NOSE, 0] - (lm[CHEEK_R, 0] + lm[CHEEK_L, 0]) / 2) / width
            if abs(yaw) > 8:
                assert np.sign(nose_offset) == np.sign(yaw), (i, yaw, nose_offset)
            eye = lm[EYE_L] - lm[EYE_R]
            eye_line = -np.degrees(np.arctan2(eye[1], eye[0]))  # image y points down
            assert abs(eye_line - roll) < 10, (i, roll, eye_line)
    # Seen in the clip: the woman looks towards the image's left; by frame 20 both heads lean far to the left.
    r0, r20 = landmarker.analyze(frames[0], dets), landmarker.analyze(frames[20], dets)
    assert r0.pose[0, 0] < -15
    assert r20.pose[0, 2] > 35 and r20.pose[1, 2] > 25
    assert r20.pose[0, 2] > r0.pose[0, 2] + 20


def test_head_down_gives_negative_pitch(landmarker):
    # Crowd clip, frame 40: the red-haired man in the centre walks looking at the ground.
    frame = decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))[40].asnumpy()
    dets = hog(frame, 0)
    r = landmarker.analyze(frame, dets)
    assert r.found.sum() >= 3
    down = int(np.nanargmin(r.pose[:, 1]))
    assert 550 < dets.centers[down, 0] < 750  # the red-haired man
    assert r.pose[down, 1] < -20
    lm = r.landmarks[down]
    assert lm[FOREHEAD, 2] < lm[CHIN, 2]  # forehead nearer the camera than the chin
    others = np.delete(r.pose[:, 1], down)
    assert np.all(others[np.isfinite(others)] > r.pose[down, 1] + 10)


def test_closed_eyes_raise_eye_blink(landmarker, turns):
    # Seen in the clip: the woman's eyes are shut in frame 20 and open in 17; the man's shut in 43, open in 40.
    frames, dets = turns
    blink = [BLENDSHAPE_NAMES.index("eyeBlinkLeft"), BLENDSHAPE_NAMES.index("eyeBlinkRight")]
    b = {i: landmarker.analyze(frames[i], dets).blendshapes[:, blink].mean(1) for i in (17, 20, 40, 43)}
    assert b[20][0] > b[17][0] + 0.2
    assert b[43][1] > b[40][1] + 0.2


def test_tiny_classroom_faces_are_landmarked_often_enough(landmarker):
    vr = decord.VideoReader(str(MEDIA / "classroom_4students_270p.mp4"))
    n = found = 0
    for i in (5, 10, 15, 40):
        frame = vr[i].asnumpy()
        dets = hog(frame, 2)
        assert np.all(dets.widths <= 24)  # the 10-20 px back-of-class case
        r = landmarker.analyze(frame, dets)
        n, found = n + len(dets), found + int(r.found.sum())
        for box, lm in zip(dets.boxes[r.found], r.landmarks[r.found]):
            assert box[0] <= lm[NOSE, 0] <= box[2] and box[1] <= lm[NOSE, 1] <= box[3]
    assert n >= 4 and found >= n / 2


def test_misses_are_nan_rows(landmarker, turns):
    frames, dets = turns
    wall = np.array([[200, 5, 260, 65]], np.float32)  # bare wall between the two people
    bad = np.array([[np.nan, 0, 10, 10], [50, 50, 50, 80]], np.float32)  # not finite; zero width
    r = landmarker.analyze(frames[0], Detections(np.concatenate([dets.boxes, wall, bad]), np.ones(5)))
    assert r.found.tolist() == [True, True, False, False, False]
    assert np.isnan(r.blendshapes[2:]).all() and np.isnan(r.pose[2:]).all() and np.isnan(r.landmarks[2:]).all()
    empty = landmarker.analyze(frames[0], Detections.empty())
    assert len(empty) == 0 and empty.landmarks.shape == (0, 478, 3)


def test_frame_must_be_rgb_uint8(landmarker, turns):
    _, dets = turns
    with pytest.raises(ValueError, match=r"uint8 RGB.*float32"):
        landmarker.analyze(np.zeros((270, 480, 3), np.float32), dets)


def test_blendshape_order_mismatch_is_refused(landmarker):
    wrong = [SimpleNamespace(category_name=n) for n in BLENDSHAPE_NAMES]
    wrong[3], wrong[4] = wrong[4], wrong[3]
    with pytest.raises(RuntimeError, match="index 3"):
        landmarker._check_names(wrong)


def test_closed_landmarker_refuses_work(turns):
    frames, dets = turns
    fl = FaceLandmarker()
    fl.close()
    fl.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        fl.analyze(frames[0], dets)


def test_pose_from_matrix_conventions():
    def rot(axis: str, deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        return {"y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]), "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
                "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]  # fmt: skip

    m = np.eye(4)
    np.testing.assert_allclose(pose_from_matrix(m), 0, atol=1e-5)
    m[:3, :3] = rot("y", 30) @ rot("x", 20) @ rot("z", -10)  # Rx(+20) tips the face down: pitch -20
    np.testing.assert_allclose(pose_from_matrix(m), [30, -20, -10], atol=1e-4)
    m[:3, :3] *= 1.7  # scale in the matrix is ignored
    np.testing.assert_allclose(pose_from_matrix(m), [30, -20, -10], atol=1e-4)


def test_crop_transform_is_a_square_around_the_box():
    a, x0, y0, side = crop_transform(np.array([100, 50, 120, 80]), 2.0, 256)
    assert side == 60 and (x0, y0) == (80, 35)
    np.testing.assert_allclose(a @ [110, 65, 1], [128, 128])  # box centre -> crop centre
    assert LandmarkResult.empty(2).found.tolist() == [False, False]


def test_landmarkers_side_by_side_give_the_same_results(landmarker, group):
    """Two MediaPipe landmarkers on threads split a frame's faces between them; every row
    gets the numbers the single landmarker gives (each face is one independent crop)."""
    frame, dets = group
    one = landmarker.analyze(frame, dets)
    with FaceLandmarker(threads=2) as two:
        assert len(two._landmarkers) == 2
        both = two.analyze(frame, dets)
        assert two.crops_seen >= len(dets)
    assert both.found.all() and one.found.all()
    assert np.allclose(both.blendshapes, one.blendshapes, atol=1e-5)
    assert np.allclose(both.pose, one.pose, atol=1e-3)
    assert np.allclose(both.landmarks, one.landmarks, atol=1e-3)
