"""The cue model read against the person: baselines, their shrinkage, and the per-person pass after linking."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from affectline.features import BLENDSHAPE_NAMES
from affectline.types import Segment, TimeGrid, VideoInfo
from pipeline.bins import bin_samples
from pipeline.chunk import ChunkResult, ChunkTrack
from pipeline.link import link_chunk_results
from pipeline.relative import person_baseline, relative_parts, rescore_bins
from recognition.academic.cues import CUE_INPUTS, CueBaseline, CueModel, CueParams
from tests.test_cues import CONF, DIS, FAT, NEU, features

MODEL = CueModel()
P = CueParams()
I = {n: i for i, n in enumerate(CUE_INPUTS)}


def frowner(n: int, brow: float = 0.7, **extra):
    """n rows of a face whose brows rest low (a resting frown)."""
    return features(n, browDownLeft=brow, browDownRight=brow, **extra)


def test_a_resting_frown_is_confusion_for_the_population_and_neutral_against_the_person():
    bs, pose, expr, vis = frowner(40)
    absolute, _ = MODEL.predict(bs, pose, expr, vis)
    assert (absolute.argmax(1) == CONF).all()
    b = MODEL.fit_baseline(MODEL.inputs(bs, pose, expr, vis))
    assert b.source == "session" and b.center[I["brow_down"]] == pytest.approx(0.7)
    relative, _ = MODEL.predict(bs, pose, expr, vis, baseline=b)
    assert (relative.argmax(1) == NEU).all()
    # The same person knitting their brows beyond their rest is still confused.
    b_full = replace(b, n=np.full(len(CUE_INPUTS), 1e9))  # trust the baseline fully
    knit = MODEL.predict(*frowner(1, browInnerUp=0.8, p_angry=0.6), baseline=b_full)[0][0]
    assert knit.argmax() == CONF


def test_shift_is_shrunk_by_the_seconds_seen_and_is_the_population_when_nothing_is():
    x = np.full((6, len(CUE_INPUTS)), 0.0)
    x[:, I["brow_down"]] = 0.6
    groups = np.array([0, 0, 0, 1, 1, 2])  # 6 samples over 3 seconds: n = 3
    b = MODEL.fit_baseline(x, groups)
    w = 3 / (3 + P.baseline_prior_n)
    assert b.n[I["brow_down"]] == 3
    assert b.shift(P)[I["brow_down"]] == pytest.approx(w * (0.6 - P.population[I["brow_down"]]))
    assert MODEL.fit_baseline(x).n[I["brow_down"]] == 6  # without groups every row counts
    empty = MODEL.fit_baseline(np.zeros((0, len(CUE_INPUTS))))
    assert empty.source == "population" and not empty.shift(P).any()
    # A long session: the baseline's weight approaches 1.
    long = MODEL.fit_baseline(np.repeat(x[:1], 600, 0), np.arange(600))
    assert long.shift(P)[I["brow_down"]] == pytest.approx(0.6 - P.population[I["brow_down"]], rel=0.02)


def test_expression_shifts_only_explain_cues_away_and_pose_shifts_both_ways():
    x = np.zeros((100, len(CUE_INPUTS)))
    x[:, I["yaw"]] = -30.0  # sits facing the board, left of the camera
    x[:, I["p_negative"]] = -1.0  # (impossible) below the population: must not lower the bar
    b = MODEL.fit_baseline(x, np.arange(100))
    s = b.shift(P)
    assert s[I["p_negative"]] == 0.0 and s[I["yaw"]] < -25
    # Facing the board is not distraction for them; facing the camera (30 degrees from their usual) is.
    board, camera = features(1, yaw=-30), features(1, yaw=0)
    assert MODEL.predict(*board)[0][0].argmax() == DIS
    assert MODEL.predict(*board, baseline=b)[0][0].argmax() == NEU
    assert MODEL.predict(*camera, baseline=b)[0][0, DIS] > MODEL.predict(*board, baseline=b)[0][0, DIS] + 0.2


def test_missing_inputs_are_skipped_by_the_median_and_left_unshifted():
    bs, pose, expr, vis = frowner(10)
    bs[:5] = np.nan  # half the rows without landmarks
    pose[:5] = np.nan
    x = MODEL.inputs(bs, pose, expr, vis)
    assert np.isnan(x[:5, I["brow_down"]]).all() and np.isfinite(x[:, I["p_happy"]]).all()
    b = MODEL.fit_baseline(x)
    assert b.n[I["brow_down"]] == 5 and b.n[I["p_happy"]] == 10
    no_lm = MODEL.fit_baseline(x[:5])
    assert no_lm.n[I["brow_down"]] == 0 and no_lm.shift(P)[I["brow_down"]] == 0.0


def test_clinician_baseline_from_a_resting_feature_row():
    bs, pose, expr, vis = features(1, eyeBlinkLeft=0.35, eyeBlinkRight=0.35)  # narrow eyes at rest
    assert MODEL.predict(bs, pose, expr, vis)[0][0].argmax() == FAT
    b = MODEL.baseline_from_center(bs[0], pose[0], expr[0], n=1000)
    assert b.source == "clinician"
    assert MODEL.predict(bs, pose, expr, vis, baseline=b)[0][0].argmax() == NEU
    # A real closure beyond their rest is still fatigue.
    shut = features(1, eyeBlinkLeft=0.9, eyeBlinkRight=0.9)
    assert MODEL.predict(*shut, baseline=b)[0][0].argmax() == FAT


def test_a_population_baseline_is_the_absolute_reading():
    bs, pose, expr, vis = features(5, mouthSmileLeft=0.5, mouthSmileRight=0.5, yaw=25, p_sad=0.7)
    a0, e0 = MODEL.predict(bs, pose, expr, vis)
    a1, e1 = MODEL.predict(bs, pose, expr, vis, baseline=CueBaseline.population())
    np.testing.assert_array_equal(a0, a1)
    np.testing.assert_array_equal(e0, e1)


# ---- the per-person pass after linking ---------------------------------------------------


GRID = TimeGrid(1.0)
FPS = 4.0


def _samples(t0: float, n: int, brow: float, blink_at: tuple[int, ...] = ()):
    times = t0 + np.arange(n) / FPS
    bs, pose, expr, _ = frowner(n, brow=brow)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        bs[list(blink_at), BLENDSHAPE_NAMES.index(name)] = 0.95
    return times, bs, pose, expr


def _track(tid: int, times, bs, pose, expr, box=(100, 100, 140, 140)) -> ChunkTrack:
    n = len(times)
    inputs = MODEL.inputs(bs, pose, expr, np.ones(n, bool)).astype(np.float32)
    acad, eng = MODEL.predict_inputs(inputs, np.ones(n, bool))
    a = {"times": times, "blend": bs, "pose": pose, "expr": expr, "found": np.ones(n, bool),
         "face_px": np.full(n, 40.0), "sharp": np.full(n, 300.0)}  # fmt: skip
    bins, feats = bin_samples(a, acad, eng, GRID, FPS, 100.0, (np.array([0, 0, 0, 0, 1.0], np.float32), 0.0))
    boxes = np.tile(np.asarray(box, np.float32), (n, 1))
    return ChunkTrack(track_id=tid, times=times, face_boxes=boxes, context_boxes=boxes, bins=bins, features=feats,
                      n_found=n, n_confident=n, embedding=np.ones(128, np.float32) / np.sqrt(128),
                      embedding_samples=np.ones((1, 128), np.float32) / np.sqrt(128), link_times=times[[0, -1]],
                      link_boxes=boxes[[0, -1]], overlap_times=times, overlap_boxes=boxes,
                      overlap_embeddings=np.full((n, 128), np.nan, np.float32), cue_inputs=inputs,
                      sharp=np.full(n, 300.0, np.float32), readable=np.ones(n, bool),
                      pose_ok=np.ones(n, bool))  # fmt: skip


def test_rescoring_against_the_population_gives_the_chunk_its_own_bins_back():
    tr = _track(0, *_samples(0.0, 20, brow=0.7, blink_at=(3, 9)))
    same = rescore_bins(tr, MODEL, CueBaseline.population(), GRID)
    np.testing.assert_array_equal(same.to_numpy(), tr.bins.to_numpy())


def test_the_baseline_spans_every_chunk_of_the_person_and_chunked_equals_one_chunk():
    times, bs, pose, expr = _samples(0.0, 80, brow=0.7)  # 20 s of a resting frown
    whole = _track(0, times, bs, pose, expr)
    a, b = times < 10.0, times >= 10.0
    parts = [_track(0, times[m], bs[m], pose[m], expr[m]) for m in (a, b)]
    base_whole = person_baseline(MODEL, [whole], GRID)
    base_parts = person_baseline(MODEL, parts, GRID)
    np.testing.assert_array_equal(base_whole.center, base_parts.center)
    np.testing.assert_array_equal(base_whole.n, base_parts.n)
    assert base_whole.n[I["brow_down"]] == 20  # 20 distinct seconds
    one, _ = relative_parts([whole], MODEL, GRID)
    two, _ = relative_parts(parts, MODEL, GRID)
    cat = np.concatenate([p.bins.to_numpy(np.float64) for p in two])
    np.testing.assert_allclose(cat, one[0].bins.to_numpy(np.float64), atol=1e-6)
    # And the frown that was Confusion in every chunk's own bins is Neutral against the person.
    assert (whole.bins["confusion"] > whole.bins["neutrality"]).all()
    assert (one[0].bins["neutrality"] > one[0].bins["confusion"]).all()


def test_link_re_reads_each_person_against_their_session_and_keeps_absent_bins():
    t1, bs1, p1, e1 = _samples(0.0, 24, brow=0.7)  # person 1: a resting frown, 6 s, in chunk 0
    t2, bs2, p2, e2 = _samples(12.0, 24, brow=0.7)  # and again 6 s in chunk 1 after a gap
    name = f"{MODEL.name}@{MODEL.sha256[:12]}"
    absent = np.array([0, 0, 0, 0, 1.0], np.float32)
    chunks = []
    for i, (w, tr) in enumerate((((0.0, 10.0), _track(0, t1, bs1, p1, e1)), ((10.0, 20.0), _track(0, t2, bs2, p2, e2)))):
        chunks.append(ChunkResult(index=i, window=Segment(*w), analysed=Segment(max(0, w[0] - 2), w[1] + 2),
                                  info=VideoInfo("x.mp4", 25.0, 500, 640, 360), analysis_fps=FPS, bin_seconds=1.0,
                                  academic_model=name, expression_model="fer@x", absent_academic=absent,
                                  absent_engagement=0.0, tracks=[tr]))  # fmt: skip
    out = link_chunk_results(chunks, chunks[0].info, FPS)
    assert len(out.tracks) == 1
    bins = out.tracks[0].bins
    vis = bins.face_visible.to_numpy(bool)
    assert vis.sum() == 12 and (~vis).sum() == 6
    assert (bins.loc[vis, "neutrality"] > bins.loc[vis, "confusion"]).all()
    np.testing.assert_allclose(bins.loc[~vis, "distraction"], 1.0)  # 'no face' bins keep their verdict
    # Another academic model's (e.g. CLIP-CAER's) academic columns are left alone; engagement is re-read.
    other = [replace(c, academic_model="clip_caer@0123") for c in chunks]
    kept = link_chunk_results(other, chunks[0].info, FPS).tracks[0].bins
    assert (kept.loc[vis, "confusion"] > kept.loc[vis, "neutrality"]).all()


def test_unreadable_samples_are_neither_baseline_nor_read():
    times, bs, pose, expr = _samples(0.0, 40, brow=0.1)  # 10 s of relaxed brows ...
    bs[:20, BLENDSHAPE_NAMES.index("browDownLeft")] = bs[:20, BLENDSHAPE_NAMES.index("browDownRight")] = 0.9
    tr = _track(0, times, bs, pose, expr)
    readable = np.arange(40) >= 20  # ... the frowning first 5 s judged unreadable by the gate
    pose_ok = np.arange(40) >= 8
    tr = replace(tr, readable=readable, pose_ok=pose_ok)
    b = person_baseline(MODEL, [tr], GRID)
    assert b.center[I["brow_down"]] == pytest.approx(0.1) and b.n[I["brow_down"]] == 5
    bins = rescore_bins(tr, MODEL, b, GRID)
    assert bins.loc[:4, "confusion"].isna().all() and bins.loc[5:, "confusion"].notna().all()
    assert bins.loc[:1, "engagement"].isna().all() and bins.loc[2:, "engagement"].notna().all()


# ---- on real footage -----------------------------------------------------------------------

CLIPS = ("classroom_4students_270p.mp4", "two_people_head_turns_270p.mp4", "crowd_walk_1080p.mp4")


@pytest.fixture(scope="module")
def clips():
    """The sample clips through the pipeline at 4 fps: {clip: (chunk results, linked output)};
    the head-turn clip also in two chunks (``"two_people_head_turns_270p.mp4/2"``)."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline
    from pipeline.chunk import ChunkWindow, JobShape
    from pipeline.video import VideoSource
    from tests.paths import MEDIA

    out = {}
    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        for clip in CLIPS:
            src = VideoSource(MEDIA / clip)
            res = [p.analyse_chunk(src, ChunkWindow(0, 0.0, src.info.duration), JobShape(4, 1.0, p.chunk_overlap_s))]
            out[clip] = (res, link_chunk_results(res, src.info, 4.0))
        src = VideoSource(MEDIA / CLIPS[1])
        res = [p.analyse_chunk(src, ChunkWindow(i, a, b), JobShape(4, 1.0, 1.0))
               for i, (a, b) in enumerate([(0, 2), (2, src.info.duration)])]  # fmt: skip
        out[CLIPS[1] + "/2"] = (res, link_chunk_results(res, src.info, 4.0))
    return out


