"""Decoding at the analysis rate, streaming, and bad-input errors."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.video import VideoError, VideoSource, sample_indices
from tests.synth import counter_video


@pytest.mark.parametrize(
    "n, src, fps, expected",
    [(10, 25.0, 50.0, list(range(10))), (25, 25.0, 5.0, [0, 5, 10, 15, 20]), (50, 25.0, 4.0, [0, 6, 12, 19, 25, 31, 38, 44])],
)
def test_sample_indices(n, src, fps, expected):
    assert sample_indices(n, src, fps).tolist() == expected


def test_batches_return_the_sampled_frames_in_order(tmp_path: Path):
    path = counter_video(tmp_path / "c.mp4", frames=50, fps=25)
    src = VideoSource(path)
    assert (src.info.n_frames, src.info.fps, src.info.width, src.info.height) == (50, 25.0, 160, 96)
    batches = list(src.batches(5.0, batch_size=3))
    idx = np.concatenate([b.indices for b in batches])
    assert idx.tolist() == list(range(0, 50, 5))
    assert max(len(b.indices) for b in batches) == 3  # streamed, never the whole video
    levels = np.concatenate([b.frames.reshape(len(b.indices), -1).mean(axis=1) for b in batches])
    assert np.allclose(levels, 4 * idx, atol=3)  # the pixels are those frames
    times = np.concatenate([b.times for b in batches])
    assert np.allclose(times, idx / 25.0)


def _levels(batches) -> np.ndarray:
    return np.concatenate([b.frames.reshape(len(b.indices), -1).mean(axis=1) for b in batches])


def test_time_window_selects_a_chunk(tmp_path: Path):
    # Keyframes every 12 frames: the window starts at frame 25, between keyframes 24 and 36,
    # where decord's seek alone would land on frame 24.
    src = VideoSource(counter_video(tmp_path / "c.mp4", frames=50, fps=25))
    batches = list(src.batches(25.0, start=1.0, end=1.4))
    idx = np.concatenate([b.indices for b in batches])
    assert idx.tolist() == list(range(25, 35))
    assert np.allclose(_levels(batches), 4 * idx, atol=3)  # the pixels are those frames


@pytest.mark.parametrize("fps, start", [(25.0, 0.0), (5.0, 0.3), (3.0, 0.9), (12.5, 1.1)])
def test_frames_are_exact_across_bursts_and_chunk_starts(tmp_path: Path, monkeypatch, fps, start):
    src = VideoSource(counter_video(tmp_path / "c.mp4", frames=60, fps=25))
    monkeypatch.setattr(VideoSource, "BURST_BYTES", 5 * 160 * 96 * 3)  # a burst of 4 frames at batch size 2
    batches = list(src.batches(fps, batch_size=2, start=start))
    idx = np.concatenate([b.indices for b in batches])
    assert idx[0] >= round(start * 25) and len(idx) > 3
    assert np.allclose(_levels(batches), 4 * idx, atol=3)
    # A second pass over the same reader (the next chunk, or a re-analysis) reads the same pixels.
    assert np.allclose(_levels(src.batches(fps, batch_size=2, start=start)), 4 * idx, atol=3)


def test_decoder_does_not_run_ahead_while_the_consumer_is_busy(tmp_path: Path):
    """decord decodes ahead in a background thread while the caller works on a batch; left
    alone it fills memory with the rest of the video (GBs for a lesson). The reader is
    parked between bursts, so a slow consumer holds only its own batch."""
    import time

    import psutil

    from tests.synth import write_video

    w, h, n = 640, 360, 750  # 30 s at 25 fps: ~520 MB of RGB frames if all decoded at once
    ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    path = write_video(tmp_path / "long.mp4", n, 25, (w, h), lambda i: np.broadcast_to(np.roll(ramp, 7 * i, axis=1), (h, w, 3)).copy())
    src = VideoSource(path)
    proc = psutil.Process()
    batches = src.batches(1.0, batch_size=2)
    next(batches)
    before = proc.memory_info().rss
    time.sleep(1.5)  # the analysis of a batch: decord would decode the whole file meanwhile
    grown = (proc.memory_info().rss - before) / 2**20
    assert grown < 60, f"RSS grew {grown:.0f} MB while the consumer was busy"
    assert sum(len(b.indices) for b in batches) == 28  # and the rest still arrives


def test_pyav_fallback_gives_the_same_frames(tmp_path: Path):
    src = VideoSource(counter_video(tmp_path / "c.mp4", frames=30, fps=25))
    a = np.concatenate([b.frames for b in src.batches(5.0)])
    src.backend = "pyav"
    b = np.concatenate([b.frames for b in src.batches(5.0)])
    assert np.array_equal(a, b)


def test_real_footage_decodes(media_dir: Path):
    src = VideoSource(media_dir / "crowd_walk_1080p.mp4")
    assert (src.info.n_frames, src.info.width, src.info.height) == (105, 1920, 1080)
    first = next(src.batches(4.0, batch_size=2))
    assert first.frames.shape == (2, 1080, 1920, 3) and first.frames.std() > 10


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.mp4", "file not found"),
        (lambda d: (d / "notes.mp4").write_text("lesson notes, not a video") and d / "notes.mp4", "not a video file or is damaged"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "file is empty"),
        (lambda d: d, "is a folder"),
    ],
)
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path: Path, make, words):
    path = make(tmp_path)
    with pytest.raises(VideoError) as e:
        VideoSource(path)
    msg = str(e.value)
    assert str(path) in msg and words in msg and "\n" not in msg


def test_truncated_mp4_is_reported(tmp_path: Path, media_dir: Path):
    data = (media_dir / "crowd_walk_1080p.mp4").read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 3])  # moov atom lost with the tail
    with pytest.raises(VideoError, match="cut.mp4: is not a video file or is damaged"):
        VideoSource(bad)


def test_truncated_faststart_mp4_fails_while_decoding(tmp_path: Path):
    from tests.synth import write_video

    rng = np.random.default_rng(0)
    good = write_video(tmp_path / "g.mp4", 60, 25, (160, 96), lambda i: rng.integers(0, 255, (96, 160, 3), np.uint8), faststart=True)
    data = good.read_bytes()
    bad = tmp_path / "cut_fast.mp4"
    bad.write_bytes(data[: len(data) // 2])  # index intact, media data cut in half
    with pytest.raises(VideoError) as e:
        src = VideoSource(bad)
        for _ in src.batches(25.0):
            pass
    assert "cut_fast.mp4" in str(e.value) and ("truncated" in str(e.value) or "damaged" in str(e.value))
