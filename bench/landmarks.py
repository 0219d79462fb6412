"""Landmarks, blendshapes and head pose per face: torch batched vs one crop at a time vs LiteRT vs MediaPipe.

    .venv/bin/python bench/landmarks.py [--device cpu|cuda] [--reps 3] [--threads N]
                                        [--batch-size N] [--save-inputs F.npz | --inputs F.npz]

Faces: a 30-student 1080p classroom composed of real faces (``tests.realseq.classroom_of``,
2 frames, the ground-truth boxes) plus the real footage of the parity tests (group photo,
head-turn clip, crowd; dlib HOG boxes). Three ways over the same frames and boxes, each
timed ``--reps`` times interleaved (the best run is kept, so background load on a shared
machine hurts every way alike):
  * MediaPipe: ``FaceLandmarker(threads=N)``, ``analyze`` frame by frame (its crops, one
    MediaPipe graph call per crop and scale tried);
  * torch loop: ``TorchFaceLandmarker.analyze`` on one box at a time (one crop per forward);
  * torch batched: one ``analyze_many`` over all frames (all crops of all frames per
    forward, ``--batch-size`` crops at a time);
  * litert: the same ``analyze_many`` with MediaPipe's networks in LiteRT's XNNPACK kernels,
    N sets side by side (CPU only; what ``landmarker='auto'`` runs on a CPU).
Printed: wall and CPU ms per face for each, and the ratios batched vs loop and batched
vs MediaPipe (on a shared machine, wall time includes waiting for a core: compare CPU).
On a machine without dlib/cv2/mediapipe (e.g. a GPU box), ``--inputs`` reads frames and
boxes saved here with ``--save-inputs``, and MediaPipe is left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from affectline.settings import Settings  # noqa: E402
from affectline.types import Detections  # noqa: E402


def footage() -> tuple[list[np.ndarray], list[np.ndarray]]:
    import cv2
    import decord
    import dlib

    from tests.paths import MEDIA
    from tests.realseq import classroom_of

    hog = dlib.get_frontal_face_detector()

    def boxes(frame: np.ndarray, up: int) -> np.ndarray:
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in hog(frame, up)], np.float32).reshape(-1, 4)

    frames, dets = [], []
    seq = classroom_of(30, n_frames=2)
    for f, b in zip(seq.frames, seq.gt_boxes):
        frames.append(f)
        dets.append(np.asarray(b, np.float32))
    group = cv2.cvtColor(cv2.imread(str(MEDIA / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    frames.append(group)
    dets.append(boxes(group, 1))
    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    b0 = boxes(vr[0].asnumpy(), 1)
    for i in (0, 20, 43):
        frames.append(vr[i].asnumpy())
        dets.append(b0)
    vr = decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))
    for i in (40, 90):
        f = vr[i].asnumpy()
        frames.append(f)
        dets.append(boxes(f, 0))
    return frames, dets


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time is this process's, all threads."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads and MediaPipe graphs (0: Settings default)")
    ap.add_argument("--batch-size", type=int, default=None, help="crops per forward (default: the landmarker's, 16 CPU / 256 CUDA)")
    ap.add_argument("--inputs", type=Path, help="frames and boxes saved by --save-inputs")
    ap.add_argument("--save-inputs", type=Path)
    ap.add_argument("--no-mediapipe", action="store_true")
    args = ap.parse_args()

    from recognition.face.mesh.landmarker import TorchFaceLandmarker

    s = Settings()
    threads = args.threads or s.resolved_torch_threads
    torch.set_num_threads(threads)
    if args.inputs:
        z = np.load(args.inputs)
        n = int(z["n"])
        frames, boxes = [z[f"frame{i}"] for i in range(n)], [z[f"boxes{i}"] for i in range(n)]
    else:
        frames, boxes = footage()
    if args.save_inputs:
        np.savez_compressed(
            args.save_inputs, n=len(frames), **{f"frame{i}": f for i, f in enumerate(frames)},
            **{f"boxes{i}": b for i, b in enumerate(boxes)},
        )  # fmt: skip
    dets = [Detections(b, np.ones(len(b))) for b in boxes]
    tl = TorchFaceLandmarker(s, device=args.device, batch_size=args.batch_size)
    n_faces = sum(len(d) for d in dets)
    print(f"{len(frames)} frames, {n_faces} faces; device {args.device}, {threads} thread(s), batch {tl.batch_size}")

    tl.analyze_many(frames[:1], dets[:1])  # warm-up (allocations, cuDNN plans)

    def batched():
        return tl.analyze_many(frames, dets)

    def loop():
        for f, d in zip(frames, dets):
            for i in range(len(d)):
                tl.analyze(f, Detections(d.boxes[i : i + 1], d.scores[i : i + 1]))

    lite = None
    if args.device == "cpu":
        from recognition.face.mesh.litert import available

        if available():
            lite = TorchFaceLandmarker(s, device="cpu", runtime="litert", threads=threads)
            lite.analyze_many(frames[:1], dets[:1])
        else:
            print("LiteRT left out: ai-edge-litert is not installed")

    mp_lm = None
    if not args.no_mediapipe:
        try:
            from recognition.face.landmarks import FaceLandmarker

            mp_lm = FaceLandmarker(s, threads=threads)
        except ImportError as e:
            print(f"MediaPipe left out: {e}")

    def mediapipe():
        for f, d in zip(frames, dets):
            mp_lm.analyze(f, d)

    found = {"torch": sum(int(r.found.sum()) for r in batched())}
    if mp_lm is not None:
        found["mediapipe"] = sum(int(mp_lm.analyze(f, d).found.sum()) for f, d in zip(frames, dets))
    ways = {"torch batched": batched, "torch loop": loop}
    if lite is not None:
        found["litert"] = sum(int(r.found.sum()) for r in lite.analyze_many(frames, dets))
        ways["litert"] = lambda: lite.analyze_many(frames, dets)
    if mp_lm is not None:
        ways["mediapipe"] = mediapipe
    wall = {k: float("inf") for k in ways}
    cpu = {k: float("inf") for k in ways}
    for _ in range(args.reps):  # interleaved, so load changes hit every way
        for k, fn in ways.items():
            w, c = timed(fn)
            wall[k], cpu[k] = min(wall[k], w), min(cpu[k], c)
    print("  per face, best of the reps:   wall ms    CPU ms")
    for k in ways:
        print(f"  {k:26s} {wall[k] / n_faces * 1e3:8.2f}  {cpu[k] / n_faces * 1e3:8.2f}")
    print(f"  faces found: {found}")
    # On a shared machine wall time includes waiting for a core; CPU time is the work done.
    for base in ("torch loop", "mediapipe"):
        if base in ways:
            print(
                f"  torch batched vs {base:10s}: {wall[base] / wall['torch batched']:.2f}x (wall), "
                f"{cpu[base] / cpu['torch batched']:.2f}x (CPU) faster"
            )
    if lite is not None and mp_lm is not None:
        print(f"  litert vs mediapipe: {wall['mediapipe'] / wall['litert']:.2f}x (wall), "
              f"{cpu['mediapipe'] / cpu['litert']:.2f}x (CPU) faster")  # fmt: skip
    if lite is not None:
        networks_alone(s)
    for m in (lite, mp_lm):
        if m is not None:
            m.close()


def networks_alone(s: Settings, reps: int = 30) -> None:
    """The floor: each of MediaPipe's three networks alone in LiteRT (XNNPACK), one thread, one face."""
    from recognition.face.mesh.litert import LiteRTGraph
    from recognition.face.mesh.weights import MEMBERS
    from recognition.registry import resolve

    task = resolve("face_landmarker", s)
    shapes = {"detector": (1, 128, 128, 3), "mesh": (1, 256, 256, 3), "blendshapes": (1, 146, 2)}
    parts = []
    for name, shape in shapes.items():
        net = LiteRTGraph.from_task(task, MEMBERS[name], threads=1)
        x = torch.rand(shape)
        net(x)
        _, c = timed(lambda net=net, x=x: [net(x) for _ in range(reps)])
        parts.append(f"{name} {c / reps * 1e3:.2f}")
    print("  networks alone (LiteRT, 1 thread), CPU ms a face: " + ", ".join(parts))


if __name__ == "__main__":
    main()