def _tops(out) -> np.ndarray:
    """Top academic class of every bin with a readable face (academic given)."""
    cols = ["neutrality", "enjoyment", "confusion", "fatigue", "distraction"]
    a = np.concatenate([t.bins.loc[t.bins.face_visible.astype(bool), cols].to_numpy(np.float64) for t in out.tracks])
    return a[np.isfinite(a).all(1)].argmax(1)


def _persons(res):
    from pipeline.link import identities

    mapping, groups = identities(res), {}
    for c, ch in enumerate(res):
        for tr in ch.tracks:
            groups.setdefault(mapping[(c, tr.track_id)], []).append(tr)
    return list(groups.values())


def test_on_footage_where_nothing_happens_neutrality_is_the_most_frequent_class(clips):
    """A class listening, two people sitting, a crowd walking: nothing happens. Read against
    each person, Neutrality is the most frequent class of the readable face-seconds of each clip
    (against the population it was not: the walkers' squints read as Fatigue and Confusion)."""
    read = 0
    for clip in CLIPS:
        tops = np.bincount(_tops(clips[clip][1]), minlength=5)
        read += tops.sum()
        if tops.sum():
            assert tops.argmax() == NEU and tops[NEU] > tops[[1, 2, 3, 4]].max(), (clip, tops)
    assert read >= 20  # not vacuous: the head-turn and crowd clips have readable faces
    # The classroom's 10-20 px faces are all too small to read: no academic label at all, not "confusion".
    assert _tops(clips[CLIPS[0]][1]).size == 0
    # Against the population (the chunks' own bins) the crowd's bins were not mostly Neutral.
    res, _ = clips[CLIPS[2]]
    cols = ["neutrality", "enjoyment", "confusion", "fatigue", "distraction"]
    own = np.concatenate([tr.bins[cols].to_numpy(np.float64) for tr in res[0].tracks])
    own = np.bincount(own[np.isfinite(own).all(1)].argmax(1), minlength=5)
    assert own.argmax() != NEU, own


