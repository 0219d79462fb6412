"""Chunked tracking (each chunk its own tracker, linked by ``link_chunks``) gives the persons of one pass."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from recognition.tracking import TrackSummary, link_chunks
from recognition.tracking.evaluate import final_ids, identity_figures, label_rows
from tests import realseq
from tests.support import same_persons

embedder = realseq.embedder


def chunked(frames, times, dets, bounds: list[int]):
    """Track each chunk [bounds[i], bounds[i+1]) separately; return per-row global ids and the mapping."""
    runs = [realseq.run_tracker(frames[a:b], times[a:b], dets[a:b], embedder()) for a, b in itertools.pairwise(bounds)]
    mapping = link_chunks([r.summaries for r in runs])
    ids = []
    for ci, r in enumerate(runs):
        for d in r.dets:
            local = final_ids(d.track_id, r.summaries)
            ids.append(np.array([mapping.get((ci, int(k)), -1) if k >= 0 else -1 for k in local], np.int64))
    return ids, mapping, runs


def same_partition(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[int, int]:
    """(rows compared, pairs of rows on which the two labellings disagree about 'same person')."""
    x, y = np.concatenate(a), np.concatenate(b)
    ok = (x >= 0) & (y >= 0)
    x, y = x[ok], y[ok]
    return int(ok.sum()), int(((x[:, None] == x[None, :]) != (y[:, None] == y[None, :])).sum() // 2)


@lru_cache(maxsize=1)
def crowd():
    frames, times, dets, idx = realseq.crowd_detections(**realseq.CROWD)
    single = realseq.run_tracker(frames, times, dets, embedder())
    return frames, times, dets, idx, single


def test_chunked_crowd_gives_the_persons_of_a_single_pass():
    frames, times, dets, idx, single = crowd()
    single_ids = [final_ids(d.track_id, single.summaries) for d in single.dets]
    ids, _mapping, runs = chunked(frames, times, dets, [0, 7, 14, len(frames)])  # three 1.4 s chunks
    rows, disagree = same_partition(single_ids, ids)
    assert disagree == 0 and rows >= 0.9 * sum(len(d) for d in dets), (rows, disagree)
    # Same persons, counted the same way, and still no id shared by two people.
    assert len(set(np.concatenate(ids)) - {-1}) == len(set(np.concatenate(single_ids)) - {-1})
    labels = realseq.crowd_labels(dets, idx, scale=realseq.CROWD["scale"])
    t = np.concatenate([[ti] * len(d) for ti, d in zip(times, dets)])
    fig = identity_figures(t, np.concatenate(labels), np.concatenate(ids))
    assert fig.shared_ids == 0 and fig.id_switches == 0, fig
    # Tracks really were cut: every chunk has its own local tracks.
    assert all(len(r.summaries) >= 4 for r in runs)


def test_a_person_returning_in_a_later_chunk_is_linked_by_appearance():
    seq, dets = realseq.detected("leave_and_return")
    # Cut while the walker is away (frames 14-25): only appearance can link them.
    ids, _mapping, _runs = chunked(seq.frames, seq.times, dets, [0, 20, len(seq.frames)])
    t = np.concatenate([[ti] * len(d) for ti, d in zip(seq.times, dets)])
    people = np.concatenate([label_rows(d.boxes, b, p) for d, b, p in zip(dets, seq.gt_boxes, seq.gt_person)])
    fig = identity_figures(t, people, np.concatenate(ids))
    assert fig.people == 2 and fig.ids == 2 and fig.id_switches == 0 and fig.shared_ids == 0, fig


def _track(tid: int, t0: float, t1: float, box, emb, n: int = 5) -> TrackSummary:
    times = np.linspace(t0, t1, n)
    boxes = np.tile(np.asarray(box, np.float32), (n, 1))
    e = np.asarray(emb, np.float32)
    return TrackSummary(tid, times, boxes, np.ones(n, np.float32), e, np.tile(e, (3, 1)))


def _e(k: int, scale: float = 1.0) -> np.ndarray:
    v = np.zeros(128, np.float32)
    v[k] = scale
    return v


def test_tracks_of_one_chunk_never_merge_and_ids_follow_first_appearance():
    a = [_track(0, 0, 9, [0, 0, 50, 60], _e(0)), _track(1, 5, 9, [200, 0, 250, 60], _e(0))]  # twins in chunk 0
    b = [_track(4, 10, 19, [0, 0, 50, 60], _e(0)), _track(2, 12, 19, [400, 0, 450, 60], _e(1))]
    m = link_chunks([a, b])
    assert m[(0, 0)] != m[(0, 1)]  # same look, same chunk: two people
    assert m[(1, 4)] == m[(0, 0)]  # continues at the boundary, same place
    assert sorted(set(m.values())) == [0, 1, 2]
    assert m[(0, 0)] == 0 and m[(0, 1)] == 1 and m[(1, 2)] == 2


def _at(d: float) -> np.ndarray:
    """A unit vector at euclidean distance ``d`` from ``_e(0)``."""
    theta = 2 * np.arcsin(d / 2)
    return np.cos(theta) * _e(0) + np.sin(theta) * _e(1)


def test_boundary_continuity_and_appearance_thresholds():
    box, far = [100, 100, 150, 160], [500, 300, 550, 360]
    # Picking up at the boundary in the same place: joined even with a turned face (distance 0.7).
    m = link_chunks([[_track(0, 0, 9.9, box, _e(0))], [_track(0, 10, 19, box, _at(0.7))]])
    assert m[(0, 0)] == m[(1, 0)]
    # ...but not two clearly different faces (0.9), however well placed.
    m = link_chunks([[_track(0, 0, 9.9, box, _e(0))], [_track(0, 10, 19, box, _at(0.9))]])
    assert m[(0, 0)] != m[(1, 0)]
    # Far away and much later at distance 0.7: two people; at 0.3 the same person, wherever they reappear.
    m = link_chunks(
        [[_track(0, 0, 5, box, _e(0))], [_track(0, 30, 39, far, _at(0.7)), _track(1, 30, 39, box, _at(0.9))]]
    )
    assert len(set(m.values())) == 3
    m = link_chunks([[_track(0, 0, 5, box, _e(0))], [_track(0, 30, 39, far, _at(0.3))]])
    assert m[(0, 0)] == m[(1, 0)]
    # No embedding at all: only a motion continuation links, to the nearer of two candidates.
    nan = np.full(128, np.nan)
    m = link_chunks(
        [[_track(0, 0, 9.9, box, nan)], [_track(0, 10, 19, far, nan), _track(1, 10, 19, [110, 100, 160, 160], nan)]]
    )
    assert m[(0, 0)] == m[(1, 1)] != m[(1, 0)]
    assert link_chunks([]) == {} and link_chunks([[], []]) == {}


def test_a_chain_of_lookalikes_does_not_merge_two_different_people():
    # A ~ B (0.45) and B ~ C (0.45) but A and C are 0.9 apart: C must not join A's person.
    a, c = _e(0), _e(1)
    mid = (a + c) / 2
    m = link_chunks(
        [
            [_track(0, 0, 5, [0, 0, 50, 60], a)],
            [_track(0, 20, 25, [300, 0, 350, 60], mid)],
            [_track(0, 40, 45, [600, 0, 650, 60], c)],
        ],
        threshold=0.75,
    )
    assert len({m[(0, 0)], m[(1, 0)], m[(2, 0)]}) >= 2 and m[(0, 0)] != m[(2, 0)]


# -- the pipeline's chunk API on real footage ---------------------------------------------


@lru_cache(maxsize=4)
def _pipeline_run(video: str, chunk_seconds: float, overlap_s: float = 1.0):
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    msgs: list[tuple[float, str]] = []
    with Pipeline(Settings(academic_model="cues", chunk_seconds=chunk_seconds), device="cpu") as p:
        p.chunk_overlap_s = overlap_s
        out = p.apply(realseq.MEDIA / video, hook=lambda f, m: msgs.append((f, m)), fps=4)
    return out, msgs


# Two pipeline runs of the 1080p crowd, the chunked one over 12.4 s of frames (overlaps
# included): measured 4.3 + 10.7 min with the 2 cores shared by a dozen other jobs.
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_chunked_pipeline_gives_the_persons_and_bins_of_a_single_pass():
    """The crowd (4.2 s, 1080p) in 1 s chunks with 1 s of overlap: the same persons, each bin once."""
    single, _ = _pipeline_run("crowd_walk_1080p.mp4", 60.0)
    chunked, msgs = _pipeline_run("crowd_walk_1080p.mp4", 1.0)
    assert len(single.tracks) >= 3
    same_persons(single, chunked)  # tests.support
    assert sum(len(t.sources) >= 3 for t in chunked.tracks) >= 3  # really cut into chunks and stitched
    # The work is counted once: faces in the chunks' own windows add up to the single pass's.
    assert abs(chunked.n_face_samples - single.n_face_samples) <= 0.05 * single.n_face_samples
    # Progress: never past its total, ends at 1, and the last bin ends where the clip ends.
    fr = [f for f, _ in msgs]
    assert fr == sorted(fr) and fr[-1] == 1.0
    for _, msg in msgs:
        if "frames" in msg:
            done, total = (int(x) for x in msg.split(": ")[1].split(" ")[0].split("/"))
            assert done <= total, msg
    assert max(t.bins.t_end.max() for t in chunked.tracks) == pytest.approx(chunked.info.duration)


def test_a_chunk_result_survives_bytes_and_links_alone():
    from affectline.settings import Settings
    from pipeline.analyse import ChunkResult, ChunkWindow, JobShape, Pipeline, link_chunk_results
    from pipeline.video import VideoSource

    src = VideoSource(realseq.MEDIA / "two_people_head_turns_270p.mp4")
    with Pipeline(Settings(academic_model="cues", store_thumbnails=True), device="cpu") as p:
        parts = [p.analyse_chunk(src, ChunkWindow(i, a, b), JobShape(4, 1.0, overlap_s=1.0))
                 for i, (a, b) in enumerate([(0, 2), (2, 4.48)])]  # fmt: skip
    back = [ChunkResult.from_bytes(c.to_bytes()) for c in parts]
    for c, r in zip(parts, back):
        assert (r.index, r.window, r.analysed, r.info) == (c.index, c.window, c.analysed, c.info)
        assert r.analysed.start == max(0, c.window.start - 1.0)
        assert len(r.tracks) == len(c.tracks)
        for a, b in zip(c.tracks, r.tracks):
            pd.testing.assert_frame_equal(a.bins, b.bins)
            np.testing.assert_array_equal(a.features, b.features)
            np.testing.assert_array_equal(a.overlap_boxes, b.overlap_boxes)
            assert a.thumbnail == b.thumbnail and (a.thumbnail is None or a.thumbnail[:2] == b"\xff\xd8")
            # Only the nominal window's samples and bins.
            assert ((a.times >= c.window.start) & (a.times < c.window.end)).all()
            assert ((a.bins.t_start >= c.window.start) & (a.bins.t_start < c.window.end)).all()
    out = link_chunk_results(back[::-1], src.info, 4.0)  # order does not matter
    assert len(out.tracks) == 2
    for t in out.tracks:
        assert [c for c, _ in t.sources] == [0, 1]  # stitched across the boundary
        assert t.bins.t_start.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and t.bins.t_end.iloc[-1] == pytest.approx(4.48)
    with pytest.raises(ValueError, match="repeat"):
        link_chunk_results([back[0], back[0]], src.info, 4.0)
