"""What the review copy adds to an analysis: the 1080p25 lesson analysed with and without it, in one run.

    .venv/bin/python bench/review_copy.py [--seconds 20] [--students 30] [--repeats 2] [--chunk 10]

The lesson is ``bench/lesson.py``'s composite (30 real faces on a grid, 1080p25, H.264), analysed
at 4 fps in chunks as a job does it (``Pipeline.analyse_chunk`` per window), alternately without
and with the review copy (each chunk writes its part through the decoder's tap, the parts are
joined at the end, as the link does), ``--repeats`` times each, interleaved so load from other
jobs on this shared machine falls on both. Printed:

1. wall and CPU seconds of each variant (median), and the ratio with / without: the issue's
   target is <= 1.10 (at most 10% more analysis time);
2. decode-only with and without the tap (what the copy costs the decoder: colour conversion
   and resizing of the frames between samples, and the encoder thread);
3. the copy's size per hour of video: this composite (still faces, a plain wall: the easy case)
   and the real 1080p crowd clip of ``../shared/media`` (people walking: a busy picture).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.lesson import cpu_s, lesson_video  # noqa: E402


def analyse(p, video: Path, fps: float, chunk_s: float, review_dir: Path | None, settings) -> tuple[float, float, int]:
    """One analysis of ``video`` in chunks; with ``review_dir`` each chunk writes its part, then they are joined."""
    from pipeline.analyse import ChunkWindow, JobShape, chunk_windows
    from tasks.review_copy import ReviewSpec, chunk_writer, join_parts
    from pipeline.decode import open_video

    src = open_video(video)
    info = src.info
    windows = chunk_windows(info.duration, chunk_s, settings.bin_seconds)
    spec = ReviewSpec(info.fps, info.width, info.height, settings.review_fps, settings.review_height)
    t0, c0 = time.perf_counter(), cpu_s()
    parts = []
    for c, w in enumerate(windows):
        tap = None
        if review_dir is not None:
            tap = chunk_writer(review_dir / f"{c:05d}.mp4", spec, w.start, w.end, last=c == len(windows) - 1)
        p.analyse_chunk(src, ChunkWindow(c, w.start, w.end), JobShape(fps, p.settings.bin_seconds, p.chunk_overlap_s), tap=tap)
        if tap is not None:
            parts.append(tap.close())
    size = 0
    if review_dir is not None:
        size = join_parts(parts, video, review_dir / "review.mp4").stat().st_size
    return time.perf_counter() - t0, cpu_s() - c0, size


def decode_only(video: Path, fps: float, review_dir: Path | None, settings) -> tuple[float, float]:
    from tasks.review_copy import ReviewSpec, chunk_writer
    from pipeline.decode import open_video

    src = open_video(video)
    info = src.info
    spec = ReviewSpec(info.fps, info.width, info.height, settings.review_fps, settings.review_height)
    t0, c0 = time.perf_counter(), cpu_s()
    tap = chunk_writer(review_dir / "decode.mp4", spec, 0.0, info.duration, last=True) if review_dir else None
    for _ in src.batches(fps, 8, tap=tap) if tap else src.batches(fps, 8):
        pass
    if tap is not None:
        tap.close()
    return time.perf_counter() - t0, cpu_s() - c0


def size_per_hour(video: Path, settings, out: Path) -> tuple[float, float]:
    """(MB per hour of video, duration in s) of the review copy of ``video``."""
    from tasks.review_copy import ReviewSpec, chunk_writer, join_parts
    from pipeline.decode import open_video

    src = open_video(video)
    info = src.info
    spec = ReviewSpec(info.fps, info.width, info.height, settings.review_fps, settings.review_height)
    tap = chunk_writer(out.with_suffix(".part.mp4"), spec, 0.0, info.duration, last=True)
    for _ in src.batches(4.0, 8, tap=tap):
        pass
    size = join_parts([tap.close()], video, out).stat().st_size
    return size / info.duration * 3600 / 1e6, info.duration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the composite lesson")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each variant, interleaved")
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk length in s (jobs use 60; shorter = more joins)")
    ap.add_argument("--fps", type=float, default=4.0)
    args = ap.parse_args()

    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    s = Settings(analysis_fps=args.fps)
    video = lesson_video(args.seconds, args.students)
    tmp = Path(tempfile.mkdtemp(prefix="affectline_review_bench_"))
    print(f"# Review copy vs analysis: {video.name}, {args.seconds:g} s, {args.fps:g} fps, {args.chunk:g} s chunks; "
          f"copy {s.review_height} px at {s.review_fps:g} fps (H.264 crf 28 veryfast)")  # fmt: skip

    print("\n## 2. Decode only (same sampled frames), without / with the tap")
    d0 = decode_only(video, args.fps, None, s)
    d1 = decode_only(video, args.fps, tmp, s)
    print(f"without: {d0[0]:.2f} s wall, {d0[1]:.2f} s CPU; with: {d1[0]:.2f} s wall, {d1[1]:.2f} s CPU "
          f"(+{d1[1] - d0[1]:.2f} CPU-s = {(d1[1] - d0[1]) / args.seconds * 60:.1f} CPU-s per minute of video)")  # fmt: skip

    runs: dict[str, list[tuple[float, float, int]]] = {"without": [], "with": []}
    with Pipeline(s, device="cpu") as p:
        for r in range(args.repeats):
            for name in ("without", "with"):
                d = tmp / f"{name}{r}"
                d.mkdir()
                runs[name].append(analyse(p, video, args.fps, args.chunk, d if name == "with" else None, s))
                print(f"  run {r + 1} {name:7s}: {runs[name][-1][0]:.1f} s wall, {runs[name][-1][1]:.1f} s CPU", flush=True)
    print("\n## 1. End to end (median of runs)")
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
    for k, (w, c) in med.items():
        print(f"{k:8s} review copy: {w:7.1f} s wall {c:7.1f} s CPU  (RTF {args.seconds / w:.2f})")
    print(f"ratio with / without: wall {med['with'][0] / med['without'][0]:.3f}x, CPU {med['with'][1] / med['without'][1]:.3f}x "
          "(target <= 1.10)")  # fmt: skip

    print("\n## 3. Size per hour of video")
    mb = runs["with"][0][2] / args.seconds * 3600 / 1e6
    print(f"composite lesson (still faces, plain wall): {mb:.0f} MB/h")
    crowd = ROOT.parent / "shared" / "media" / "crowd_walk_1080p.mp4"
    if crowd.is_file():
        per_h, dur = size_per_hour(crowd, s, tmp / "crowd.mp4")
        print(f"crowd walking, real 1080p25 footage ({dur:.1f} s): {per_h:.0f} MB/h")
    classroom = ROOT / "data" / "media" / "classroom_4students_270p.mp4"
    if classroom.is_file():
        per_h, dur = size_per_hour(classroom, s, tmp / "classroom.mp4")
        print(f"real classroom, 480x270 at 16.7 fps ({dur:.1f} s; the copy keeps every frame at this size): {per_h:.0f} MB/h")


if __name__ == "__main__":
    main()