def test_a_head_turn_still_moves_distraction_against_the_person(clips):
    """(Blinks and smiles against the person: tests/test_cues.py.)"""
    turned = 0
    for parts in [p for clip in CLIPS[1:] for p in _persons(clips[clip][0])]:
        b = person_baseline(MODEL, parts, GRID)
        # Where the head pose holds up (the gate's pose_ok): a face turned far enough is not readable for its
        # expression, but the cue model's reading of the turn itself is what this checks.
        x = np.concatenate([p.cue_inputs for p in parts])[np.concatenate([p.pose_ok for p in parts])]
        if len(x) < 4:
            continue
        a, e = MODEL.predict_inputs(x, np.ones(len(x), bool), b)
        yaw = np.abs(x[:, I["yaw"]] - b.center[I["yaw"]])
        far, near = int(np.nanargmax(yaw)), int(np.nanargmin(yaw))
        # A real turn away from where this person usually looks: past the cue model's head-turn ramp start (20)
        # by a quarter of the ramp. (The crowd walker turning -32 degrees reads 28 from a usual of -4 over his 9
        # readable samples under gate 2; gate 1 read 5 of them, a usual of +3, and the same turn as 35.)
        if yaw[far] > 25:
            turned += 1
            assert a[far, DIS] > a[near, DIS] + 0.2 and e[far] < e[near] - 0.3
    assert turned >= 1


