"""Synthetic videos for exact assertions, written with PyAV (H.264 in MP4)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import av
import numpy as np


def write_video(path: Path, frames: int, fps: float, size: tuple[int, int], draw: Callable[[int], np.ndarray],
                faststart: bool = False) -> Path:  # fmt: skip
    """Write ``frames`` RGB frames from ``draw(i)`` (HxWx3 uint8) to an MP4 at ``fps``."""
    w, h = size
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        st = c.add_stream("libx264", rate=int(fps) if float(fps).is_integer() else fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"g": "12"}
        for i in range(frames):
            for pkt in st.encode(av.VideoFrame.from_ndarray(draw(i), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return path


def counter_video(path: Path, frames: int = 50, fps: float = 25, size=(160, 96)) -> Path:
    """Frame i is a flat grey of level 4*i (so a frame's index can be read back from its pixels)."""
    return write_video(path, frames, fps, size, lambda i: np.full((size[1], size[0], 3), (4 * i) % 256, np.uint8))


def paste_video(path: Path, faces: list[np.ndarray], tracks: list[Callable[[int], tuple[int, int] | None]],
                frames: int, fps: float, size=(640, 360), background: int = 90) -> Path:  # fmt: skip
    """Real face crops moved over a plain background; tracks[k](i) gives face k's top-left or None (absent)."""
    w, h = size

    def draw(i: int) -> np.ndarray:
        img = np.full((h, w, 3), background, np.uint8)
        for face, pos in zip(faces, tracks):
            p = pos(i)
            if p is None:
                continue
            x, y = p
            fh, fw = face.shape[:2]
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + fw, w), min(y + fh, h)
            if x1 > x0 and y1 > y0:
                img[y0:y1, x0:x1] = face[y0 - y : y1 - y, x0 - x : x1 - x]
        return img

    return write_video(path, frames, fps, size, draw)


def write_timed_video(path: Path, frames: list[tuple[int, np.ndarray]], time_base: int = 1000) -> Path:
    """A variable-rate video: each (pts, RGB frame) pair is encoded with that presentation timestamp,
    in units of 1/``time_base`` s (the way a phone writes them), H.264 in MP4 or MKV by the suffix."""
    from fractions import Fraction

    h, w = frames[0][1].shape[:2]
    pts = [int(p) for p, _ in frames]
    # Each frame lasts until the next (the last as long as the one before): the container's sample
    # durations, which the encoder alone would set from its declared rate.
    lasts = dict(zip(pts, np.diff(pts + [2 * pts[-1] - pts[-2]]).tolist()))
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)  # the declared rate: what the timestamps contradict
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.time_base = st.codec_context.time_base = Fraction(1, time_base)
        st.options = {"g": "12"}
        for pts, img in frames:
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = int(pts), Fraction(1, time_base)
            for pkt in st.encode(f):
                pkt.duration = lasts[pkt.pts]
                c.mux(pkt)
        for pkt in st.encode():
            pkt.duration = lasts[pkt.pts]
            c.mux(pkt)
    return path
