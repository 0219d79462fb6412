"""Pipeline throughput and memory, as ratios against decoding measured in the same run.

    .venv/bin/python bench/pipeline.py [--video PATH] [--fps 4] [--long-minutes 10]

1. On the crowd video: decode-only time (the same sampled frames, same decoder path)
   and end-to-end time (decode + detect + track + re-id + landmarks + FER + cues +
   binning), their ratio, and face-frames per second.
   Then the landmarks of a 30-face 1080p frame with the default landmarker (LiteRT on the
   CPU, as the pipeline loads it), one network set against one per core side by side.
2. Memory flat in video length: peak RSS of a 1-minute and an N-minute file (the crowd
   footage looped at 640x360, analysed at 1 fps), each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CROWD = ROOT / "data" / "media" / "crowd_walk_1080p.mp4"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(video: str, fps: float, warmup: bool) -> dict:
    """Child process: decode-only, then end-to-end, on the same video."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline
    from pipeline.video import VideoSource

    s = Settings(analysis_fps=fps, academic_model="cues")
    src = VideoSource(video)
    t0 = time.perf_counter()
    n = src.decode_all(fps)
    decode = time.perf_counter() - t0
    import psutil

    chunk_rss: dict[str, float] = {}  # RSS after each chunk's first batch: flat if nothing accumulates

    def hook(_f: float, msg: str) -> None:
        chunk_rss.setdefault(msg.split(":")[0], psutil.Process().memory_info().rss / 2**20)

    with Pipeline(s, device="cpu") as p:
        if warmup:  # first-call allocations and lazy inits are not throughput
            p.apply(VideoSource(video))
        t0 = time.perf_counter()
        out = p.apply(VideoSource(video), hook=hook)
        e2e = time.perf_counter() - t0
    rss = [v for k, v in chunk_rss.items() if k.startswith("chunk")]
    return {"frames": n, "decode_s": decode, "e2e_s": e2e, "face_samples": out.n_face_samples,
            "persons": len(out.tracks), "peak_rss_mb": peak_rss_mb(), "duration_s": src.info.duration,
            "chunk_rss_mb": rss, "full_searches": out.n_full_searches}  # fmt: skip


def make_long(path: Path, minutes: float) -> Path:
    """Loop the crowd footage (forward, then backward) at 640x360 to ``minutes``."""
    import av
    import cv2

    from pipeline.video import VideoSource

    src = VideoSource(CROWD)
    frames = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for b in src.batches(25.0) for f in b.frames]
    cycle = frames + frames[::-1]
    n = int(minutes * 60 * 25)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 640, 360, "yuv420p"
        st.options = {"preset": "ultrafast"}
        for i in range(n):
            for pkt in st.encode(av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    return path


def child(video: str, fps: float, warmup: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--child", video, "--fps", str(fps)] + (["--warmup"] if warmup else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=str(CROWD))
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--memory-fps", type=float, default=1.0)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--child")
    ap.add_argument("--warmup", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_one(a.child, a.fps, a.warmup)))
        return
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cores: {os.cpu_count()}")
    if not a.skip_throughput:
        throughput(a)
    if not a.skip_throughput:
        landmarks()
    if not a.skip_memory:
        memory(a)


def landmarks(reps: int = 3) -> None:
    """The default landmarker (``Settings.landmarker``: 'auto', LiteRT on the CPU) on a 30-face 1080p
    class frame: one network set, then one per core side by side, as the pipeline loads it."""
    import numpy as np

    from affectline.settings import Settings
    from affectline.types import Detections
    from recognition.face.landmarker import load_landmarker
    from tests.realseq import classroom_of

    seq = classroom_of(n_faces=30, n_frames=1, size=(1080, 1920))
    frame, dets = seq.frames[0], Detections(seq.gt_boxes[0], np.ones(len(seq.gt_boxes[0])))
    s = Settings()
    n = min(s.resolved_torch_threads, 4)
    times = {}
    for threads in (1, n):
        with load_landmarker(s, "cpu", threads=threads) as lm:
            kind = f"{type(lm).__name__}/{getattr(lm, 'runtime', 'mediapipe')}"
            lm.analyze(frame, dets)  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                found = int(lm.analyze(frame, dets).found.sum())
            times[threads] = (time.perf_counter() - t0) / reps
    print(f"[landmarks] {kind}, 30-face 1080p frame ({found} landmarked): one landmarker {times[1] * 1000:.0f} ms, "
          f"{n} side by side {times[n] * 1000:.0f} ms = {times[n] / times[1]:.2f}x")


def throughput(a: argparse.Namespace) -> None:
    r = child(a.video, a.fps)
    ratio = r["e2e_s"] / r["decode_s"]
    print(f"[throughput] {Path(a.video).name}: {r['frames']} frames at {a.fps:g} fps, {r['face_samples']} face-frames, "
          f"{r['persons']} persons, {r['full_searches']} frames searched whole for faces")  # fmt: skip
    print(f"  decode-only {r['decode_s']:.2f} s | end-to-end {r['e2e_s']:.2f} s | end-to-end / decode-only = {ratio:.1f}x (target <= 2x)")
    print(f"  face-frames per second (end-to-end): {r['face_samples'] / r['e2e_s']:.1f}; "
          f"realtime factor: {r['duration_s'] / r['e2e_s']:.2f}x ; peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip


def memory(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        short = make_long(Path(d) / "1min.mp4", 1.0)
        long = make_long(Path(d) / "long.mp4", a.long_minutes)
        rs, rl = child(str(short), a.memory_fps, False), child(str(long), a.memory_fps, False)
    print(f"[memory] analysed at {a.memory_fps:g} fps, 640x360: 1 min peak RSS {rs['peak_rss_mb']:.0f} MB, "
          f"{a.long_minutes:g} min peak RSS {rl['peak_rss_mb']:.0f} MB, ratio {rl['peak_rss_mb'] / rs['peak_rss_mb']:.2f} (flat = ~1.0)")  # fmt: skip
    from pipeline.video import VideoSource

    c = rl["chunk_rss_mb"]
    print(f"  {a.long_minutes:g} min file, RSS after the first batch of each of its {len(c)} chunks: "
          f"{min(c):.0f}-{max(c):.0f} MB (first {c[0]:.0f}, last {c[-1]:.0f}); the decoder reads up to "
          f"{VideoSource.BURST_BYTES // 2**20} MB of frames per burst, which a 1-minute file does not fill")  # fmt: skip


if __name__ == "__main__":
    main()