def test_chunked_and_single_pass_read_the_persons_against_the_same_baseline(clips):
    (one_res, one), (two_res, two) = clips[CLIPS[1]], clips[CLIPS[1] + "/2"]
    assert len(one.tracks) == len(two.tracks) == 2
    b1 = sorted((person_baseline(MODEL, p, GRID) for p in _persons(one_res)), key=lambda b: b.center[I["yaw"]])
    b2 = sorted((person_baseline(MODEL, p, GRID) for p in _persons(two_res)), key=lambda b: b.center[I["yaw"]])
    for x, y in zip(b1, b2):
        # The same samples; their landmarks differ a little where each chunk's own tracker followed the face.
        # degrees; blendshapes; the expression model's probabilities (measured 0.022 on the man's soft face, sharpness
        # 40-60: read since gate 2, the box the chunk's tracker gives it moves his happy probability a little)
        tol = np.select([np.isin(CUE_INPUTS, ("yaw", "pitch")), np.char.startswith(np.array(CUE_INPUTS), "p_")], [1.0, 0.03], 0.02)
        assert (np.abs(x.center - y.center) <= tol).all(), (x.center, y.center)
        np.testing.assert_array_equal(x.n, y.n)
    # The woman sits turned ~27 degrees the whole clip: her usual, not distraction, in both runs.
    for out in (one, two):
        assert np.bincount(_tops(out), minlength=5).argmax() == NEU


