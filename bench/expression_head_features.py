"""Per-face features for fitting and choosing the expression head: the mini-Xception's logits plain and mirrored, the TF.js ``emotion`` network's, blendshapes, pose (exploration; quick refits).

(The gate's curve has its own, ``bench/expression_features.py``: this one adds the mirrored and TF.js logits the head is chosen on.)

Usage: PYTHONPATH=. .venv/bin/python bench/expression_head_features.py SIZE [N]
  SIZE: native, or a face width in px (the image shrunk into a 1080p frame as ``eval expressions``
  does); N: the seeded class-proportional sample (default every image).
Reads the detector's faces from ~/.cache/affectline/expr/det_all.json (an ``eval expressions --cache``
file) and writes ~/.cache/affectline/expr/feats_SIZE.npz: per image the landmarker's blendshapes,
pose, pupil distance, crop sharpness, and the logits of the mini-Xception and the TF.js ``emotion``
network on crops of several margins, each plain and mirrored (``margin_crops`` / ``to_input``, the
calibrated model's own preprocessing)."""
import hashlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from affectline.settings import get_settings
from pipeline.eval_expressions import DetectionCache, detector_key, image_path, load_image, place, read_labels, subsample
from pipeline.analyse import _load_landmarker
from pipeline.faces import sharpness
from recognition.face.expression import ExpressionModel, load_human_emotion, margin_crops, to_input
from recognition.face.readability import iod_from_landmarks

torch.set_num_threads(1)
CACHE = Path.home() / ".cache/affectline/expr"
MARGINS = (0.0, 0.05, 0.1)
size = None if sys.argv[1] == "native" else int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else None
s = get_settings()
lm = _load_landmarker(s, "cpu")
mx = ExpressionModel.load(s).net
hu = load_human_emotion(s)
folder = Path("/work/shared/fixtures/expressions")
items = subsample(read_labels(folder), n)
cache = DetectionCache(CACHE / "det_all.json", detector_key(s))
nanv = lambda *sh: np.full(sh, np.nan, np.float32)  # noqa: E731
rows = {k: [] for k in ("fname", "label", "det", "found", "blend", "pose", "sharp", "iod", "box", "mx", "mxf", "hu", "huf")}
t0 = time.time()
for i, it in enumerate(items):
    p = image_path(folder, it)
    dg = hashlib.sha1(p.read_bytes()).hexdigest()
    img = load_image(p)
    hit, nat = cache.get(dg, None)
    det = None
    if hit and nat is not None:
        if size is None:
            fr, det = img, nat
        else:
            fr, _ = place(img, float(nat.boxes[0, 2] - nat.boxes[0, 0]), size)
            hit, det = cache.get(dg, size)
            if not hit:
                continue  # not in the sample the detector was run on
    elif not hit:
        continue
    rows["fname"].append(it.file)
    rows["label"].append(it.label)
    rows["det"].append(det is not None)
    if det is None:
        for k, v in (("found", False), ("blend", nanv(52)), ("pose", nanv(3)), ("sharp", np.nan), ("iod", np.nan),
                     ("box", nanv(4)), ("mx", nanv(3, 7)), ("mxf", nanv(3, 7)), ("hu", nanv(3, 7)), ("huf", nanv(3, 7))):
            rows[k].append(v)
        continue
    r = lm.analyze(fr, det)
    rows["found"].append(bool(r.found[0]))
    rows["blend"].append(r.blendshapes[0])
    rows["pose"].append(r.pose[0])
    rows["iod"].append(iod_from_landmarks(r.landmarks)[0])
    rows["sharp"].append(sharpness(cv2.cvtColor(fr, cv2.COLOR_RGB2GRAY), det.boxes[0]))
    rows["box"].append(det.boxes[0])
    cs = np.concatenate([margin_crops(fr, det.boxes, m)[0] for m in MARGINS])
    cs = np.concatenate([cs, cs[:, :, ::-1]])
    x = to_input(cs)
    with torch.inference_mode():
        a = mx(x.contiguous(memory_format=torch.channels_last)).numpy()
        b = hu(x.permute(0, 2, 3, 1)).numpy()
    k = len(MARGINS)
    rows["mx"].append(a[:k]); rows["mxf"].append(a[k:]); rows["hu"].append(b[:k]); rows["huf"].append(b[k:])  # noqa: E702
    if i % 200 == 0:
        print(i, round(time.time() - t0, 1), flush=True)
CACHE.mkdir(parents=True, exist_ok=True)
np.savez(CACHE / f"feats_{sys.argv[1]}.npz", margins=np.array(MARGINS), **{k: np.array(v) for k, v in rows.items()})
print("done", len(rows["fname"]), round(time.time() - t0, 1))
