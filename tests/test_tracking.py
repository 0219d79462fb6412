"""The tracker on real faces: sequences built from real photos, and real footage."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from affectline.types import Detections
from recognition.reid import pairwise_distance
from recognition.tracking import Tracker, TrackerConfig, context_box, smooth_boxes
from recognition.tracking.evaluate import final_ids, identity_figures, label_rows
from tests import realseq

mtcnn, embedder = realseq.mtcnn, realseq.embedder


@cache
def synthetic(name: str):
    seq, dets = realseq.detected(name)
    return seq, dets, realseq.run_tracker(seq.frames, seq.times, dets, embedder())


@cache
def crowd():
    frames, times, dets, idx = realseq.crowd_detections(**realseq.CROWD)
    return frames, times, dets, idx, realseq.run_tracker(frames, times, dets, embedder())


def test_a_person_who_leaves_and_returns_keeps_their_id():
    seq, _, run = synthetic("leave_and_return")
    fig = realseq.sequence_figures(seq, run)
    assert fig.people == 2 and fig.ids == 2, fig
    assert fig.id_switches == 0 and fig.fragments == 0 and fig.shared_ids == 0, fig
    # The walker really was gone for longer than motion can bridge: re-identification did it.
    walker = final_ids(np.concatenate([d.track_id for d in run.dets]), run.summaries)
    people = np.concatenate([label_rows(d.boxes, b, p) for d, b, p in zip(run.dets, seq.gt_boxes, seq.gt_person)])
    track = next(s for s in run.summaries if s.track_id == walker[people == 2][0])
    assert np.diff(track.times).max() > TrackerConfig().max_gap_s
    # And only a fraction of the faces had to be embedded.
    assert run.embedded < 0.4 * run.rows


def test_two_people_crossing_paths_keep_different_ids():
    seq, _, run = synthetic("crossing")
    fig = realseq.sequence_figures(seq, run)
    assert fig.people == 2 and fig.ids == 2, fig
    assert fig.id_switches == 0 and fig.shared_ids == 0, fig
    # They do meet: in some frame the boxes overlap or one hides the other.
    assert min(len(b) for b in seq.gt_boxes) < 2 or any(
        float(np.min(np.abs(b[0, 0] - b[1, 0]))) < 0.5 * (b[0, 2] - b[0, 0]) for b in seq.gt_boxes if len(b) == 2
    )


def test_two_people_who_meet_and_turn_back_keep_their_ids():
    seq, _, run = synthetic("meet_and_turn_back")
    fig = realseq.sequence_figures(seq, run)
    assert fig.people == 2 and fig.ids == 2, fig
    assert fig.id_switches == 0 and fig.shared_ids == 0, fig


def test_without_appearance_people_who_turn_back_swap():
    """Control: motion alone swaps the two people, so the test above really exercises appearance."""
    seq, dets, _ = synthetic("meet_and_turn_back")
    tr = Tracker()
    out = [tr.update(d, float(t)) for d, t in zip(dets, seq.times)]  # no embeddings at all
    summaries = tr.finish()
    rows = [
        (t, p, k)
        for t, d, b, g in zip(seq.times, out, seq.gt_boxes, seq.gt_person)
        for p, k in zip(label_rows(d.boxes, b, g), final_ids(d.track_id, summaries))
    ]
    t, p, k = (np.array(x) for x in zip(*rows))
    fig = identity_figures(t, p, k)
    assert fig.id_switches > 0 or fig.shared_ids > 0, fig


def test_crowd_video_counts_people_and_shares_no_id():
    _frames, times, dets, idx, run = crowd()
    step_s = float(times[1] - times[0])
    visible = [s for s in run.summaries if len(s.times) * step_s >= 1.0]
    people = len(realseq.crowd_people()["faces_1s"])
    assert abs(len(visible) - people) <= 1, (len(visible), people)
    labels = realseq.crowd_labels(dets, idx, scale=realseq.CROWD["scale"])
    t = np.concatenate([[ti] * len(d) for ti, d in zip(times, run.dets)])
    k = np.concatenate([final_ids(d.track_id, run.summaries) for d in run.dets])
    fig = identity_figures(t, np.concatenate(labels), k)
    assert fig.shared_ids == 0 and fig.id_switches == 0, fig
    assert fig.people >= people - 1
    # Each final track is one face: most of its views sit close to its mean, none beyond the veto
    # (a bowed head can look 0.65 away from the same person's frontal view).
    for s in run.summaries:
        if len(s.embedding_samples) > 1:
            d = pairwise_distance(s.embedding_samples, s.embedding[None])
            assert np.median(d) < 0.45 and d.max() < TrackerConfig().appearance_veto, (s.track_id, d.ravel())


def test_classroom_students_keep_their_ids():
    gt = realseq.annotated("classroom_4students_270p.mp4")
    idx = sorted(gt)  # 9 frames, 0.3 s apart
    frames, fps = realseq.read_frames("classroom_4students_270p.mp4", idx)
    dets = mtcnn().detect(frames)
    run = realseq.run_tracker(frames, np.array(idx) / fps, dets, embedder())
    # The four students sit still: order them left to right in the annotation.
    t, p, k = [], [], []
    for i, d in zip(idx, run.dets):
        faces = gt[i][0]
        lab = label_rows(d.boxes, faces, np.argsort(np.argsort(faces[:, 0])))
        t += [i] * len(d)
        p += lab.tolist()
        k += final_ids(d.track_id, run.summaries).tolist()
    fig = identity_figures(np.array(t), np.array(p), np.array(k))
    assert fig.people == 4 and fig.ids == 4 and fig.id_switches == 0 and fig.shared_ids == 0, fig
    assert run.embedded == 0  # 10-20 px faces: too small for dlib, tracked by motion only


def test_two_people_turning_their_heads_keep_two_ids():
    frames, fps = realseq.read_frames("two_people_head_turns_270p.mp4", list(range(0, 56, 3)))
    times = np.arange(len(frames)) * 3 / fps
    run = realseq.run_tracker(frames, times, mtcnn().detect(frames), embedder())
    assert len(run.summaries) == 2
    for s in run.summaries:
        side = (s.boxes[:, 0] + s.boxes[:, 2]) / 2 > frames[0].shape[1] / 2
        assert side.all() or not side.any()  # each track stays on one person's side
        assert s.duration > 0.9 * times[-1]


def test_thirty_faces_a_frame_get_thirty_stable_ids():
    seq = realseq.classroom_of(n_faces=30, n_frames=4, size=(540, 960))
    dets = mtcnn().detect(seq.frames)
    run = realseq.run_tracker(seq.frames, seq.times, dets, embedder())
    fig = realseq.sequence_figures(seq, run)
    assert fig.people >= 29 and fig.ids == fig.people, fig
    assert fig.id_switches == 0 and fig.shared_ids == 0, fig
    # Every face once when it appears and a second view 0.5 s later; otherwise (nobody is ambiguous) none.
    assert run.embedded <= 2 * len(dets[0]) + 3


# -- behaviour on constructed detections (no models) ---------------------------------------


def _dets(boxes, scores=None, emb=None) -> Detections:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    data = {} if emb is None else {"embedding": np.asarray(emb, np.float32)}
    return Detections(boxes, np.ones(len(boxes)) if scores is None else scores, data=data)


def _unit(k: int) -> np.ndarray:
    v = np.zeros(128, np.float32)
    v[k] = 1.0
    return v


def test_needs_embedding_only_where_it_decides_something():
    tr = Tracker(TrackerConfig(embed_every_s=0.6, embed_first_s=0.6))
    a, b = [100, 100, 150, 160], [400, 100, 450, 160]
    assert tr.needs_embedding(_dets([a, b]), 0.0).tolist() == [True, True]  # new faces
    tr.update(_dets([a, b], emb=[_unit(0), _unit(1)]), 0.0)
    assert tr.needs_embedding(_dets([a, b]), 0.25).tolist() == [False, False]  # clear continuations
    tr.update(_dets([a, b]), 0.25)
    # A third face right next to the first: both become ambiguous.
    near_a = [120, 100, 170, 160]
    assert tr.needs_embedding(_dets([a, near_a, b]), 0.5).tolist() == [True, True, False]
    tr.update(_dets([a, b]), 0.5)
    assert tr.needs_embedding(_dets([a, b]), 0.75).tolist() == [True, True]  # refresh after embed_every_s
    tr.update(_dets([a, b], emb=[_unit(0), _unit(1)]), 0.75)
    assert tr.needs_embedding(_dets([b]), 1.5).tolist() == [True]  # back after a gap: check who it is
    assert tr.needs_embedding(_dets([[0, 0, 10, 12]]), 1.5).tolist() == [False]  # too small to embed


def test_update_fills_ids_and_rejects_weak_strangers():
    tr = Tracker()
    out = tr.update(_dets([[0, 0, 40, 50], [100, 0, 140, 50]], scores=[0.99, 0.6]), 0.0)
    assert out.track_id.tolist() == [0, -1]  # a weak detection never starts a track
    out = tr.update(_dets([[2, 0, 42, 50]], scores=[0.6]), 0.2)
    assert out.track_id.tolist() == [0]  # but it extends one


def test_short_gaps_are_bridged_and_spurious_tracks_dropped():
    tr = Tracker()
    box = np.array([100, 100, 150, 160], np.float32)
    for i, t in enumerate([0.0, 0.25, 0.5, 1.25, 1.5]):  # 0.75 s without the face
        ghost = [[500, 500, 540, 550]] if t == 0.25 else []  # a one-frame false detection
        got = tr.update(_dets([box + 4 * i, *ghost]), t)
        assert got.track_id[0] == 0
    tracks = tr.finish()
    assert [s.track_id for s in tracks] == [0] and len(tracks[0].times) == 5


def test_fragments_that_look_alike_are_joined_at_finish_but_overlapping_ones_never():
    tr = Tracker(TrackerConfig(max_gap_s=0.3))
    e = _unit(3)
    for t in (0.0, 0.25, 0.5):
        tr.update(_dets([[100, 100, 150, 160]], emb=[e]), t)
    for t in (3.0, 3.25, 3.5):  # far away, much later: only appearance links it
        tr.update(_dets([[600, 300, 650, 360], [100, 400, 150, 460]], emb=[e * 0.99, e]), t)
    tracks = tr.finish()
    # The first new track re-identified online or joined at finish; the second, simultaneous one stays apart.
    assert len(tracks) == 2
    assert sorted(len(s.times) for s in tracks) == [3, 6]


def test_smoothing_removes_jitter_without_dragging_the_ends():
    t = np.arange(40) * 0.25
    rng = np.random.default_rng(0)
    true = np.stack([100 + 20 * t, 50 + 0 * t, 150 + 20 * t, 110 + 0 * t], 1)
    noisy = true + rng.normal(0, 3, true.shape)
    sm = smooth_boxes(t, noisy, 0.4)
    assert np.abs(sm - true).mean() < 0.6 * np.abs(noisy - true).mean()
    # Steady motion comes out exactly, ends included (a moving average would pull the ends inwards).
    np.testing.assert_allclose(smooth_boxes(t, true, 0.4), true, atol=1e-3)


def test_update_validates_its_input():
    tr = Tracker()
    tr.update(_dets([[0, 0, 40, 50]]), 1.0)
    with pytest.raises(ValueError, match="before the previous frame"):
        tr.update(_dets([[0, 0, 40, 50]]), 0.5)
    with pytest.raises(ValueError, match=r"embedding'\] must be \(1, 128\)"):
        tr.update(_dets([[0, 0, 40, 50]], emb=np.zeros((1, 64))), 2.0)
    tr.reset()
    assert tr.update(_dets([[0, 0, 40, 50]]), 0.0).track_id.tolist() == [0]


@pytest.mark.parametrize(
    "face, expect",
    [
        ([200, 100, 240, 150], [150, 75, 290, 275]),  # room all round: 3.5 w wide, 4 h tall
        ([0, 0, 40, 50], [0, 0, 140, 200]),  # top-left corner: shifted in, same size
        ([600, 300, 640, 360], [500, 120, 640, 360]),  # bottom-right: shifted in, taller than the frame
    ],
)
def test_context_box_geometry(face, expect):
    np.testing.assert_allclose(context_box(np.array(face), 640, 360), expect, atol=1e-4)


def test_context_box_rejects_bad_boxes():
    with pytest.raises(ValueError, match="positive size"):
        context_box(np.array([10, 10, 5, 20]), 640, 360)


def test_expected_boxes_extrapolate_each_track_and_count_those_seen_a_frame_ago():
    tr = Tracker()
    for k in range(5):  # face 0 moves right 10 px a frame at 5 fps; face 1 stops being seen after frame 2
        boxes = [[100 + 10 * k, 100, 160 + 10 * k, 170]] + ([[400, 100, 460, 170]] if k <= 2 else [])
        tr.update(Detections(np.array(boxes, np.float32), np.ones(len(boxes))), k / 5)
    expected, n_current = tr.expected_boxes(1.0)
    assert n_current == 1 and len(expected) == 2  # face 1 is unseen for 0.4 s: still expected, not current
    moving = expected[np.argmin(expected[:, 0])]
    assert np.allclose(moving, [150, 100, 210, 170], atol=4)  # one more 10 px step
    assert len(tr.expected_boxes(5.0)[0]) == 0  # long gone: nothing to look for