def test_a_clinicians_calibration_baseline_becomes_the_cue_models_baseline():
    from affectline.features import FEATURE_NAMES
    from pipeline.relative import CueSamples, clinician_baseline, reread_bins
    from recognition.personal.calibration import Baseline, fit_baseline

    # A child whose resting eyes are narrow (eyeBlink 0.35): 30 tagged baseline bins.
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    X = np.zeros((30, len(FEATURE_NAMES)), np.float32)
    X[:, col["eyeBlinkLeft"]] = X[:, col["eyeBlinkRight"]] = 0.35
    X[:, col["p_neutral"]], X[:, col["face_visible"]] = 1.0, 1.0
    b = clinician_baseline(MODEL, fit_baseline(X, np.ones(30, bool)))
    assert b.source == "clinician" and b.n[I["eye_closed"]] == 30
    assert b.center[I["eye_closed"]] == pytest.approx(0.35, abs=1e-6)
    assert b.center[I["p_negative"]] == pytest.approx(0.0, abs=1e-6)  # log(p + TAU) back to p
    assert clinician_baseline(MODEL, Baseline.identity()) is None
    # Their session's bins, read against it: resting eyes are not Fatigue.
    times, bs, pose, expr = _samples(0.0, 20, brow=0.0)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        bs[:, BLENDSHAPE_NAMES.index(name)] = 0.35
    tr = _track(0, times, bs, pose, expr)
    assert (tr.bins["fatigue"] > tr.bins["neutrality"]).all()
    samples = CueSamples.of([tr])
    bins = reread_bins(tr.bins, samples, MODEL, b, GRID)
    assert (bins["neutrality"] > bins["fatigue"]).all()
    assert bins[["t_start", "t_end", "face_visible"]].equals(tr.bins[["t_start", "t_end", "face_visible"]])
