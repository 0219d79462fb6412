"""Video decoding at the analysis rate, streamed in small batches (memory stays flat).

decord is the decoder; PyAV is the fallback when decord cannot open a file. Every
failure becomes a ``VideoError`` whose message names the file and the problem in
words a teacher can act on.

Times are each frame's own presentation timestamp (``frame_times``), not its index over
the average rate: phone recordings are often variable-rate (25 fps in one stretch, 5 in
the next, gaps where the camera paused), and index / average fps puts their faces in the
wrong seconds. Sampling at the analysis rate picks, for each instant ``j / fps``, the
frame whose time is nearest (``sample_times``; a frame is used once), so on a
constant-rate file it takes the same frames as it always did.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from affectline.types import VideoInfo

log = logging.getLogger(__name__)


class VideoError(ValueError):
    """The input cannot be analysed; the message is one line for the user."""


@dataclass(frozen=True)
class FrameBatch:
    indices: np.ndarray  # (b,) source frame indices
    times: np.ndarray  # (b,) seconds
    frames: np.ndarray  # (b, H, W, 3) uint8 RGB


MIN_SIDE = 24  # pixels: the smallest face searched for is 12 px, a frame needs room around it

# Still-image formats recognised by their first bytes (PyAV opens them as one-frame "videos").
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
                (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))  # fmt: skip


def _image_kind(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _IMAGE_MAGIC if head.startswith(magic)), None)


def sample_times(times: np.ndarray, duration: float, fps: float, rate: float | None = None) -> np.ndarray:
    """Indices of the frames to analyse at ``fps``: for each instant ``j / fps`` in [0, duration)
    the frame whose timestamp is nearest, each frame once (a stretch slower than ``fps``
    gives each of its frames; a gap gives none). ``times`` ascending, in seconds.

    Where the times are those of a constant ``rate`` (``k / rate`` to a microsecond), the frames
    are ``round(instant * rate)`` exactly as before timestamps were read: same frames, bit for bit,
    on a constant-rate file (the two roundings differ on floating-point ties)."""
    times = np.asarray(times, np.float64)
    n = len(times)
    if n == 0:
        return np.zeros(0, np.int64)
    if rate and np.abs(times - np.arange(n) / rate).max() < 1e-6:
        return sample_indices(n, rate, fps)
    if n == 1 or fps * float(np.min(np.diff(times))) >= 1.0 - 1e-9:
        return np.arange(n, dtype=np.int64)  # no two frames closer than a sampling step: all of them
    instants = np.arange(0.0, duration, 1.0 / fps)
    pos = np.interp(instants, times, np.arange(n, dtype=np.float64))  # fractional frame index of each instant
    idx = np.round(np.round(pos, 6)).astype(np.int64)  # round(., 6) first: 12.4999999 is the tie 12.5
    return np.unique(np.clip(idx, 0, n - 1))


def sample_window(times: np.ndarray, duration: float, fps: float, start: float = 0.0, end: float | None = None,
                  rate: float | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(indices, times) of ``sample_times`` whose time lies in [start, end): a chunk's frames. The
    sampling is of the whole video, so chunks cut from it take the frames one pass would."""
    idx = sample_times(times, duration, fps, rate)
    t = np.asarray(times, np.float64)[idx]
    keep = (t >= start) & (t < (end if end is not None else np.inf))
    return idx[keep], t[keep]


class FrameTap(Protocol):
    """Receives decoded frames beside the sampled batches (``VideoSource.batches(tap=...)``): the review copy."""

    until: int | None  # source frames past the last sample are still read up to this index (None: the video's end)

    def wants(self, index: int) -> bool: ...

    def put(self, index: int, time: float, frame: np.ndarray) -> None: ...


