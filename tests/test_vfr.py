"""Variable frame rate: frames are timed by their own timestamps, from decoding to the stored bins.

The video is real: 5 s at 25 fps of two people turning their heads (frames of
two_people_head_turns_270p.mp4, played back and forth), then a 2 s gap in the timestamps
(the camera paused), then 10 s at 5 fps of a blurred background without faces, each frame
written with its own presentation timestamp (time base 1/1000 s). Timed by index over the
average rate, the faces ran on to about 12 s; they are in the first five seconds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.video import VideoSource, sample_times
from tests.synth import write_timed_video

FACE_MS = [40 * i for i in range(125)]  # 0 .. 4.96 s at 25 fps
EMPTY_MS = [7000 + 200 * j for j in range(50)]  # 7.0 .. 16.8 s at 5 fps, after a gap of 2 s
DURATION = 17.0  # the last frame lasts until 17.0 s
TRUE_FACE_BINS = sorted({ms // 1000 for ms in FACE_MS})  # [0, 1, 2, 3, 4] with 1 s bins


@pytest.fixture(scope="module")
def vfr_frames(media_dir: Path) -> list[tuple[int, np.ndarray]]:
    import av

    with av.open(str(media_dir / "two_people_head_turns_270p.mp4")) as c:
        faces = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n = len(faces)
    bounce = [k if k < n else 2 * n - 2 - k for k in (i % (2 * n - 2) for i in range(len(FACE_MS)))]  # no jumps
    background = cv2.GaussianBlur(faces[0], (0, 0), 25)  # the same room, no face left to find
    empty = [np.clip(background.astype(np.int16) + (j % 5), 0, 255).astype(np.uint8) for j in range(len(EMPTY_MS))]
    return [(t, faces[k]) for t, k in zip(FACE_MS, bounce)] + list(zip(EMPTY_MS, empty))


@pytest.fixture(scope="module")
def vfr_videos(vfr_frames, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vfr")
    return {ext: write_timed_video(d / f"phone.{ext}", vfr_frames) for ext in ("mp4", "mkv")}


@pytest.fixture()
def no_decord(monkeypatch):
    """decord refuses every file, as it does the files only PyAV reads: the PyAV path, for real."""
    import decord

    def refuse(*a, **k):
        raise RuntimeError("refused by the test")

    monkeypatch.setattr(decord, "VideoReader", refuse)


def _decoded(path: Path, fps: float = 4.0):
    src = VideoSource(path)
    batches = list(src.batches(fps, batch_size=5))
    return (src, np.concatenate([b.indices for b in batches]), np.concatenate([b.times for b in batches]),
            np.concatenate([b.frames for b in batches]))  # fmt: skip


def _sharpness(frames: np.ndarray) -> np.ndarray:
    return np.array([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in frames])


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_decord_and_pyav_report_each_frames_own_time(vfr_videos, ext, monkeypatch):
    truth = np.array(FACE_MS + EMPTY_MS) / 1000.0
    src, idx, times, frames = _decoded(vfr_videos[ext])
    assert src.backend == "decord"
    assert src.info.n_frames == len(truth) and np.allclose(src.times, truth, atol=1e-9)
    assert src.info.duration == pytest.approx(DURATION)
    # The test means something: index / declared rate is seconds off (mp4: the faces run to ~12 s;
    # mkv declares 25 fps: the whole video in 7 s).
    assert np.abs(np.arange(len(truth)) / src.info.fps - truth).max() > 5
    assert np.array_equal(times, src.times[idx])
    # Sampled at 4 fps by timestamp: the 25 fps stretch's frame nearest each instant (20, and its
    # last frame, 4.96 s, nearest the first instant of the gap), one per instant of the 5 fps
    # stretch (40), none in the gap, no frame twice.
    assert len(np.unique(idx)) == len(idx) == 61
    assert ((times < 5.0).sum(), ((times > 5.0) & (times < 7.0)).sum(), (times >= 7.0).sum()) == (21, 0, 40)
    assert np.abs(times[:20] - 0.25 * np.arange(20)).max() <= 0.02 + 1e-9 and times[20] == pytest.approx(4.96)
    # The pixels are those frames: sharp faces before the gap, the blurred room after it.
    sharp = _sharpness(frames)
    assert sharp[times < 5.0].min() > 5 * sharp[times >= 7.0].max()

    import decord

    monkeypatch.setattr(decord, "VideoReader", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("refused")))
    src2, idx2, times2, frames2 = _decoded(vfr_videos[ext])
    assert src2.backend == "pyav"
    assert src2.info.n_frames == len(truth) and np.allclose(src2.times, truth, atol=1e-9)
    assert src2.info.duration == pytest.approx(DURATION)
    assert np.array_equal(idx2, idx) and np.array_equal(times2, times) and np.array_equal(frames2, frames)


def test_chunk_windows_take_the_frames_of_their_seconds(vfr_videos):
    """A chunk's window is in seconds: its frames are those timestamped inside it, and the chunks
    together take exactly the frames of one pass."""
    src = VideoSource(vfr_videos["mp4"])
    whole = src.sample(4.0)[1]
    cuts = [0.0, 4.0, 8.0, 12.0, 16.0, DURATION]
    parts = [src.sample(4.0, a, b)[1] for a, b in zip(cuts, cuts[1:])]
    assert np.array_equal(np.concatenate(parts), whole)
    # 4-8 s: at 4 fps from 4.0 to the last face frame, none in the gap, the room from 7.0 s (the
    # 200 ms frame nearest each 250 ms instant; 7.5 s is a tie between 7.4 and 7.6 s).
    assert np.allclose(parts[1], [4.0, 4.24, 4.48, 4.76, 4.96, 7.0, 7.2, 7.6, 7.8])
    assert all(((p >= a) & (p < b)).all() for p, a, b in zip(parts, cuts, cuts[1:]))


def _old_sample_indices(n: int, src_fps: float, fps: float) -> np.ndarray:
    """How frames were sampled before timestamps: round(instant * declared rate)."""
    if fps >= src_fps:
        return np.arange(n)
    t = np.arange(0.0, n / src_fps, 1.0 / fps)
    return np.unique(np.minimum(np.round(t * src_fps).astype(np.int64), n - 1))


@pytest.mark.parametrize("src_fps", [12.5, 25.0, 29.97002997, 30.0, 59.94005994])
def test_constant_rate_videos_sample_the_frames_they_always_did(src_fps):
    from fractions import Fraction

    tb = Fraction(1001, 30000) if src_fps == 29.97002997 else Fraction(1001, 60000) if src_fps > 59 else None
    for n in (7, 50, 61, 1000, 45001):
        # As frame_times gives them: integer timestamps times the time base.
        times = (np.arange(n) * tb.numerator) / tb.denominator if tb else np.arange(n) / src_fps
        rate = float(1 / tb) if tb else src_fps
        for fps in (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 12.5, 25.0):
            got = sample_times(times, n / rate, fps, rate=rate)
            assert np.array_equal(got, _old_sample_indices(n, rate, fps)), (n, fps)
        # The general rule (no declared rate) takes the frame nearest each instant too: at most a
        # floating-point tie apart from the old rounding.
        near = sample_times(times, n / rate, 4.0)
        old = _old_sample_indices(n, rate, 4.0)
        assert len(near) == len(old) and np.abs(near - old).max() <= 1


def test_sampling_by_timestamp_uses_a_frame_once_and_none_in_a_gap():
    t = np.concatenate([np.arange(0, 1, 0.01), 3.0 + np.arange(0, 2, 0.5)])  # 100 fps, a 2 s gap, 2 fps
    idx = sample_times(t, 5.0, 4.0)
    got = t[idx]
    assert len(set(idx.tolist())) == len(idx)
    # 0.99 s, the last frame before the gap, is the one nearest the instant 1.0 s.
    assert np.allclose(got[got < 1], [0, 0.25, 0.5, 0.75, 0.99]) and not ((got > 1) & (got < 3)).any()
    assert np.allclose(got[got >= 3], [3.0, 3.5, 4.0, 4.5])  # slower than 4 fps: every frame, once


@pytest.fixture(scope="module")
def pipeline():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        yield p


@pytest.mark.parametrize("backend, chunk_seconds", [("decord", 60.0), ("pyav", 60.0), ("decord", 4.0)])
def test_visible_bins_are_where_the_faces_are(db_url, settings, pipeline, vfr_videos, request, backend, chunk_seconds):
    from affectline.queue import ANALYZE_TASK
    from tasks.eager import run_analysis
    from storage.db import session_scope
    from storage.models import Job, JobStatus, Recording
    from storage.repo import create_job, create_recording, export_frame

    if backend == "pyav":
        request.getfixturevalue("no_decord")
    video = vfr_videos["mp4"]
    assert VideoSource(video).backend == backend
    with session_scope(db_url) as s:
        rec = create_recording(s, str(video), "classroom")
        job = create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": 4.0, "chunk_seconds": chunk_seconds})
        rid, jid = rec.id, job.id
    run_analysis(jid, settings, pipeline=pipeline)  # eager: plan, chunks and link in this process
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.done, job.error
        assert job.params["duration"] == pytest.approx(DURATION)
        assert s.get(Recording, rid).duration == pytest.approx(DURATION)
        df = export_frame(s, rid)
    assert df["person_id"].nunique() == 2  # the two people of the clip
    visible = df[df["face_visible"]]
    assert sorted(set((visible["t_start"]).round().astype(int))) == TRUE_FACE_BINS
    for _, rows in visible.groupby("person_id"):
        assert sorted(rows["t_start"].round().astype(int)) == TRUE_FACE_BINS  # each face in each of its bins
    assert df["t_end"].max() <= DURATION + 1e-9


@pytest.mark.parametrize("timestamps", ["packets", "opencv"])
def test_opencv_decoder_times_frames_the_same(vfr_videos, monkeypatch, timestamps):
    """``Cv2Source`` (a box with OpenCV and no decord) samples the same frames at the same times,
    with the packets' timestamps where PyAV is there and OpenCV's own where it is not."""
    import pipeline.decode as decode

    if timestamps == "opencv":
        monkeypatch.setattr(decode, "frame_times", lambda path: (_ for _ in ()).throw(ModuleNotFoundError("av")))
    truth = np.array(FACE_MS + EMPTY_MS) / 1000.0
    src = decode.Cv2Source(vfr_videos["mp4"])
    assert src.info.n_frames == len(truth) and np.abs(src.times - truth).max() < 1e-3
    assert src.info.duration == pytest.approx(DURATION, abs=1e-3)
    ref = VideoSource(vfr_videos["mp4"])
    batches = list(src.batches(4.0, batch_size=5, start=4.0, end=12.0))  # a chunk after the start
    idx = np.concatenate([b.indices for b in batches])
    assert np.array_equal(idx, ref.sample(4.0, 4.0, 12.0)[0])
    assert np.allclose(np.concatenate([b.times for b in batches]), truth[idx], atol=1e-3)
    want = np.concatenate([b.frames for b in ref.batches(4.0, batch_size=5, start=4.0, end=12.0)])
    assert np.abs(np.concatenate([b.frames for b in batches]).astype(int) - want).mean() < 2  # the same pictures


def test_decords_own_times_when_the_packets_cannot_be_read(vfr_videos, tmp_path):
    """decord's float32 timestamps are the fallback: right to a fraction of a millisecond on a
    variable-rate file, and exactly k / fps on a constant-rate one."""
    import decord

    from pipeline.video import _decord_times
    from tests.synth import counter_video

    times, duration = _decord_times(decord.VideoReader(str(vfr_videos["mp4"])), 25.0)
    assert np.abs(times - np.array(FACE_MS + EMPTY_MS) / 1000.0).max() < 1e-5 and duration == pytest.approx(DURATION)
    cfr = counter_video(tmp_path / "c.mp4", frames=60, fps=25)
    times, duration = _decord_times(decord.VideoReader(str(cfr)), 25.0)
    assert np.array_equal(times, np.arange(60) / 25.0) and duration == 60 / 25.0
