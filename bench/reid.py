"""Face descriptors: dlib per face vs dlib's network in torch, one chip at a time and batched.

    .venv/bin/python bench/reid.py [--device cpu|cuda] [--threads N] [--copies 2] [--rounds 2]

Material: the six group-photo faces and the 38 boxes of the four annotated crowd frames
(1080p), ``--copies`` times over (the same frames again, so batches grow). All variants
run in the same process on the same faces:

- baseline: ``FaceEmbedder`` (dlib: shape predictor, chip and ResNet, one face after the
  other, single-threaded, no BLAS in this build);
- torch, one chip a time: ``TorchFaceEmbedder.embed`` on one face per call (the
  tracker's pattern when it needs a single descriptor);
- torch, batched: ``TorchFaceEmbedder.embed_many`` on all frames in one call;
- the batched run's stages: numpy landmarks, torch chips, network forward.

Every figure is milliseconds per face, wall clock and CPU time of the process (all its
threads), each with its ratio to the dlib baseline of this run (best of ``--rounds``).
On a shared machine trust the CPU column; ``--threads 1`` compares one core with one
core. The descriptors of all variants are compared to dlib's (min cosine).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from affectline.settings import Settings  # noqa: E402
from affectline.types import Detections  # noqa: E402
from recognition.reid import FaceEmbedder, TorchFaceEmbedder  # noqa: E402
from recognition.reid.embedder import square_boxes  # noqa: E402
from tests import realseq  # noqa: E402


def material(copies: int) -> tuple[list[np.ndarray], list[Detections]]:
    frames = [realseq.read_image("group_multiface.jpg")]
    dets = [Detections(realseq.annotated("group_multiface.jpg")[0][0], np.ones(6))]
    gt = realseq.annotated("crowd_walk_1080p.mp4")
    imgs, _ = realseq.read_frames("crowd_walk_1080p.mp4", sorted(gt))
    for i, img in zip(sorted(gt), imgs):
        boxes = np.concatenate(gt[i])
        frames.append(img), dets.append(Detections(boxes, np.ones(len(boxes))))
    return frames * copies, dets * copies


def best_of(rounds: int, fn):
    """(wall seconds, CPU seconds of this process, result), each the best of ``rounds``.

    CPU seconds are what a shared machine still measures fairly: the wall clock of a
    loaded box counts other people's work too.
    """
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return (wall, cpu), out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: Settings.torch_threads, all cores)")
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-dlib", action="store_true", help="no dlib here (e.g. the GPU machine): no baseline")
    args = ap.parse_args()

    import torch

    threads = args.threads or Settings().resolved_torch_threads
    torch.set_num_threads(threads)
    frames, dets = material(args.copies)
    n = sum(len(d) for d in dets)
    model_dir = Settings().model_dir if Settings().model_dir.exists() else Path(tempfile.mkdtemp())
    te = TorchFaceEmbedder(model_dir, device=args.device, batch_size=args.batch_size)
    te.embed_many(frames[:1], dets[:1])  # warm up (allocator, cuDNN autotune)
    print(f"{n} faces in {len(frames)} frames; torch {torch.__version__} on {args.device}, {threads} threads; "
          f"dlib single-threaded on CPU; best of {args.rounds}\n")

    rows: list[tuple[str, float, np.ndarray | None]] = []
    ref = None
    if not args.skip_dlib:
        de = FaceEmbedder()
        t, out = best_of(args.rounds, lambda: np.concatenate([de.embed(f, d) for f, d in zip(frames, dets)]))
        ref = out
        rows.append(("dlib FaceEmbedder, face by face (baseline)", t, out))

    def one_by_one():
        outs = []
        for f, d in zip(frames, dets):
            for i in range(len(d)):
                outs.append(te.embed(f, Detections(d.boxes[i : i + 1], np.ones(1))))
        return np.concatenate(outs)

    t, out = best_of(args.rounds, one_by_one)
    rows.append(("torch, one chip per call", t, out))
    t, out = best_of(args.rounds, lambda: np.concatenate(te.embed_many(frames, dets)))
    rows.append((f"torch, batched (embed_many, batches of {args.batch_size})", t, out))

    # Stages of the batched path.
    idx = np.repeat(np.arange(len(frames)), [len(d) for d in dets])
    rects = square_boxes(np.concatenate([d.boxes for d in dets]))
    t_lm, lm = best_of(args.rounds, lambda: te.landmarks(frames, idx, rects))

    def chips():
        c = te.chips(frames, idx, lm)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return c

    t_chip, c = best_of(args.rounds, chips)
    t_net, _ = best_of(args.rounds, lambda: te.embed_chips(c))
    stages = [("  stage: landmarks (numpy regression trees)", t_lm), ("  stage: chips (torch)", t_chip),
              ("  stage: network forward", t_net)]
    if not args.skip_dlib:
        import dlib
        import face_recognition_models as frm

        sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        t_dlm, _ = best_of(args.rounds, lambda: [sp(frames[u], dlib.rectangle(*map(int, r))) for u, r in zip(idx, rects)])
        stages.insert(1, ("  for reference: dlib's shape predictor, face by face", t_dlm))

    base = rows[0][1] if ref is not None else None

    def fmt(t) -> str:
        wall, cpu = t
        r = f"{wall / base[0]:7.3f} {cpu / base[1]:7.3f}" if base else f"{'-':>7s} {'-':>7s}"
        return f"{1000 * wall / n:9.2f} {1000 * cpu / n:9.2f} {r}"

    print(f"{'variant':58s} {'wall ms':>9s} {'cpu ms':>9s} {'x wall':>7s} {'x cpu':>7s} {'min cos vs dlib':>16s}")
    for name, t, out in rows:
        cos = f"{cosine(out, ref):16.9f}" if ref is not None else f"{'-':>16s}"
        print(f"{name:58s} {fmt(t)} {cos}")
    for name, t in stages:
        print(f"{name:58s} {fmt(t)}")
    if base:
        one, batched = rows[1][1], rows[2][1]
        print(f"\nbatched vs dlib: {base[0] / batched[0]:.1f}x faster wall, {base[1] / batched[1]:.1f}x less CPU; "
              f"vs one chip per call: {one[0] / batched[0]:.1f}x wall, {one[1] / batched[1]:.1f}x CPU")

if __name__ == "__main__":
    main()
