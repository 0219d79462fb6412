"""Decoding: the frames to analyse, sampled at the analysis rate, a small batch at a time.

``open_video`` gives ``pipeline.video.VideoSource`` (decord, PyAV fallback) where decord
is installed, and otherwise ``Cv2Source``, which reads with OpenCV alone: a GPU box
with only torch, numpy and OpenCV can still decode. Both time each frame by its own
presentation timestamp and sample the same frames (``pipeline.video.sample_window``), so
results do not depend on the decoder that read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from affectline.types import VideoInfo
from pipeline.video import FrameBatch, VideoError, VideoSource, frame_times, sample_window


def open_video(path: str | Path):
    """A decodable video (``VideoSource`` or ``Cv2Source``); ``VideoError`` for bad input."""
    try:
        return VideoSource(path)
    except ModuleNotFoundError:  # no decord here (e.g. a bare GPU box): OpenCV decodes
        return Cv2Source(path)


class Cv2Source:
    """``VideoSource``'s interface (``info``, ``batches``, ``decode_all``) on ``cv2.VideoCapture``."""

    backend = "cv2"

    def __init__(self, path: str | Path):
        import cv2

        self.path = Path(path)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: file not found or empty")
        cap = cv2.VideoCapture(str(self.path))
        try:
            n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            cap.release()
        if n <= 0 or fps <= 0 or w <= 0:
            raise VideoError(f"{self.path}: no video frames could be read")
        timed = self._times(n)
        if timed is None:
            self.times, duration = np.arange(n) / fps, 0.0
        else:
            self.times, duration = timed
            n = len(self.times)
        self.info = VideoInfo(str(self.path), fps, n, w, h, duration)

    def _times(self, n: int) -> tuple[np.ndarray, float] | None:
        """Each frame's timestamp: from the packets where PyAV is installed, else OpenCV's own
        (a pass that grabs every frame, without converting colours)."""
        try:
            timed = frame_times(self.path)
        except ModuleNotFoundError:
            timed = None
        if timed is not None and len(timed[0]) == n:
            return timed
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        ms: list[float] = []
        try:
            while cap.grab():
                ms.append(cap.get(cv2.CAP_PROP_POS_MSEC))
        finally:
            cap.release()
        t = np.asarray(ms, np.float64) / 1000.0
        if len(t) < 2 or not (np.diff(t) > 0).all():
            return None
        t -= t[0]
        return t, float(2 * t[-1] - t[-2])  # the last frame lasts as long as the one before it

    def sample(self, fps: float, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return sample_window(self.times, self.info.duration, fps, start, end, rate=self.info.fps)

    def batches(self, fps: float, batch_size: int = 8, start: float = 0.0, end: float | None = None,
                tap=None) -> Iterator[FrameBatch]:  # fmt: skip
        """As ``VideoSource.batches``; ``tap`` (``pipeline.video.FrameTap``) gets the frames it wants, sampled or not."""
        import cv2

        idx, _ = self.sample(fps, start, end)
        if not len(idx):
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            # OpenCV seeks to frame k at time k / fps: right on a constant-rate file only.
            regular = np.abs(self.times - np.arange(len(self.times)) / self.info.fps).max() < 0.5 / self.info.fps
            pos = int(idx[0]) if regular else 0
            if pos:
                cap.set(cv2.CAP_PROP_POS_FRAMES, pos)
            buf_i, buf_f = [], []
            def advance(pos: int, k: int) -> int:
                while pos < k:  # grab() skips without converting colours
                    if not cap.grab():
                        raise VideoError(f"{self.path}: video is truncated near {self.times[min(pos, len(self.times) - 1)]:.1f} s")
                    if tap is not None and tap.wants(pos):
                        ok, f = cap.retrieve()
                        if ok:
                            tap.put(pos, float(self.times[pos]), cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
                    pos += 1
                return pos

            for k in idx.tolist():
                pos = advance(pos, k)
                ok, frame = cap.read()
                pos += 1
                if not ok:
                    raise VideoError(f"{self.path}: video is truncated near {self.times[k]:.1f} s")
                buf_i.append(k)
                buf_f.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                if tap is not None and tap.wants(k):
                    tap.put(k, float(self.times[k]), buf_f[-1])
                if len(buf_i) == batch_size:
                    ii = np.array(buf_i)
                    yield FrameBatch(ii, self.times[ii], np.stack(buf_f))
                    buf_i, buf_f = [], []
            if tap is not None:  # after the last sample, the frames the tap still wants
                try:
                    advance(pos, min(self.info.n_frames, tap.until if tap.until is not None else self.info.n_frames))
                except VideoError:
                    pass  # OpenCV's frame count is an estimate: the video may end a little earlier
            if buf_i:
                ii = np.array(buf_i)
                yield FrameBatch(ii, self.times[ii], np.stack(buf_f))
        finally:
            cap.release()

    def decode_all(self, fps: float | None = None) -> int:
        return sum(len(b.indices) for b in self.batches(fps or self.info.fps, batch_size=16))


class Prefetch:
    """Iterates ``batches`` one batch ahead on a background thread: the next batch decodes while
    the models run on this one (decord and OpenCV decode with the GIL released).

    ``depth`` batches at most wait decoded (memory: depth + 1 batches, ~50 MB each at 1080p and
    8 frames). An exception from the decoder is raised here, where the batch would have come.
    ``close()`` (or the end of the ``with`` block) stops the thread; frames not taken are dropped.
    """

    _END = object()

    def __init__(self, batches, depth: int = 1) -> None:
        import queue
        import threading

        self._src = iter(batches)
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="affectline-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for b in self._src:
                if not self._put(b):
                    return
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch:
        return self

    def __next__(self) -> FrameBatch:
        item = self._q.get()
        if item is self._END:
            self._q.put(self._END)  # later calls end too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
