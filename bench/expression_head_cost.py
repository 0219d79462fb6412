"""CPU cost of the calibrated expression heads' networks per face, interleaved in one run.

Usage: PYTHONPATH=. .venv/bin/python bench/expression_head_cost.py [ROUNDS]
One video second of the lesson bench is 30 students x 4 fps = 120 face-frames: each head's
``predict_many`` runs on 120 real faces (the six of data/media/group_multiface.jpg, repeated over
20 frames), one torch thread, process CPU time (not wall: the machine is shared), the heads in
turn each round. Prints CPU-ms per face, CPU-s per video second and the ratio to the baseline
(``expression_head_light``, the previous default: one mini-Xception pass)."""
import sys
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch

from affectline.types import Detections
from recognition.face.expression import CalibratedExpressionModel

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
frame = cv2.cvtColor(cv2.imread(str(ROOT / "data/media/group_multiface.jpg")), cv2.COLOR_BGR2RGB)
rects = dlib.get_frontal_face_detector()(frame, 1)
det = Detections(np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32), np.ones(len(rects)))
frames, dets = [frame] * 20, [det] * 20
n = len(det) * 20
lms = [{"blend": np.zeros((len(det), 52), np.float32), "pose": np.zeros((len(det), 3), np.float32)}] * 20
heads = {k: CalibratedExpressionModel.load(head_key=k) for k in ("expression_head_light", "expression_head_flip")}
for m in heads.values():
    m.predict_many(frames, dets, lms)  # warm up
cpu = {k: [] for k in heads}
for _ in range(rounds):
    for k, m in heads.items():
        t = time.process_time()
        m.predict_many(frames, dets, lms)
        cpu[k].append((time.process_time() - t) / n)
base = np.median(cpu["expression_head_light"])
for k, v in cpu.items():
    med = float(np.median(v))
    print(f"{k:24s} {med * 1e3:6.2f} CPU-ms/face  {med * 120:5.3f} CPU-s per video second (120 faces)  "
          f"ratio {med / base:4.2f}  (rounds: {', '.join(f'{x * 1e3:.2f}' for x in v)})")
print(f"added by the mirrored pass: {(np.median(cpu['expression_head_flip']) - base) * 120:.3f} CPU-s per video second")
