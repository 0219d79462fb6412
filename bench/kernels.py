"""Per-call cost of the CPU face models on fixed real inputs: MTCNN, FER, torch re-id.

Times the product code as it is (no old code paths are kept for this), in CPU seconds of
this process as well as wall seconds: on a shared machine wall time is mostly waiting for
a core, CPU time with one torch thread is the work. Where a layout choice can be undone
from outside (the FER and re-id networks in channels-last vs the default NCHW), both are
timed in the same run and printed as a ratio.

    .venv/bin/python bench/kernels.py [--threads 1] [--rounds 5]

Inputs: one 1080p frame of the 30-face synthetic classroom of real faces
(tests.realseq.classroom_of), its 30 ground-truth boxes for the local search, FER and
re-id, 4 such frames (120 faces) for FER, and a frame of the real crowd video.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def best_of(rounds: int, fn) -> tuple[float, float]:
    """(CPU s, wall s) of the fastest of ``rounds`` calls after one warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def row(name: str, t: tuple[float, float], per: int = 1, unit: str = "call") -> float:
    cpu, wall = t
    print(f"{name:52s} {1000 * cpu / per:9.1f} ms CPU/{unit} {1000 * wall / per:9.1f} ms wall/{unit}")
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: CPU time = work)")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from affectline.settings import Settings
    from affectline.types import Detections
    from recognition.detection.mtcnn import MTCNNDetector
    from recognition.face.expression import ExpressionModel, grey_crops, to_input
    from recognition.reid.embedder import square_boxes
    from recognition.reid.torch_embedder import TorchFaceEmbedder
    from tests import realseq

    print(f"torch {torch.__version__}, {a.threads} thread(s), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores, best of {a.rounds}")  # fmt: skip
    seq = realseq.classroom_of(n_faces=30, n_frames=4, size=(1080, 1920))
    frame, boxes = seq.frames[0], seq.gt_boxes[0]
    dets = [Detections(b, np.ones(len(b), np.float32)) for b in seq.gt_boxes]
    crowd, _ = realseq.read_frames("crowd_walk_1080p.mp4", [0])
    s = Settings()

    print("\n## MTCNN (whole-frame search and local search around 30 faces)")
    det = MTCNNDetector(s)
    row("detect, 1080p classroom frame, 30 faces", best_of(a.rounds, lambda: det.detect([frame])))
    row("detect, 1080p crowd frame", best_of(a.rounds, lambda: det.detect(crowd)))
    row("detect_near, 30 expected boxes", best_of(a.rounds, lambda: det.detect_near(seq.frames[1], boxes)))

    print("\n## FER mini-Xception (120 faces of 4 frames)")
    fer = ExpressionModel.load(s)
    n = sum(len(d) for d in dets)
    row("predict_many (crops + network)", best_of(a.rounds, lambda: fer.predict_many(seq.frames, dets)), n, "face")
    row("grey_crops", best_of(a.rounds, lambda: [grey_crops(f, d) for f, d in zip(seq.frames, dets)]), n, "face")
    x = to_input(np.concatenate([grey_crops(f, d)[0] for f, d in zip(seq.frames, dets)]))
    nchw = copy.deepcopy(fer.net).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        diff = float((nchw(x) - fer.net(x.contiguous(memory_format=torch.channels_last))).abs().max())
        cl = row("network, channels-last (the product)", best_of(a.rounds, lambda: fer.forward_probs(x)), n, "face")
        old = row("network, NCHW", best_of(a.rounds, lambda: nchw(x)), n, "face")
    print(f"  channels-last / NCHW: {cl / old:.2f}x (max logit difference {diff:.1e})")

    print("\n## torch re-id (dlib ResNet, 30 faces of one frame)")
    emb = TorchFaceEmbedder(s.model_dir)
    idx = np.zeros(len(boxes), int)
    row("embed_many (landmarks + chips + network)", best_of(a.rounds, lambda: emb.embed_many([frame], [dets[0]])), 30, "face")
    lm = emb.landmarks([frame], idx, square_boxes(boxes))
    row("landmarks (numpy regression trees)", best_of(a.rounds, lambda: emb.landmarks([frame], idx, square_boxes(boxes))), 30, "face")
    row("chips (dlib-exact, float64)", best_of(a.rounds, lambda: emb.chips([frame], idx, lm)), 30, "face")
    chips = emb.chips([frame], idx, lm)  # (n, 3, 150, 150) viewed from HWC memory: channels-last already
    with torch.inference_mode():
        cl = row("network, chips as cut (channels-last memory)", best_of(a.rounds, lambda: emb.embed_chips(chips)), 30, "face")
        c = chips.contiguous()
        old = row("network, chips made NCHW-contiguous", best_of(a.rounds, lambda: emb.embed_chips(c)), 30, "face")
    print(f"  channels-last / NCHW: {cl / old:.2f}x")


if __name__ == "__main__":
    main()
