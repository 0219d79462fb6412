"""A lesson end to end: a 30-student 1080p25 classroom analysed at 4 fps, as ratios in one run.

    .venv/bin/python bench/lesson.py [--seconds 20] [--device cpu|cuda] [--students 30] [--skip-models]

The video is a synthetic composite of real faces: the six people of
``group_multiface.jpg`` (some mirrored) pasted on a plain wall in a grid, swaying
slightly (``tests.realseq.classroom_frames``; a new pose every 0.2 s, each held for 5
frames), encoded as H.264 1080p at 25 fps and cached under the system temp folder. So the faces, detector, landmarks, expressions and
embeddings are real, while the scene (no occlusion, no desks, steady light, 40-70 px
faces) is easier than a real classroom; the figures are for this composite only.

Printed, all measured in this run:
1. decode-only (the same sampled frames, same decoder) and end-to-end
   (``Pipeline.apply``) times, their ratio, face-frames per second, real-time factor
   (video seconds per second of analysis), peak RSS, and the per-stage share of the
   end-to-end time (``Pipeline.clock``).
2. Per face model, the batched call the pipeline makes (all faces of 4 frames at once)
   against one crop at a time, on the same faces: landmarks, FER, re-id, CLIP-CAER
   (when a checkpoint is configured).
Targets (issue 9, 2-core CPU): real-time factor >= 1 and end-to-end <= 12x decode-only.
The issue asks for 60 s; the default here is 20 s so a run finishes in a few minutes on
2 shared cores (``--seconds 60`` for the full clip).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """CPU seconds this process used (all threads): the work done, whatever else shares the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def lesson_video(seconds: float, students: int, fps: int = 25) -> Path:
    """The composite classroom as an MP4 (written once, then reused)."""
    path = Path(tempfile.gettempdir()) / "affectline_bench" / f"lesson_{students}x{seconds:g}s_1080p{fps}_v2.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    from tests.realseq import classroom_frames

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    try:
        import av
    except ImportError:  # a GPU machine without PyAV: OpenCV's MPEG-4 Part 2 writer (same frames, another codec)
        import cv2

        out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
        for frame, _ in classroom_frames(students, int(seconds * 5), 5.0, (1080, 1920)):
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            for _ in range(fps // 5):
                out.write(bgr)
        out.release()
        tmp.rename(path)
        return path
    with av.open(str(tmp), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = 1920, 1080, "yuv420p"
        st.options = {"preset": "ultrafast", "g": "50"}
        # The faces move 5 times a second (each pose held for 5 frames): rendering 30 faces per
        # frame is what takes time here, and a 4 fps analysis never sees finer motion.
        for frame, _ in classroom_frames(students, int(seconds * 5), 5.0, (1080, 1920)):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            for _ in range(fps // 5):
                for pkt in st.encode(vf):
                    c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    tmp.rename(path)
    return path


def end_to_end(video: Path, device: str, fps: float) -> dict:
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline
    from pipeline.decode import open_video

    s = Settings(analysis_fps=fps)
    src = open_video(video)  # decord, or OpenCV where decord is absent (a GPU machine)
    t0, c0 = time.perf_counter(), cpu_s()
    n = src.decode_all(fps)
    decode, decode_cpu = time.perf_counter() - t0, cpu_s() - c0
    with Pipeline(s, device=device) as p:
        # No warm-up pass: a lesson is analysed once, model loading is outside the timing.
        p.clock.seconds.clear()
        t0, c0 = time.perf_counter(), cpu_s()
        out = p.apply(open_video(video), fps=fps)
        e2e, e2e_cpu = time.perf_counter() - t0, cpu_s() - c0
        stages = dict(p.clock.seconds)
        lm_runtime = getattr(p.landmarker, "runtime", None)
        models = {"landmarker": type(p.landmarker).__name__ + (f" ({lm_runtime})" if lm_runtime else ""),
                  "embedder": type(p.embedder).__name__,
                  "academic": p.academic_name}  # fmt: skip
    return {"frames": n, "decode_s": decode, "e2e_s": e2e, "decode_cpu": decode_cpu, "e2e_cpu": e2e_cpu, "faces": out.n_face_samples, "persons": len(out.tracks), "whole": out.n_full_searches,
            "duration": src.info.duration, "stages": stages, "models": models}  # fmt: skip


def _timed(fn, warm) -> float:
    warm()  # warm-up on one crop: first-call allocations are not throughput
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_model(device: str, students: int, n_frames: int) -> None:
    """Batched (all faces of ``n_frames`` frames) vs one crop at a time, per face model."""
    from affectline.settings import Settings
    from affectline.types import Detections
    from pipeline.analyse import _load_embedder, _load_landmarker
    from pipeline.faces import analyze_many
    from recognition.face.expression import ExpressionModel
    from tests.realseq import classroom_of

    s = Settings()
    seq = classroom_of(n_faces=students, n_frames=n_frames, fps=4.0, size=(1080, 1920))
    frames = seq.frames
    dets = [Detections(b, np.ones(len(b))) for b in seq.gt_boxes]
    n = sum(len(d) for d in dets)
    print(f"\n## 2. Face models: batched ({n_frames} frames x {students} faces = {n} crops) vs one crop at a time")
    print(f"{'model':34s} {'batched ms/face':>16s} {'one-by-one ms/face':>19s} {'speed-up':>9s}")

    def row(name: str, batched, single, warm) -> None:
        tb = _timed(batched, warm) / n
        ts = _timed(single, warm) / n
        print(f"{name:34s} {tb * 1000:16.2f} {ts * 1000:19.2f} {ts / tb:8.1f}x")

    cpu = not device.startswith("cuda")
    for kind in (["mediapipe", "litert"] if cpu else []) + ["torch"]:  # MediaPipe and LiteRT have no CUDA path
        try:
            lm = _load_landmarker(s.model_copy(update={"landmarker": kind}), device)
        except Exception as e:  # noqa: BLE001 - a missing optional stack is reported, not fatal
            print(f"landmarks ({kind}): not available ({type(e).__name__}: {e})")
            continue
        row(f"landmarks+blendshapes+pose ({kind})", lambda: analyze_many(lm, frames, dets),
            lambda: [analyze_many(lm, [f], [d[i]]) for f, d in zip(frames, dets) for i in range(len(d))],
            lambda: analyze_many(lm, frames[:1], [dets[0][0]]))  # fmt: skip
        if hasattr(lm, "close"):
            lm.close()
    import torch

    torch.set_num_threads(s.resolved_torch_threads)  # this process's choice, as a worker's
    fer = ExpressionModel.load(s, device=device)
    row("FER mini-Xception", lambda: fer.predict_many(frames, dets),
        lambda: [fer.predict(f, d[i]) for f, d in zip(frames, dets) for i in range(len(d))],
        lambda: fer.predict(frames[0], dets[0][0]))  # fmt: skip
    for kind in (["dlib"] if cpu else []) + ["torch"]:
        try:
            emb = _load_embedder(s.model_copy(update={"embedder": kind}), device)
        except Exception as e:  # noqa: BLE001
            print(f"re-id ({kind}): not available ({type(e).__name__}: {e})")
            continue
        many = getattr(emb, "embed_many", None) or (lambda fr, dd, emb=emb: [emb.embed(f, d) for f, d in zip(fr, dd)])
        row(f"re-id ({kind})", lambda: many(frames, dets),
            lambda: [emb.embed(f, d[i]) for f, d in zip(frames, dets) for i in range(len(d))],
            lambda: emb.embed(frames[0], dets[0][0]))  # fmt: skip
    caer(s, device, frames, dets)


def caer(s, device: str, frames, dets) -> None:
    from recognition.academic.caer_checkpoint import WeightsNotFound, find_caer_checkpoint

    try:
        ckpt = find_caer_checkpoint(s.caer_checkpoint, s.model_dir)
    except WeightsNotFound:
        print("CLIP-CAER                          not measured: no checkpoint configured (AFFECTLINE_CAER_CHECKPOINT)")
        return
    from recognition.academic.caer_runner import CaerScorer, window_crops
    from recognition.academic.clip_caer import ClipCaer
    from recognition.tracking import context_boxes

    model = ClipCaer.from_official_checkpoint(ckpt, text_heads=s.caer_text_heads, device=device)
    h, w = frames[0].shape[:2]
    k = min(8, len(dets[0]))
    # One 16-sample window per face: the frames repeated to 16.
    wins = [window_crops([frames[i % len(frames)] for i in range(16)], np.tile(dets[0].boxes[j], (16, 1)),
                         context_boxes(np.tile(dets[0].boxes[j], (16, 1)), w, h)) for j in range(k)]  # fmt: skip
    faces, ctx = np.stack([a for a, _ in wins]), np.stack([b for _, b in wins])
    batched, single = CaerScorer(model, batch_size=k), CaerScorer(model, batch_size=1)
    tb = _timed(lambda: batched.score(faces, ctx), lambda: single.score(faces[:1], ctx[:1])) / k
    ts = _timed(lambda: single.score(faces, ctx), lambda: None) / k
    print(f"{'CLIP-CAER (16-frame windows)':34s} {tb * 1000:13.1f}/win {ts * 1000:16.1f}/win {ts / tb:8.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the composite lesson (issue: 60)")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--fps", type=float, default=4.0, help="analysis rate")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-models", action="store_true", help="leave out the per-model batched vs one-by-one table")
    ap.add_argument("--only-models", action="store_true", help="only the per-model table")
    ap.add_argument("--model-frames", type=int, default=4, help="frames (x students faces) per batch in the table")
    a = ap.parse_args()
    if a.only_models:
        per_model(a.device, a.students, a.model_frames)
        return
    t0 = time.perf_counter()
    video = lesson_video(a.seconds, a.students)
    print(f"lesson: {a.students} students, {a.seconds:g} s, 1080p25 composite of real faces ({video}, "
          f"ready in {time.perf_counter() - t0:.0f} s); device {a.device}; cores {os.cpu_count()}")  # fmt: skip
    r = end_to_end(video, a.device, a.fps)
    ratio, rtf = r["e2e_s"] / r["decode_s"], r["duration"] / r["e2e_s"]
    print(f"\n## 1. End to end at {a.fps:g} fps ({r['frames']} frames, {r['whole']} searched whole, {r['faces']} face-frames, {r['persons']} persons; "
          f"{r['models']})")  # fmt: skip
    print(f"decode-only {r['decode_s']:.2f} s | end-to-end {r['e2e_s']:.1f} s | end-to-end / decode-only = {ratio:.1f}x "
          f"(target <= 12x)")  # fmt: skip
    print(f"face-frames per second {r['faces'] / r['e2e_s']:.1f} | real-time factor {rtf:.2f}x (target >= 1) | "
          f"peak RSS {peak_rss_mb():.0f} MB")  # fmt: skip
    # The cores are shared on the machines these figures come from: CPU seconds are the work
    # done whatever the load; on 2 dedicated cores a lesson runs in real time at <= 2 CPU-s/s.
    print(f"CPU seconds: decode-only {r['decode_cpu']:.1f} | end-to-end {r['e2e_cpu']:.1f} | ratio "
          f"{r['e2e_cpu'] / max(r['decode_cpu'], 1e-9):.1f}x | {r['e2e_cpu'] / r['duration']:.2f} CPU-s per video second "
          f"(real time on {os.cpu_count()} cores needs <= {os.cpu_count()}); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    st = dict(r["stages"])
    # embed and the two MTCNN searches are timed inside detect+track: what is left is the tracker
    st["track"] = st.pop("detect+track", 0.0) - sum(st.get(k, 0.0) for k in ("embed", "detect whole", "detect near"))
    st = {{"detect whole": "MTCNN whole-frame", "detect near": "MTCNN near tracks"}.get(k, k): v for k, v in st.items()}
    st["other (samples, context boxes, linking)"] = r["e2e_s"] - sum(st.values())
    print("per-stage share of end-to-end: " + ", ".join(
        f"{k} {v / r['e2e_s']:.0%} ({v:.1f} s)" for k, v in sorted(st.items(), key=lambda kv: -kv[1])))  # fmt: skip
    if not a.skip_models:
        per_model(a.device, a.students, a.model_frames)


if __name__ == "__main__":
    main()
