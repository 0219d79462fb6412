"""The pipeline's stages on their own: chunk windows, bin ownership, linking chunk results, OpenCV decoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from affectline.features import FEATURE_NAMES
from affectline.types import Segment, TimeGrid, VideoInfo
from pipeline.bins import absent_bins, bin_samples, owned_bins
from pipeline.chunk import ChunkResult, ChunkTrack
from pipeline.link import link_chunk_results
from tests.paths import MEDIA


def test_chunk_windows_are_whole_bins_and_cover_the_clip():
    from pipeline.analyse import chunk_windows

    w = chunk_windows(10.3, 2.6, 1.0)  # 2.6 s rounds to 3 whole bins
    assert [(s.start, s.end) for s in w] == [(0, 3), (3, 6), (6, 9), (9, 10.3)]
    assert chunk_windows(4.0, 60, 1.0) == [Segment(0, 4.0)]
    assert chunk_windows(6.0, 2.0, 1.0)[-1] == Segment(4.0, 6.0)  # no empty chunk at the end
    grid = TimeGrid(1.0)
    owned = [owned_bins(grid, s) for s in chunk_windows(10.3, 2.6, 1.0)]
    assert owned == [(0, 3), (3, 6), (6, 9), (9, 11)]  # each bin in exactly one chunk


def _samples(times: np.ndarray) -> dict[str, np.ndarray]:
    n = len(times)
    return {"times": times, "blend": np.full((n, 52), 0.2), "pose": np.zeros((n, 3)), "expr": np.full((n, 7), 1 / 7),
            "found": np.ones(n, bool), "face_px": np.full(n, 40.0), "sharp": np.full(n, 100.0)}  # fmt: skip


def _track(tid: int, times, box, emb, overlap=(), grid=TimeGrid(1.0), duration=8.0, overlap_box=None) -> ChunkTrack:
    times = np.asarray(times, np.float64)
    a = _samples(times)
    acad = np.tile([0.6, 0.1, 0.1, 0.1, 0.1], (len(times), 1)).astype(np.float32)
    bins, feats = bin_samples(a, acad, np.full(len(times), 0.8, np.float32), grid, 4.0, duration,
                              (np.array([0, 0, 0, 0, 1.0], np.float32), 0.0))  # fmt: skip
    ot = np.asarray(overlap, np.float64)
    boxes = np.tile(np.asarray(box, np.float32), (len(times), 1))
    return ChunkTrack(
        track_id=tid, times=times, face_boxes=boxes, context_boxes=boxes, bins=bins, features=feats,
        n_found=len(times), n_confident=len(times), embedding=np.asarray(emb, np.float32),
        embedding_samples=np.asarray(emb, np.float32)[None], link_times=times, link_boxes=boxes,
        overlap_times=ot, overlap_boxes=np.tile(np.asarray(box if overlap_box is None else overlap_box, np.float32), (len(ot), 1)),
        overlap_embeddings=np.full((len(ot), 128), np.nan, np.float32),
    )  # fmt: skip


def _chunk(index: int, window, analysed, tracks) -> ChunkResult:
    return ChunkResult(index=index, window=Segment(*window), analysed=Segment(*analysed),
                       info=VideoInfo("x.mp4", 25.0, 200, 640, 360), analysis_fps=4.0, bin_seconds=1.0,
                       academic_model="cues@x", expression_model="fer@x",
                       absent_academic=np.array([0, 0, 0, 0, 1.0], np.float32), absent_engagement=0.0, tracks=tracks)  # fmt: skip


def _e(k: int) -> np.ndarray:
    v = np.zeros(128, np.float32)
    v[k] = 1
    return v


def test_overlap_decides_between_look_alikes_at_a_boundary():
    # Twins (same embedding) cross the room while the chunk boundary passes: A walks from the
    # left to the right, B from the right to the left. By place alone, A's end (left, chunk 0)
    # continues B's start (left, chunk 1); the boxes seen in the overlap [3, 5) by both chunks
    # say who is who.
    left, right = [50, 50, 90, 100], [400, 50, 440, 100]
    mid_a, mid_b = [150, 50, 190, 100], [300, 50, 340, 100]  # where each is during the overlap
    t0, t1, ov = np.arange(0, 4, 0.25), np.arange(4, 8, 0.25), np.arange(3, 5, 0.25)
    c0 = _chunk(0, (0, 4), (0, 5), [_track(0, t0, left, _e(0), ov, overlap_box=mid_a),
                                    _track(1, t0, right, _e(0), ov, overlap_box=mid_b)])  # fmt: skip
    c1 = _chunk(1, (4, 8), (3, 8), [_track(0, t1, left, _e(0), ov, overlap_box=mid_b),
                                    _track(1, t1, right, _e(0), ov, overlap_box=mid_a)])  # fmt: skip
    out = link_chunk_results([c0, c1], c0.info, 4.0)
    assert len(out.tracks) == 2
    assert sorted(tuple(t.sources) for t in out.tracks) == [((0, 0), (1, 1)), ((0, 1), (1, 0))]
    for t in out.tracks:
        assert t.bins.t_start.tolist() == list(range(8)) and len(t.times) == 32
    # Without the overlap zone, place decides, and decides wrong: the check above is not vacuous.
    for c in (c0, c1):
        for tr in c.tracks:
            tr.overlap_times, tr.overlap_boxes = tr.overlap_times[:0], tr.overlap_boxes[:0]
    wrong = link_chunk_results([c0, c1], c0.info, 4.0)
    assert sorted(tuple(t.sources) for t in wrong.tracks) == [((0, 0), (1, 0)), ((0, 1), (1, 1))]


def test_a_person_away_for_a_chunk_gets_no_face_bins_between():
    box = [50, 50, 90, 100]
    c0 = _chunk(0, (0, 2), (0, 3), [_track(0, np.arange(0, 2, 0.25), box, _e(3))])
    c1 = _chunk(1, (2, 4), (1, 5), [])
    c2 = _chunk(2, (4, 6), (3, 6), [_track(0, np.arange(5, 6, 0.25), [300, 50, 340, 100], _e(3))])
    out = link_chunk_results([c2, c0, c1], c0.info, 4.0)
    (t,) = out.tracks  # re-identified by appearance, far from where it was
    assert t.bins.t_start.tolist() == [0, 1, 2, 3, 4, 5]
    assert t.bins.face_visible.tolist() == [True, True, False, False, False, True]
    assert t.bins.distraction[2:5].eq(1.0).all() and t.bins.engagement[2:5].eq(0.0).all()
    assert t.features.shape == (6, len(FEATURE_NAMES))
    cov = FEATURE_NAMES.index("face_visible")
    assert t.features[2:5, cov].tolist() == [0, 0, 0] and np.isnan(t.features[2:5, 0]).all()
    assert t.bins.t_end.iloc[-1] == 6.0


def test_unconfirmed_tracks_are_not_persons_and_bytes_keep_everything():
    tr = _track(0, np.arange(0, 2, 0.25), [0, 0, 30, 40], _e(1))
    tr.n_found, tr.n_confident = 0, 3  # no landmarks, and fewer than half the samples at >= 0.95
    c = _chunk(0, (0, 2), (0, 2), [tr])
    assert link_chunk_results([c], c.info, 4.0).tracks == []
    tr.n_confident = 5
    back = ChunkResult.from_bytes(c.to_bytes())
    assert len(link_chunk_results([back], c.info, 4.0).tracks) == 1
    pd.testing.assert_frame_equal(back.tracks[0].bins, tr.bins)
    assert back.tracks[0].thumbnail is None and back.window == c.window
    with pytest.raises(ValueError):
        ChunkResult.from_bytes(b"not a chunk")


def test_absent_bins_end_at_the_clip_end():
    df, f = absent_bins(TimeGrid(1.0), np.array([3, 4]), 4.5, np.array([0, 0, 0, 0, 1.0]), 0.0)
    assert df.t_end.tolist() == [4.0, 4.5] and not df.face_visible.any() and f.shape == (2, len(FEATURE_NAMES))


def test_opencv_decoding_samples_the_frames_decord_does():
    from pipeline.decode import Cv2Source
    from pipeline.video import VideoSource

    path = MEDIA / "two_people_head_turns_270p.mp4"
    a = [b for b in VideoSource(path).batches(4.0, batch_size=5, start=1.0, end=3.0)]
    b = [b for b in Cv2Source(path).batches(4.0, batch_size=5, start=1.0, end=3.0)]
    assert Cv2Source(path).info == VideoSource(path).info
    assert np.concatenate([x.indices for x in a]).tolist() == np.concatenate([x.indices for x in b]).tolist()
    fa, fb = np.concatenate([x.frames for x in a]), np.concatenate([x.frames for x in b])
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() < 3  # same frames; colour conversion may round apart


def test_the_accelerator_rule_batches_frames_and_keeps_the_persons():
    """The CUDA rule (every frame searched whole, every face embedded, a batch of frames per
    call) run on the CPU: the same two persons as the default rule, on real footage."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues", embedder="torch"), device="cpu") as p:
        default = p.apply(MEDIA / "two_people_head_turns_270p.mp4", fps=4)
        p.batch_across_frames = True
        batched = p.apply(MEDIA / "two_people_head_turns_270p.mp4", fps=4)
    assert len(batched.tracks) == len(default.tracks) == 2
    assert batched.n_full_searches == 18  # every frame of 4.48 s at 4 fps
    for a, b in zip(default.tracks, batched.tracks):
        assert abs(len(a.times) - len(b.times)) <= 1
        assert np.nanmax(np.abs(a.bins.engagement.to_numpy() - b.bins.engagement.to_numpy())) < 0.1


