"""The cue model: exact formula properties on synthetic features, cue directions on real faces.

Real faces: dlib HOG boxes -> FaceLandmarker + FER mini-Xception -> CueModel, read against
the population and, for blinks and smiles, against the person (``CueBaseline``; the
person-relative pass on whole clips is in tests/test_relative.py). What each real-footage
test relies on was checked by eye on the frames it names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import decord
import dlib
import numpy as np
import pytest

from affectline.features import BLENDSHAPE_NAMES
from affectline.types import ACADEMIC_CLASSES, EXPRESSION_CLASSES, Detections
from recognition.academic.cues import CUE_NAMES, CueModel, CueParams

from tests.paths import MEDIA
NEU, ENJ, CONF, FAT, DIS = range(5)
assert ACADEMIC_CLASSES == ("Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction")
MODEL = CueModel()


def features(n: int = 1, **values: float):
    """Neutral synthetic rows: zero blendshapes, frontal pose, FER 'neutral'; override by name."""
    bs = np.zeros((n, 52), np.float32)
    pose = np.zeros((n, 3), np.float32)
    expr = np.zeros((n, 7), np.float32)
    expr[:, EXPRESSION_CLASSES.index("neutral")] = 1
    for k, v in values.items():
        if k in ("yaw", "pitch", "roll"):
            pose[:, ("yaw", "pitch", "roll").index(k)] = v
        elif k.startswith("p_"):
            expr[:, EXPRESSION_CLASSES.index("neutral")] -= v
            expr[:, EXPRESSION_CLASSES.index(k[2:])] = v
        else:
            bs[:, BLENDSHAPE_NAMES.index(k)] = v
    return bs, pose, expr, np.ones(n, bool)


def softmax_share(winner: float, others: list[float], gain: float = CueParams().gain) -> float:
    e = np.exp(gain * np.array([winner] + others))
    return float(e[0] / e.sum())


# ---- exact properties on synthetic features ------------------------------------------


def test_no_cue_means_neutral_with_the_documented_probability_and_full_engagement():
    academic, engagement = MODEL.predict(*features(3))
    p = CueParams()
    np.testing.assert_allclose(academic[:, NEU], softmax_share(p.neutral_level, [0, 0, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(academic.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(engagement, 1.0)
    assert academic.dtype == np.float32 and engagement.dtype == np.float32


@pytest.mark.parametrize(
    "values,cls",
    [
        ({"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9, "p_happy": 0.95}, ENJ),
        ({"browDownLeft": 0.9, "browDownRight": 0.9, "p_angry": 0.95}, CONF),
        ({"eyeBlinkLeft": 0.9, "eyeBlinkRight": 0.9}, FAT),
        ({"jawOpen": 0.9}, FAT),
        ({"yaw": -60}, DIS),
        ({"pitch": -50}, DIS),
    ],
)
def test_a_full_cue_gives_its_class_the_documented_share(values, cls):
    academic, _ = MODEL.predict(*features(1, **values))
    assert academic[0].argmax() == cls
    np.testing.assert_allclose(academic[0, cls], softmax_share(1.0, [CueParams().neutral_level, 0, 0, 0]), rtol=1e-5)


def test_ramps_hit_their_thresholds_exactly():
    p = CueParams()
    lo, hi = p.yaw
    bs, pose, expr, vis = features(4)
    pose[:, 0] = [lo, (lo + hi) / 2, hi, -(lo + hi) / 2]
    c = MODEL.cues(bs, pose, expr, vis)
    np.testing.assert_allclose(c["head_away"], [0, 0.5, 1, 0.5])
    _, engagement = MODEL.predict(bs, pose, expr, vis)
    np.testing.assert_allclose(engagement, [1, 0.5, 0, 0.5], atol=1e-6)


def test_engagement_is_the_product_of_attention_and_alertness():
    bs, pose, expr, vis = features(1, yaw=32.5, eyeBlinkLeft=0.25, eyeBlinkRight=0.25)
    c = MODEL.cues(bs, pose, expr, vis)
    assert c["head_away"][0] == pytest.approx(0.5) and c["eye_closure"][0] == pytest.approx(0.5)
    assert MODEL.predict(bs, pose, expr, vis)[1][0] == pytest.approx(0.25)
    # Smiles and frowns leave engagement alone.
    bs2, pose2, expr2, _ = features(
        1, yaw=32.5, eyeBlinkLeft=0.25, eyeBlinkRight=0.25, browDownLeft=1, mouthSmileLeft=1
    )
    assert MODEL.predict(bs2, pose2, expr2, vis)[1][0] == pytest.approx(0.25)


def test_distraction_grows_with_head_turn_both_ways_and_with_head_down():
    yaws = np.array([0, 10, 20, 30, 40, 50, 60], np.float32)
    bs, pose, expr, vis = features(len(yaws))
    pose[:, 0] = yaws
    right, e_right = MODEL.predict(bs, pose, expr, vis)
    pose[:, 0] = -yaws
    left, e_left = MODEL.predict(bs, pose, expr, vis)
    np.testing.assert_allclose(right, left)
    np.testing.assert_allclose(e_right, e_left)
    assert np.all(np.diff(right[:, DIS]) >= 0) and right[-1, DIS] > right[0, DIS] + 0.5
    assert np.all(np.diff(e_right) <= 0)
    down, _ = MODEL.predict(*features(1, pitch=-30))
    up, _ = MODEL.predict(*features(1, pitch=30))
    level, _ = MODEL.predict(*features(1, pitch=-10))
    assert down[0, DIS] > up[0, DIS] > level[0, DIS]


def test_looking_down_is_discounted_from_eye_closure():
    closed = MODEL.cues(*features(1, eyeBlinkLeft=0.5, eyeBlinkRight=0.5))["eye_closure"][0]
    reading = MODEL.cues(*features(1, eyeBlinkLeft=0.5, eyeBlinkRight=0.5, eyeLookDownLeft=0.6, eyeLookDownRight=0.6))
    assert closed == 1.0 and reading["eye_closure"][0] == pytest.approx((0.5 - 0.3 - 0.1) / 0.3)


def test_a_wide_jaw_is_a_yawn_only_without_a_smile():
    assert MODEL.cues(*features(1, jawOpen=0.8))["yawn"][0] == 1.0
    laugh = MODEL.cues(*features(1, jawOpen=0.8, mouthSmileLeft=0.8, mouthSmileRight=0.8))
    # FER says neutral here, so the smile cue is the blendshape half of the weighted mean.
    assert laugh["yawn"][0] == 0.0 and laugh["smile"][0] == pytest.approx(0.5)


def test_face_not_visible_is_distraction_with_zero_engagement_whatever_the_features_say():
    bs, pose, expr, vis = features(2, mouthSmileLeft=1, mouthSmileRight=1, p_happy=1)
    vis[:] = [True, False]
    bs[1] = np.nan  # typical: nothing measured for an unseen face
    academic, engagement = MODEL.predict(bs, pose, expr, vis)
    assert academic[0].argmax() == ENJ
    assert academic[1].argmax() == DIS and engagement[1] == 0.0
    np.testing.assert_allclose(academic[1, DIS], softmax_share(1.0, [CueParams().neutral_level, 0, 0, 0]), rtol=1e-5)


def test_missing_landmarks_fall_back_on_expressions_and_leave_engagement_unknown():
    bs, pose, expr, vis = features(3, p_happy=0.95)
    bs[:] = np.nan
    pose[:] = np.nan
    expr[2] = np.nan  # third row: detected, but nothing measured
    academic, engagement = MODEL.predict(bs, pose, expr, vis)
    assert academic[0].argmax() == ENJ and np.isfinite(academic[:2]).all()
    assert np.isnan(engagement).all()
    assert np.isnan(academic[2]).all()
    # Expression-only smile cue uses p_happy alone (weights renormalised over what is present).
    c = MODEL.cues(bs, pose, expr, vis)
    assert c["smile"][0] == pytest.approx(1.0) and not c["landmarks"].any()
    assert all(np.isfinite(c[k]).all() for k in CUE_NAMES)


def test_inputs_with_wrong_shapes_are_named():
    bs, pose, expr, vis = features(2)
    with pytest.raises(ValueError, match=r"pose must have shape \(2, 3\), got \(2, 2\)"):
        MODEL.predict(bs, pose[:, :2], expr, vis)
    with pytest.raises(ValueError, match=r"blendshapes must have shape \(n, 52\)"):
        MODEL.predict(bs[:, :50], pose, expr, vis)
    with pytest.raises(ValueError, match=r"visible must have shape \(2,\), got \(3,\)"):
        MODEL.predict(bs, pose, expr, np.ones(3, bool))


def test_fingerprint_follows_the_parameters():
    assert MODEL.name == "cues" and MODEL.version
    assert len(MODEL.sha256) == 64 and MODEL.sha256 == CueModel().sha256
    assert CueModel(replace(CueParams(), yaw=(25.0, 45.0))).sha256 != MODEL.sha256
    assert CueModel(version=MODEL.version + ".x").sha256 != MODEL.sha256


def test_empty_input():
    academic, engagement = MODEL.predict(*features(0))
    assert academic.shape == (0, 5) and engagement.shape == (0,)


# ---- cue directions on real footage --------------------------------------------------


@pytest.fixture(scope="module", params=["mediapipe", "torch", "litert"])
def pipeline(request):
    """The cue directions must hold with either landmarker (``Settings.landmarker``)."""
    from affectline.settings import Settings
    from recognition.face.expression import ExpressionModel
    from recognition.face.landmarker import load_landmarker

    hog = dlib.get_frontal_face_detector()
    fer = ExpressionModel.load()
    with load_landmarker(Settings(landmarker=request.param), "cpu") as fl:

        def run(frame: np.ndarray, upsample: int = 0, dets: Detections | None = None):
            if dets is None:
                rects = hog(frame, upsample)
                boxes = np.array(sorted([r.left(), r.top(), r.right(), r.bottom()] for r in rects), np.float32)
                dets = Detections(boxes.reshape(-1, 4), np.ones(len(rects)))
            lm = fl.analyze(frame, dets)
            expr = fer.predict(frame, dets)
            academic, engagement = MODEL.predict(lm.blendshapes, lm.pose, expr, np.ones(len(dets), bool))
            return dets, lm, academic, engagement

        run.fer = fer
        yield run


def test_turned_head_is_more_distracted_than_the_most_frontal_face(pipeline):
    vr = decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))
    pose, academic, engagement = [], [], []
    for i in (60, 90):  # frame 90: the boy in the blue hood has turned his head well to the side
        _, lm, a, e = pipeline(vr[i].asnumpy())
        pose.append(lm.pose[lm.found]), academic.append(a[lm.found]), engagement.append(e[lm.found])
    pose, academic, engagement = map(np.concatenate, (pose, academic, engagement))
    assert len(pose) >= 5
    turned = int(np.argmax(np.abs(pose[:, 0])))
    frontal = int(np.argmin(np.abs(pose[:, 0]) + np.abs(pose[:, 1])))
    assert abs(pose[turned, 0]) > 30 and abs(pose[frontal, 0]) < 10
    assert academic[turned, DIS] > academic[frontal, DIS] + 0.2
    assert engagement[turned] < engagement[frontal] - 0.3


def test_head_down_is_more_distracted_than_a_level_head(pipeline):
    # Crowd frame 40: the red-haired man in the centre looks at the ground as he walks.
    _, lm, academic, _ = pipeline(decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))[40].asnumpy())
    down = int(np.nanargmin(lm.pose[:, 1]))
    level = int(np.nanargmin(np.abs(lm.pose[:, 1])))
    assert lm.pose[down, 1] < -20
    assert academic[down, DIS] > academic[level, DIS] + 0.2


def test_closed_eyes_raise_fatigue_for_the_same_person(pipeline):
    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    dets, *_ = pipeline(vr[0].asnumpy(), upsample=1)  # they sit still: frame 0's boxes serve the clip
    assert len(dets) == 2
    # Seen in the clip: woman (row 0) eyes shut in frame 20, open in 17; man (row 1) shut in 43, open in 40.
    for person, shut, open_ in ((0, 20, 17), (1, 43, 40)):
        _, _, a_shut, e_shut = pipeline(vr[shut].asnumpy(), dets=dets)
        _, _, a_open, e_open = pipeline(vr[open_].asnumpy(), dets=dets)
        assert a_shut[person, FAT] > a_open[person, FAT] + 0.1, person
        assert e_shut[person] < e_open[person] - 0.2, person


def test_closed_eyes_raise_fatigue_against_the_persons_own_baseline(pipeline):
    """The same blinks, each person read against their median over the clip (the session)."""
    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    dets, *_ = pipeline(vr[0].asnumpy(), upsample=1)
    frames = sorted(set(range(0, len(vr), 4)) | {17, 20, 40, 43})
    rows = {}
    for i in frames:
        _, lm, _, _ = pipeline(vr[i].asnumpy(), dets=dets)
        rows[i] = MODEL.inputs(lm.blendshapes, lm.pose, np.full((2, 7), np.nan), np.ones(2, bool))
    seconds = np.array([int(i / vr.get_avg_fps()) for i in frames])
    for person, shut, open_ in ((0, 20, 17), (1, 43, 40)):
        b = MODEL.fit_baseline(np.stack([rows[i][person] for i in frames]), seconds)
        assert b.source == "session" and b.n[0] >= 4
        (a_shut, a_open), (e_shut, e_open) = MODEL.predict_inputs(np.stack([rows[shut][person], rows[open_][person]]),
                                                                  np.ones(2, bool), b)  # fmt: skip
        assert a_shut[FAT] > a_open[FAT] + 0.1, person
        assert e_shut < e_open - 0.2, person


def test_smiles_raise_enjoyment_over_a_straight_face(pipeline):
    frame = cv2.cvtColor(cv2.imread(str(MEDIA / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    dets, lm, academic, _ = pipeline(frame, upsample=1)
    assert len(dets) == 6 and lm.found.all()
    # Seen in the photo: four broad grins; the man with his chin on his hand (centre ~(470, 190)) is not smiling.
    chin = int(np.argmin(np.hypot(dets.centers[:, 0] - 470, dets.centers[:, 1] - 190)))
    enjoy = academic[:, ENJ]
    assert academic[chin].argmax() != ENJ
    assert (np.delete(enjoy, chin) > enjoy[chin] + 0.5).sum() >= 4
    assert (academic.argmax(1) == ENJ).sum() >= 4
    # Against each person (one photo: their baseline is this face, worth one second) the grins stay Enjoyment.
    x = MODEL.inputs(lm.blendshapes, lm.pose, np.asarray(pipeline.fer.predict(frame, dets)), np.ones(len(dets), bool))
    rel = np.concatenate([MODEL.predict_inputs(x[i : i + 1], np.ones(1, bool), MODEL.fit_baseline(x[i : i + 1]))[0]
                          for i in range(len(x))])  # fmt: skip
    assert rel[chin].argmax() != ENJ and (rel.argmax(1) == ENJ).sum() >= 4


def test_lowered_brows_raise_confusion_over_relaxed_brows(pipeline):
    # Crowd frame 60: the white-haired woman on the left frowns (brows drawn down);
    # the man in glasses on the right walks with relaxed brows.
    dets, _, academic, _ = pipeline(decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))[60].asnumpy())
    frown = int(np.argmin(dets.centers[:, 0]))
    relaxed = int(np.argmax(dets.centers[:, 0]))
    assert dets.centers[frown, 0] < 400 and dets.centers[relaxed, 0] > 1100
    assert academic[frown, CONF] > academic[relaxed, CONF] + 0.2