def sample_indices(n_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frame indices for sampling a constant-rate video at ``fps`` (all frames if fps >= src_fps)."""
    if n_frames <= 0:
        return np.zeros(0, np.int64)
    if fps >= src_fps:
        return np.arange(n_frames, dtype=np.int64)
    duration = n_frames / src_fps
    times = np.arange(0.0, duration, 1.0 / fps)
    return np.unique(np.minimum(np.round(times * src_fps).astype(np.int64), n_frames - 1))


def frame_times(path: str | Path) -> tuple[np.ndarray, float] | None:
    """Every frame's presentation time in seconds (presentation order, the first at 0) and the
    video's duration (the end of the last frame), from the packets' timestamps, without decoding.

    Exact: integer timestamps times the stream's time base, divided once in float64. None when
    a packet has no timestamp or two share one (a broken mux): the caller falls back."""
    import av

    try:
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            tb = st.time_base
            pts, dur = [], []
            for p in c.demux(st):
                if p.size == 0 or p.is_discard:  # the flush packet; frames an edit list cuts
                    continue
                if p.pts is None:
                    return None
                pts.append(p.pts)
                dur.append(p.duration or 0)
    except Exception as e:  # noqa: BLE001 - unreadable here: decord's own times, or the average rate
        log.debug("%s: no packet timestamps (%s)", path, e)
        return None
    if not pts or tb is None:
        return None
    order = np.argsort(np.asarray(pts, np.int64), kind="stable")
    p = np.asarray(pts, np.int64)[order]
    if len(p) > 1 and not (np.diff(p) > 0).all():
        return None
    last = int(np.asarray(dur, np.int64)[order][-1])
    if last <= 0:  # no duration in the container: the last frame lasts as long as the one before
        last = int(p[-1] - p[-2]) if len(p) > 1 else 0
    num, den = tb.numerator, tb.denominator
    times = ((p - p[0]) * num) / den
    return times, float((int(p[-1] - p[0]) + last) * num / den)


def _decord_times(vr, fps: float) -> tuple[np.ndarray, float] | None:
    """decord's own timestamps (float32 seconds: exact to ~0.1 ms over half an hour), for when the
    packets cannot be read apart; snapped to ``k / fps`` where they are that constant rate."""
    n = len(vr)
    if n < 2:
        return None
    ts = np.asarray(vr.get_frame_timestamp(range(n)), np.float64).reshape(n, 2)
    times = ts[:, 0] - ts[0, 0]
    if n > 1 and not (np.diff(times) > 0).all():
        return None
    grid = np.arange(n) / fps
    if np.abs(times - grid).max() < 1e-3:
        return grid, n / fps
    # decord ends the last frame one declared-rate frame later: as long as the one before is truer.
    return times, float(2 * times[-1] - times[-2])


# libav's and decord's own lines on stderr (the one-line VideoError says it for the user).
_NOISE = re.compile(r"^\s*(\[[\w ,:./-]+ @ 0x[0-9a-f]+\]|\[\d\d:\d\d:\d\d\] \S+\.(cc|h):\d+:)")


@contextlib.contextmanager
def _quiet_stderr():
    """Hold what is written to file descriptor 2 while a file is probed: libav and decord print
    their own lines there ("moov atom not found", "ERROR opening ...") beside our one-line error.
    Their lines go to the debug log; anything else written meanwhile (another thread's message)
    is put back on stderr afterwards, in its order."""
    try:
        os.fstat(2)
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing reaches a terminal anyway
        saved = None
    if saved is None:
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = []
            for line in held.read().splitlines(keepends=True):
                text = line.decode(errors="replace")
                if _NOISE.match(text):
                    log.debug("decoder: %s", text.rstrip())
                else:
                    kept.append(line)
            if kept:
                os.write(2, b"".join(kept))


_quiet_libav_done = False


def _quiet_libav() -> None:
    """decord's libav logging off (it repeats, on stderr, what a VideoError says), unless debugging."""
    global _quiet_libav_done
    if _quiet_libav_done:
        return
    _quiet_libav_done = True
    verbose = log.isEnabledFor(logging.DEBUG)
    try:
        import decord

        decord.logging.set_level(decord.logging.ERROR if verbose else decord.logging.QUIET)
    except Exception:  # noqa: BLE001 - an older decord without it: the fd-2 guard still holds
        pass
    # PyAV ignores libav's log unless av.logging.set_level is called: nothing to do there.


class VideoSource:
    """A decodable video. ``probe`` validates it; ``batches`` yields sampled frames."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video file")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: file is empty")
        image = _image_kind(self.path)
        if image:
            raise VideoError(f"{self.path}: is a {image} image, not a video")
        self._reader = None
        self.times = np.zeros(0)  # each frame's presentation time, seconds (set by _open)
        self._keys: np.ndarray | None = None  # decord's keyframe indices, read on first seek
        self.backend = ""
        self.info = self._open()

    def _open(self) -> VideoInfo:
        _quiet_libav()
        import decord

        try:
            with _quiet_stderr():
                vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=0)
            n, fps = len(vr), float(vr.get_avg_fps())
            h, w = vr[0].shape[:2] if n else (0, 0)
            vr.seek(0)
            self._reader, self.backend = vr, "decord"
            timed = self._packet_times(n) or (_decord_times(vr, fps) if n and fps > 0 else None)
        except Exception as e:  # decord raises a bare RuntimeError/DECORDError for every failure
            log.debug("decord could not open %s: %s", self.path, e)
            n, fps, w, h = self._open_pyav()
            timed = self._packet_times(n)
        if n <= 0 or fps <= 0 or w <= 0:
            raise VideoError(f"{self.path}: no video frames could be read")
        if not np.isfinite(fps):
            raise VideoError(f"{self.path}: the video declares no usable frame rate ({fps})")
        if w < MIN_SIDE or h < MIN_SIDE:
            # decord hands back garbage shapes for tiny frames, and no face fits anyway.
            raise VideoError(f"{self.path}: frames are {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} are needed to find faces")
        if n < 2:
            raise VideoError(f"{self.path}: has a single frame (a still image?), not a video")
        if timed is None:  # no usable timestamps: the average rate, as a constant-rate file has it
            log.debug("%s: no frame timestamps; timed at the average rate", self.path)
            self.times, duration = np.arange(n) / fps, 0.0
        else:
            self.times, duration = timed
        return VideoInfo(str(self.path), fps, n, w, h, duration)

    def _packet_times(self, n: int) -> tuple[np.ndarray, float] | None:
        """``frame_times`` when it counts the frames the decoder counts (else the two disagree on
        which frame is which, and the decoder's own account is used)."""
        timed = frame_times(self.path)
        if timed is not None and len(timed[0]) != n:
            log.debug("%s: %d packet timestamps for %d frames", self.path, len(timed[0]), n)
            return None
        return timed

    def _open_pyav(self) -> tuple[int, float, int, int]:
        import av

        try:
            with av.open(str(self.path)) as c:
                if not c.streams.video:
                    raise VideoError(f"{self.path}: contains no video stream")
                st = c.streams.video[0]
                fps = float(st.average_rate or st.guessed_rate or 0)
                n = st.frames or int(round(float(c.duration or 0) / 1e6 * fps))
                w, h = st.codec_context.width, st.codec_context.height
        except VideoError:
            raise
        except Exception as e:
            kind = "is not a video file or is damaged" if self.path.stat().st_size > 0 else "is empty"
            raise VideoError(f"{self.path}: {kind} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        self.backend = "pyav"
        if not st.frames:  # no frame count in the container (MKV, WebM): the packets count them
            timed = frame_times(self.path)
            if timed is not None:
                n = len(timed[0])
        return n, fps, w, h

    def sample(self, fps: float, start: float = 0.0, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(frame indices, their times) sampled at ``fps`` within [start, end) seconds."""
        return sample_window(self.times, self.info.duration, fps, start, end, rate=self.info.fps)

    def batches(self, fps: float, batch_size: int = 8, start: float = 0.0, end: float | None = None,
                tap: FrameTap | None = None) -> Iterator[FrameBatch]:  # fmt: skip
        """Frames sampled at ``fps`` within [start, end) seconds, ``batch_size`` at a time.

        ``tap`` (optional) is handed every decoded frame it ``wants``, sampled or not, in order: the
        frames between samples are decoded anyway, so a review copy costs their colour conversion only."""
        idx, times = self.sample(fps, start, end)
        if self.backend == "decord":
            yield from self._decord_batches(idx, times, batch_size, tap)
        else:
            yield from self._pyav_batches(idx, times, batch_size, tap)

    # Frames read from decord per burst, in bytes. decord's decoder thread keeps decoding
    # ahead into an unbounded queue while the caller is busy (dmlc/decord#157, #208: a
    # slow consumer ends up holding the whole video in memory, measured 7.2 GB for a
    # 10-minute 360p file). So each burst is read at full speed, then the reader is
    # parked with a seek, which empties that queue; only then are the frames handed out.
    BURST_BYTES = 256 * 2**20

    def _keyframes(self) -> np.ndarray:
        if self._keys is None:
            keys = np.asarray(self._reader.get_key_indices(), np.int64)
            self._keys = np.unique(np.concatenate([[0], keys]))
        return self._keys

    def _keyframe_before(self, k: int) -> int:
        keys = self._keyframes()
        return int(keys[np.searchsorted(keys, k, side="right") - 1])

    def _time_of(self, k: int) -> float:
        """Frame ``k``'s timestamp (past the timed frames, as if the last rate went on)."""
        return float(self.times[k]) if k < len(self.times) else k / self.info.fps

    def _advance(self, pos: int, k: int, tap: FrameTap | None) -> None:
        """Move decord's reader from frame ``pos`` to ``k`` (not read), handing the frames the tap wants to it."""
        vr = self._reader
        while pos < k:
            if tap is None:
                vr.skip_frames(k - pos)
                return
            j = next((i for i in range(pos, k) if tap.wants(i)), k)
            if j > pos:
                vr.skip_frames(j - pos)  # decoded without colour conversion
            if j < k:
                tap.put(j, self._time_of(j), vr.next().asnumpy())
                j += 1
            pos = j

    def _decord_batches(self, idx: np.ndarray, times: np.ndarray, batch_size: int,
                        tap: FrameTap | None = None) -> Iterator[FrameBatch]:  # fmt: skip
        # Sequential skip+next: skip_frames decodes without colour conversion, and unlike
        # get_batch it seeks back to a keyframe at most once a burst (measured ~2x faster at
        # 4 of 25 fps). decord's seek() is exact only onto a keyframe, so every seek goes to
        # the keyframe at or before the wanted frame and skips forward from there.
        vr = self._reader
        frame_bytes = max(1, self.info.width * self.info.height * 3)
        burst = max(batch_size, self.BURST_BYTES // frame_bytes // batch_size * batch_size)
        pos = -1  # the frame next() returns; -1: unknown, seek first
        for b0 in range(0, len(idx), burst):
            b_idx = idx[b0 : b0 + burst]
            first = int(b_idx[0])
            kf = self._keyframe_before(first)
            if pos < 0 or pos > first or kf > pos:  # unknown, behind us, or a keyframe saves decoding
                vr.seek(kf)
                pos = kf
            frames: list[np.ndarray] = []
            last_burst = b0 + burst >= len(idx)
            for j, k in enumerate(b_idx.tolist()):
                try:
                    if k > pos:
                        self._advance(pos, k, tap)
                    frames.append(vr.next().asnumpy())
                    if tap is not None and tap.wants(k):
                        tap.put(k, self._time_of(k), frames[-1])
                    pos = k + 1
                    if last_burst and j == len(b_idx) - 1 and tap is not None:
                        # After the last sample: the frames up to the tap's end (or the video's) it still wants.
                        stop = min(self.info.n_frames, tap.until if tap.until is not None else self.info.n_frames)
                        self._advance(pos, stop, tap)
                        pos = stop
                except VideoError:
                    raise
                except Exception as e:
                    raise VideoError(
                        f"{self.path}: video is damaged or truncated; decoding stopped near {times[b0 + j]:.1f} s "
                        f"({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})"
                    ) from None
            if tap is not None and b0 + burst < len(idx):
                # The frames up to the next burst's first sample go to the tap now: parking seeks past them.
                nxt = int(idx[b0 + burst])
                try:
                    self._advance(pos, nxt, tap)
                except Exception as e:
                    raise VideoError(f"{self.path}: video is damaged or truncated; decoding stopped near "
                                     f"{pos / self.info.fps:.1f} s ({type(e).__name__})") from None  # fmt: skip
                pos = nxt
            # Park the reader at the keyframe the next burst starts from.
            target = self._keyframe_before(int(idx[b0 + burst])) if b0 + burst < len(idx) else 0
            if target == pos:  # decord treats a seek onto its own position as a no-op: no flush
                vr.seek(0)
            vr.seek(target)
            pos = target
            # Hand the burst out a batch at a time, dropping each batch's frames once made.
            for s in range(0, len(frames), batch_size):
                sl = slice(b0 + s, b0 + s + batch_size)
                batch = np.stack(frames[s : s + batch_size])
                frames[s : s + batch_size] = [None] * len(batch)  # type: ignore[list-item]
                yield FrameBatch(idx[sl], times[sl], batch)

    def _pyav_batches(self, idx: np.ndarray, times: np.ndarray, batch_size: int,
                      tap: FrameTap | None = None) -> Iterator[FrameBatch]:  # fmt: skip
        import av

        wanted = set(int(x) for x in idx)
        buf_i, buf_f = [], []
        last = -1
        stop = idx[-1] if len(idx) else -1
        if tap is not None and len(idx):
            stop = max(stop, (tap.until if tap.until is not None else self.info.n_frames) - 1)
        try:
            with av.open(str(self.path)) as c:
                st = c.streams.video[0]
                st.thread_type = "AUTO"
                for k, frame in enumerate(c.decode(st)):
                    last = k
                    rgb = None
                    if k in wanted:
                        rgb = frame.to_ndarray(format="rgb24")
                        buf_i.append(k)
                        buf_f.append(rgb)
                    if tap is not None and len(idx) and tap.wants(k):
                        tap.put(k, self._time_of(k), rgb if rgb is not None else frame.to_ndarray(format="rgb24"))
                    if len(buf_i) == batch_size:
                        ii = np.array(buf_i)
                        yield FrameBatch(ii, self.times[ii], np.stack(buf_f))
                        buf_i, buf_f = [], []
                    if k >= stop:
                        break
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: video is damaged or truncated; decoding stopped near frame {last + 1} ({e})") from None
        if buf_i:
            ii = np.array(buf_i)
            yield FrameBatch(ii, self.times[ii], np.stack(buf_f))
        if len(idx) and last < idx[-1]:
            # The container promised more frames than the data holds: a cut-off upload.
            raise VideoError(
                f"{self.path}: video is truncated; it stops at {self.times[last + 1]:.1f} s of "
                f"{self.info.duration:.1f} s"
            )

    def decode_all(self, fps: float | None = None) -> int:
        """Decode every sampled frame and discard it (the decode-only baseline). Returns the count."""
        n = 0
        for b in self.batches(fps or self.info.fps, batch_size=16):
            n += len(b.indices)
        return n


def probe(path: str | Path) -> VideoInfo:
    return VideoSource(path).info