def test_the_gpu_path_runs_with_what_a_gpu_machine_has(tmp_path):
    """The CUDA rule end to end with only what the GPU machine offers (torch, numpy, OpenCV, h5py
    and the kit's small wheels: pandas, pydantic): no scipy, mediapipe, LiteRT, tflite, dlib,
    decord, celery or SQLAlchemy. Run on the CPU here; the same persons as the full install."""
    import json
    import subprocess
    import sys

    code = f"""
import sys
for m in ("scipy", "mediapipe", "ai_edge_litert", "tflite", "dlib", "decord", "celery", "kombu", "sqlalchemy"):
    sys.modules[m] = None  # importing any of them now fails
import json
from affectline.settings import Settings
from pipeline.analyse import Pipeline
with Pipeline(Settings(academic_model="cues", landmarker="torch", embedder="torch"), device="cpu") as p:
    p.batch_across_frames = True
    out = p.apply({str(MEDIA / "two_people_head_turns_270p.mp4")!r}, fps=4)
print(json.dumps({{"persons": len(out.tracks), "samples": sorted(len(t.times) for t in out.tracks),
                  "source": type(p).__module__}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["persons"] == 2 and min(got["samples"]) >= 15  # 4.48 s at 4 fps: 18 frames, both faces in most


def test_prefetch_keeps_order_raises_where_the_batch_was_and_stops():
    import threading
    import time

    from pipeline.decode import Prefetch

    def gen(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad frame {i}")
            yield i

    assert list(Prefetch(gen(7), depth=2)) == list(range(7))
    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for x in Prefetch(gen(7, fail_at=3)):
            got.append(x)
    assert got == [0, 1, 2]  # every batch before the bad one is handed out first
    before = threading.active_count()
    p = Prefetch(gen(10**6))
    assert next(p) == 0
    p.close()  # a consumer that stops early (a failed chunk) leaves no thread behind
    time.sleep(0.3)
    assert threading.active_count() == before


def test_pipeline_output_is_the_same_with_and_without_prefetch():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues")) as p:
        a = p.apply(MEDIA / "two_people_head_turns_270p.mp4", fps=4)
        p.prefetch_batches = 0
        b = p.apply(MEDIA / "two_people_head_turns_270p.mp4", fps=4)
    assert len(a.tracks) == len(b.tracks) == 2
    for x, y in zip(a.tracks, b.tracks):
        np.testing.assert_array_equal(x.times, y.times)
        np.testing.assert_allclose(x.bins.engagement.to_numpy(), y.bins.engagement.to_numpy(), equal_nan=True)
