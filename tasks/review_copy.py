"""The review copy: a small browser-playable MP4 written from the frames the analysis decodes anyway.

Decoding 1080p is the expensive part of reading a video (~6x real time on 2 cores), so the copy
is not a second decode: the decoder hands every k-th source frame (``frame_step``: 12.5 fps from
a 25 fps source by default, ``Settings.review_fps``) to a ``ReviewWriter`` through its tap
(``pipeline.video.FrameTap``), which shrinks it to ``Settings.review_height`` (360 px) on the
decoder's thread and encodes it with libx264 on a thread of its own. The frames the 4 fps analysis
samples are already converted to RGB; the others cost one colour conversion each instead of a skip.

Timestamps are the source's: a frame's pts is its source frame index (time base 1/source fps),
so ``video.currentTime`` in the browser is the time on the charts. No B-frames (parts join end to
end with monotonic timestamps, and each frame is decodable in display order), a keyframe every
2 s (a seek decodes at most 2 s), ``+faststart`` (the index first: playback starts on the first
range request).

Chunked jobs: each chunk writes the frames of its own window (not its overlap) to a part file
(``write`` ... ``close`` renames it into place, so a retried chunk replaces its part and a lost
one leaves nothing); the link step joins the parts without re-encoding and adds the source's
audio (``join_parts``): copied when it is AAC, else encoded to AAC once.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

CLOCK = Fraction(1, 90000)  # the copy's time base: 90 kHz, exact for 25, 30000/1001 and phone timestamps in ms
GOP_SECONDS = 2.0
CRF = 28  # x264's quality scale: 28 is soft but clear at 360p; ~65 MB an hour of a still class (README)
PRESET = "veryfast"
AUDIO_BITRATE = 96_000


class ReviewCopyError(RuntimeError):
    """The review copy could not be written or joined; the analysis itself is unaffected."""


def source_rate(fps: float) -> Fraction:
    """The source frame rate as a fraction (29.97 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


def frame_step(src_fps: float, review_fps: float) -> int:
    """Keep every k-th source frame: the review rate never above the source's."""
    return max(1, int(round(src_fps / review_fps)))


def review_size(width: int, height: int, max_height: int) -> tuple[int, int]:
    """Width and height of the copy: the source's aspect, at most ``max_height`` rows, both even (yuv420p)."""
    h = min(max_height, height)
    w = width * h / height
    return max(2, int(round(w / 2)) * 2), max(2, h // 2 * 2)


@dataclass(frozen=True)
class ReviewSpec:
    src_fps: float
    src_width: int
    src_height: int
    review_fps: float = 12.5
    max_height: int = 360

    @property
    def step(self) -> int:
        return frame_step(self.src_fps, self.review_fps)

    @property
    def size(self) -> tuple[int, int]:
        return review_size(self.src_width, self.src_height, self.max_height)

    @property
    def fps(self) -> float:
        return self.src_fps / self.step


class ReviewWriter:
    """Writes the frames of source indices [first, end) that fall on the review grid into ``path``.

    ``wants``/``put`` are called by the decoder (``pipeline.video.FrameTap``), in index order;
    ``close()`` finishes the file and renames it into place, ``abort()`` removes what was written.
    The encoder runs on its own thread behind a small queue (the decoder waits when it is full).
    """

    def __init__(self, path: str | Path, spec: ReviewSpec, first: int = 0, end: int | None = None, depth: int = 32):
        import av  # noqa: F401 - fail here, before any frame is decoded, when PyAV is missing

        self.path, self.spec = Path(path), spec
        self.first, self.end = int(first), end
        self.tmp = self.path.with_name(self.path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
        self.frames = 0
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._last = -1
        self._thread = threading.Thread(target=self._run, name="affectline-review", daemon=True)
        self._thread.start()

    # --- the decoder's side (pipeline.video.FrameTap) ------------------------------------------

    @property
    def until(self) -> int | None:
        """Source frames past the last sampled one that are still wanted (the decoder reads on to here)."""
        return self.end

    def wants(self, index: int) -> bool:
        # Frames already written are not wanted again (the decoder re-reads a few after each seek).
        return index > self._last and index >= self.first and (self.end is None or index < self.end) and index % self.spec.step == 0

    def put(self, index: int, time: float, frame: np.ndarray) -> None:
        import cv2

        if self._error is not None:
            raise ReviewCopyError(f"{self.path.name}: {self._error}")
        if index <= self._last:
            return  # the decoder went back (a seek): frames are written once, in order
        self._last = index
        w, h = self.spec.size
        small = frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        self._put(("frame", index, time, small))

    def _put(self, item) -> None:
        while True:
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise ReviewCopyError(f"{self.path.name}: the encoder stopped ({self._error})") from None

    # --- the encoder thread ----------------------------------------------------------------------

    def _run(self) -> None:
        import av

        container = None
        try:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            container = av.open(str(self.tmp), "w", format="mp4")
            rate = source_rate(self.spec.src_fps)
            st = container.add_stream("libx264", rate=rate / self.spec.step)
            st.width, st.height = self.spec.size
            st.pix_fmt = "yuv420p"
            st.codec_context.time_base = CLOCK  # fine enough for any frame's own timestamp (variable-rate sources)
            gop = max(1, int(round(GOP_SECONDS * self.spec.fps)))
            st.options = {"preset": PRESET, "crf": str(CRF), "bf": "0", "g": str(gop), "keyint_min": str(gop),
                          "sc_threshold": "0", "threads": "1"}  # fmt: skip
            last_pts = -1
            while True:
                item = self._q.get()
                if item is None:
                    break
                _, index, t, img = item
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                # The frame's own timestamp on the copy's clock (variable-rate sources too), never repeated.
                pts = max(int(round(t / CLOCK)), last_pts + 1)
                vf.pts, vf.time_base, last_pts = pts, CLOCK, pts
                for pkt in st.encode(vf):
                    container.mux(pkt)
                self.frames += 1
            for pkt in st.encode(None):
                container.mux(pkt)
        except BaseException as e:  # noqa: BLE001 - reported to the decoder's side at its next put / close
            self._error = e
            while True:  # unblock a waiting put
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception as e:  # noqa: BLE001
                    self._error = self._error or e

    def close(self) -> Path:
        """Finish the file and move it into place; ``ReviewCopyError`` when encoding failed."""
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()
        if self._error is not None or self.frames == 0:
            why = self._error or "no frames were written"
            self.tmp.unlink(missing_ok=True)
            raise ReviewCopyError(f"{self.path.name}: {why}")
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._thread.is_alive():
            try:
                self._q.put(None, timeout=5)
            except queue.Full:
                pass
            self._thread.join(timeout=30)
        self.tmp.unlink(missing_ok=True)


def chunk_writer(path: Path, spec: ReviewSpec, start: float, end: float, last: bool) -> ReviewWriter:
    """The writer of one chunk's part: the frames whose time lies in [start, end) (to the video's end for the last)."""
    rate = float(source_rate(spec.src_fps))
    first = int(np.ceil(start * rate - 1e-6))
    stop = None if last else int(np.ceil(end * rate - 1e-6))
    return ReviewWriter(path, spec, first, stop)


# --- joining parts and adding the sound ---------------------------------------------------------


def _video_packets(parts: list[Path]) -> Iterator[tuple[float, object]]:
    """Every part's packets in order, at their own timestamps (the muxer rescales them)."""
    import av

    last = None
    for p in parts:
        with av.open(str(p)) as c:
            st = c.streams.video[0]
            for pkt in c.demux(st):
                if pkt.dts is None or pkt.size == 0:
                    continue
                t = float(pkt.pts * st.time_base)
                if last is not None and t <= last:
                    continue  # never two frames at one time (a part that overlaps its neighbour)
                last = t
                yield t, pkt


def _copied_audio(src: Path) -> Iterator[tuple[float, object]]:
    import av

    with av.open(str(src)) as c:
        st = c.streams.audio[0]
        for pkt in c.demux(st):
            if pkt.dts is None or pkt.size == 0:
                continue
            yield float(pkt.dts * st.time_base), pkt


def _encoded_audio(src: Path, out_stream) -> Iterator[tuple[float, object]]:
    import av

    rate = out_stream.codec_context.sample_rate
    tb = Fraction(1, rate)
    resampler = av.AudioResampler(format="fltp", layout=out_stream.codec_context.layout.name, rate=rate)
    n = 0  # samples so far: timestamps counted here, so sources with gaps or odd pts still play

    def packets(frames):
        nonlocal n
        for f in frames:
            f.pts, f.time_base = n, tb
            n += f.samples
            for pkt in out_stream.encode(f):
                yield float(pkt.pts * pkt.time_base), pkt

    with av.open(str(src)) as c:
        for frame in c.decode(c.streams.audio[0]):
            yield from packets(resampler.resample(frame))
    yield from packets(resampler.resample(None))
    for pkt in out_stream.encode(None):
        yield float(pkt.pts * pkt.time_base), pkt


def join_parts(parts: list[Path], source: str | Path | None, out: Path) -> Path:
    """Join the parts (in order, no re-encoding) and the source's first audio track into ``out`` (MP4, faststart).

    Audio is copied when it is AAC, encoded to AAC otherwise; a source without audio (or one PyAV
    cannot read the audio of) gives a silent copy. Written to a temporary file, then renamed."""
    import av

    if not parts:
        raise ReviewCopyError(f"{out.name}: no parts to join")
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        extradata = set()
        for p in parts:
            with av.open(str(p)) as c:
                extradata.add(bytes(c.streams.video[0].codec_context.extradata or b""))
        if len(extradata) != 1:  # same encoder settings give the same headers; anything else would not play
            raise ReviewCopyError(f"{out.name}: parts were encoded differently (headers differ)")
        audio_src = None
        if source is not None:
            try:
                with av.open(str(source)) as c:
                    if c.streams.audio:
                        a = c.streams.audio[0]
                        audio_src = ("copy" if a.codec_context.name == "aac" else "encode", a.codec_context.sample_rate,
                                     min(a.codec_context.channels or 1, 2))  # fmt: skip
            except av.error.FFmpegError as e:
                log.warning("review copy: no audio from %s (%s)", source, e)
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as o:
            with av.open(str(parts[0])) as first:
                vst = o.add_stream_from_template(first.streams.video[0])
            streams: list[Iterator[tuple[float, object]]] = [_video_packets(parts)]
            if audio_src is not None:
                mode, rate, channels = audio_src
                if mode == "copy":
                    with av.open(str(source)) as c:
                        ast = o.add_stream_from_template(c.streams.audio[0])
                    streams.append(_copied_audio(Path(source)))
                else:
                    ast = o.add_stream("aac", rate=rate if rate in (44100, 48000) else 48000)
                    ast.layout = "stereo" if channels == 2 else "mono"
                    ast.bit_rate = AUDIO_BITRATE
                    streams.append(_encoded_audio(Path(source), ast))
            # Interleaved by time: the muxer would otherwise buffer a whole stream waiting for the other.
            for _, pkt in heapq.merge(*streams, key=lambda x: x[0]):
                pkt.stream = vst if pkt.stream.type == "video" or not audio_src else ast
                o.mux(pkt)
        os.replace(tmp, out)
        return out
    except ReviewCopyError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ReviewCopyError(f"{out.name}: joining {len(parts)} parts failed ({type(e).__name__}: {e})") from None


# --- in a job: chunks write parts, the link joins them -------------------------------------------


def part_path(data_dir: Path, session_id: int, job_id: int, version: str, idx: int) -> Path:
    from storage.review import parts_dir

    return parts_dir(data_dir, session_id) / f"job{int(job_id)}-{version}" / f"{int(idx):05d}.mp4"


def finish_for_job(url: str, data_dir: Path, job_id: int, session_id: int, version: str, video: str) -> str:
    """At the link: join the job's parts into the session's review copy and record it on the session.

    Returns a few words for the job's message ("" when the group does not keep copies). The parts
    go either way. A missing part (a chunk finished before video review was turned on) or a
    failed join leaves the session without a new copy; the analysis is stored regardless."""
    import shutil

    from storage import jobs
    from storage import review as rv
    from storage.db import session_scope
    from storage.models import Recording

    folder = part_path(data_dir, session_id, job_id, version, 0).parent
    try:
        with session_scope(url) as s:
            allowed = rv.session_allows(s, session_id)
            idxs = sorted({c.idx for c in jobs.job_chunks(s, job_id, version)})
        if not allowed:
            return ""
        parts = [part_path(data_dir, session_id, job_id, version, i) for i in idxs]
        missing = [p.name for p in parts if not p.is_file()]
        if missing or not parts:
            log.warning("job %s: review copy not made, parts missing: %s", job_id, ", ".join(missing) or "all")
            return "no review copy (parts missing: re-analyse to make one)"
        out = join_parts(parts, video, rv.copy_path(data_dir, session_id))
        with session_scope(url) as s:
            rec = s.get(Recording, session_id)
            if rec is None:  # deleted meanwhile: its folder goes with it
                rv.remove_session_files(data_dir, session_id)
                return ""
            rec.review_path = rv.relative(data_dir, out)
        return "review copy ready"
    except ReviewCopyError as e:
        log.warning("job %s: %s", job_id, e)
        return "no review copy (it could not be written)"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            folder.parent.rmdir()  # the parts folder, once no other job's parts are in it
        except OSError:
            pass
