"""The review copy (issue 19): written from the decoded frames, joined from chunk parts, kept where allowed.

Sources are made here with PyAV: every frame carries its index in binary as black and white stripes,
so a decoded frame of the copy says which source frame it came from, whatever the compression.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tasks.review_copy import ReviewSpec, chunk_writer, frame_step, join_parts, review_size
from pipeline.video import VideoSource

BITS = 8


def coded(k: int, size) -> np.ndarray:
    """Frame ``k``: BITS vertical stripes, white where k's bit is set."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    for b in range(BITS):
        if k >> b & 1:
            img[:, b * w // BITS : (b + 1) * w // BITS] = 255
    return img


def read_code(grey: np.ndarray) -> int:
    w = grey.shape[1]
    means = [grey[:, b * w // BITS + 4 : (b + 1) * w // BITS - 4].mean() for b in range(BITS)]
    return sum(1 << b for b, m in enumerate(means) if m > 128)


def make_video(path: Path, n: int = 80, fps: int = 25, size=(320, 240), vcodec: str = "libx264",
               audio: str | None = None, fmt: str | None = None) -> Path:  # fmt: skip
    """A test source: frame k shows k in stripes (``coded``); optionally a 440 Hz tone as ``audio``."""
    with av.open(str(path), "w", format=fmt) as c:
        v = c.add_stream(vcodec, rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
        if vcodec == "libx264":
            v.options = {"g": "10", "bf": "2"}  # short GOPs: decord's parking seeks land inside the clip
        a = None
        if audio:
            a = c.add_stream(audio, rate=44100)
            a.layout = "mono"
        for k in range(n):
            img = coded(k, size)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        if a is not None:
            samples = int(44100 * n / fps)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
            for s0 in range(0, samples, 1024):
                fr = av.AudioFrame.from_ndarray(tone[None, s0 : s0 + 1024], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = 44100, s0
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def decoded(path: Path) -> tuple[list[float], list[int]]:
    """(frame times in s, source index each frame shows) of a review copy."""
    times, idx = [], []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.video[0]):
            times.append(float(f.pts * f.time_base))
            idx.append(read_code(f.to_ndarray(format="gray")))
    return times, idx


def write_chunked(src: VideoSource, out: Path, windows: list[tuple[float, float]], fps: float = 4.0,
                  overlap: float = 0.5, batch: int = 8) -> Path:  # fmt: skip
    """As a job does it: each window's part from its analysis decode (window +- overlap), then the join."""
    info = src.info
    spec = ReviewSpec(info.fps, info.width, info.height)
    parts = []
    for i, (a, b) in enumerate(windows):
        w = chunk_writer(out.with_name(f"part{i}.mp4"), spec, a, b, last=i == len(windows) - 1)
        for _ in src.batches(fps, batch, max(0.0, a - overlap), min(info.duration, b + overlap), tap=w):
            pass
        parts.append(w.close())
    return join_parts(parts, src.path, out)


def test_sizes_and_steps():
    assert frame_step(25, 12.5) == 2 and frame_step(30, 12.5) == 2 and frame_step(12.5, 12.5) == 1
    assert frame_step(10, 12.5) == 1  # never above the source's rate
    assert review_size(1920, 1080, 360) == (640, 360)
    assert review_size(480, 270, 360) == (480, 270)  # never enlarged
    assert review_size(1440, 1080, 360) == (480, 360)


@pytest.mark.parametrize("bursts", [False, True])
def test_chunked_copy_has_every_review_frame_once_at_source_times(tmp_path, monkeypatch, bursts):
    """Parts of 3 chunks joined: frames 0, 2, 4 ... 78 of the source, each once, at index / 25 s, in
    order; also with decode bursts of 2 samples (the decoder parks with a seek after each)."""
    src_path = make_video(tmp_path / "src.mp4")
    if bursts:
        monkeypatch.setattr(VideoSource, "BURST_BYTES", 320 * 240 * 3 * 2)
    src = VideoSource(src_path)
    assert src.backend == "decord"
    out = write_chunked(src, tmp_path / "review.mp4", [(0.0, 1.0), (1.0, 2.0), (2.0, src.info.duration)],
                        batch=2 if bursts else 8)  # fmt: skip
    times, idx = decoded(out)
    assert idx == list(range(0, 80, 2))
    assert times == pytest.approx([k / 25 for k in range(0, 80, 2)], abs=1e-6)
    with av.open(str(out)) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "h264" and (st.width, st.height) == (320, 240)
        assert not c.streams.audio


def test_faststart_and_audio_copied_from_an_aac_source(tmp_path):
    src = VideoSource(make_video(tmp_path / "src.mp4", audio="aac"))
    out = write_chunked(src, tmp_path / "review.mp4", [(0.0, 1.6), (1.6, src.info.duration)])
    head = out.read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")  # the index first: playable from the first range
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        samples = sum(f.samples for f in c.decode(a))
    assert abs(samples / 44100 - 80 / 25) < 0.1  # the whole 3.2 s of sound


def test_an_mjpeg_avi_with_pcm_sound_becomes_h264_and_aac(tmp_path):
    """A file the browser cannot play (MJPEG in AVI, PCM audio): the copy is H.264 + AAC in MP4."""
    src = VideoSource(make_video(tmp_path / "src.avi", vcodec="mjpeg", audio="pcm_s16le", fmt="avi"))
    out = write_chunked(src, tmp_path / "review.mp4", [(0.0, src.info.duration)])
    _, idx = decoded(out)
    assert idx == list(range(0, 80, 2))
    with av.open(str(out)) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264", "aac"]


def test_pyav_decoder_feeds_the_tap_too(tmp_path, monkeypatch):
    """Files decord cannot open are decoded by PyAV: the same frames reach the copy."""
    src = VideoSource(make_video(tmp_path / "src.mp4"))
    src.backend = "pyav"
    out = write_chunked(src, tmp_path / "review.mp4", [(0.0, 1.5), (1.5, src.info.duration)])
    assert decoded(out)[1] == list(range(0, 80, 2))


def test_a_failed_part_leaves_no_file(tmp_path):
    spec = ReviewSpec(25.0, 320, 240)
    w = chunk_writer(tmp_path / "part0.mp4", spec, 0.0, 1.0, last=False)
    w.abort()
    assert not list(tmp_path.iterdir())
    w = chunk_writer(tmp_path / "part1.mp4", spec, 0.0, 1.0, last=False)
    from tasks.review_copy import ReviewCopyError

    with pytest.raises(ReviewCopyError, match="no frames"):
        w.close()
    assert not list(tmp_path.iterdir())


def test_a_variable_rate_source_keeps_each_frame_at_its_own_time(tmp_path):
    """A phone-style file: 20 frames at 25 fps, a 1 s gap, 10 frames at 5 fps (each frame's pts set
    on a 1/1000 s clock). The copy's frames are at the source frames' own times, not index / rate."""
    from tests.synth import write_timed_video

    pts = [k * 40 for k in range(20)] + [1800 + k * 200 for k in range(10)]
    src_path = write_timed_video(tmp_path / "vfr.mp4", [(p, coded(k, (320, 240))) for k, p in enumerate(pts)])
    src = VideoSource(src_path)
    out = write_chunked(src, tmp_path / "review.mp4", [(0.0, src.info.duration)])
    times, idx = decoded(out)
    assert idx and idx == sorted(set(idx))  # each source frame once, in order
    step = round(src.info.fps / 12.5) or 1
    assert idx == [k for k in range(30) if k % step == 0]
    assert times == pytest.approx([pts[k] / 1000 for k in idx], abs=1e-4)
