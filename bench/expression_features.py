"""Per-face features of the labelled development faces at one face size, cached on disk.

What the expression heads are fitted on (``bench/expression_head_fit.py``) and what the readability
gate's curve is scored from (``bench/readability_curve.py``): for each labelled image, framed as
``affectline eval expressions`` frames it (``pipeline.eval_expressions.place``: native, or shrunk so
the face is S px wide in a grey 1080p frame), the detector's face (``DetectionCache``: the same
boxes the evaluation command gets), then the pipeline's landmarker (blendshapes, pose, pupil
distance), the gate's sharpness, and the two FER2013 networks' logits on crops of several margins.

Caches (never under /tmp, so nothing depends on another run's leftovers; delete them to recompute):
  * ``~/.cache/affectline/bench/detections.json``: the detector's faces (the slow part, ~0.4 s per
    1080p frame), keyed by image bytes, size and detector settings;
  * ``~/.cache/affectline/bench/expression_features/feats_{size}[_blur{b}].npz``.

``--blur B`` blurs the framed image (Gaussian, sigma = B x the face width) and keeps the
unblurred frame's box: the same face, out of focus or moving (the blur curve of the gate).

    PYTHONPATH=. .venv/bin/python bench/expression_features.py native
    PYTHONPATH=. .venv/bin/python bench/expression_features.py 24 --sample 400
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "affectline" / "bench"
DATA = ROOT.parent / "shared" / "fixtures" / "expressions"
MARGINS = (0.0, 0.1, 0.2, 0.3)  # crop margins of the networks' logits (fraction of the box, each side)


def feats_path(size: str, blur: float = 0.0, cache: Path = CACHE) -> Path:
    """The cached features of one size ("native", "24", ...) and blur."""
    return cache / "expression_features" / (f"feats_{size}" + (f"_blur{blur:g}" if blur else "") + ".npz")


def load_feats(size: str, blur: float = 0.0, cache: Path = CACHE) -> dict[str, np.ndarray]:
    p = feats_path(size, blur, cache)
    if not p.is_file():
        sample = "" if size == "native" else " --sample 400"
        raise SystemExit(f"{p}: missing; make it with bench/expression_features.py {size}{sample}" + (f" --blur {blur:g}" if blur else ""))
    return dict(np.load(p, allow_pickle=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", help="native, or the face width in px (16, 24, 32, 48, 64)")
    ap.add_argument("--sample", type=int, default=None, help="seeded class-proportional sample (evaluation's --sample)")
    ap.add_argument("--blur", type=float, default=0.0)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from affectline.settings import Settings
    from pipeline.eval_expressions import DetectionCache, detector_key, image_path, load_image, place, read_labels, subsample, pick
    from pipeline.analyse import _load_landmarker
    from pipeline.faces import sharpness
    from recognition.detection import load_detector
    from recognition.face.expression import ExpressionModel, grey_crops, load_human_emotion, margin_crops, to_input
    from recognition.face.readability import iod_from_landmarks

    size = None if args.size == "native" else int(args.size)
    s = Settings(torch_threads=1)
    lm = _load_landmarker(s, "cpu")
    mx = ExpressionModel.load(s)
    hu = load_human_emotion(s)
    detector = None
    items = subsample(read_labels(args.data), args.sample)
    cache = DetectionCache(args.cache / "detections.json", detector_key(s))

    def detect(frame, rect, digest, sz):
        nonlocal detector
        hit, d = cache.get(digest, sz)
        if hit:
            return d
        detector = detector or load_detector(s.detector, s, device="cpu")
        dets = detector.detect([frame])[0]
        i = pick(dets, rect)
        d = None if i is None else dets[np.array([i])]
        cache.put(digest, sz, d)
        return d

    nan = lambda *shape: np.full(shape, np.nan, np.float32)  # noqa: E731
    keys = ("fname", "label", "det", "found", "blend", "pose", "sharp", "iod", "box", "mx_fer", "mx", "hu", "hu_fer")
    rows: dict[str, list] = {k: [] for k in keys}
    t0 = time.time()
    try:
        for i, it in enumerate(items):
            p = image_path(args.data, it)
            raw = p.read_bytes()
            img = load_image(p)
            dg = hashlib.sha1(raw).hexdigest()
            nat = detect(img, (0, 0, img.shape[1], img.shape[0]), dg, None)
            det, frame = None, img
            if nat is not None:
                width = float(nat.boxes[0, 2] - nat.boxes[0, 0])
                frame, rect = place(img, width, size)
                det = nat if size is None else detect(frame, rect, dg, size)
                if det is not None and args.blur:
                    bw = float(det.boxes[0, 2] - det.boxes[0, 0])
                    frame = cv2.GaussianBlur(frame, (0, 0), args.blur * bw)
            rows["fname"].append(it.file)
            rows["label"].append(it.label)
            rows["det"].append(det is not None)
            if det is None:
                for k, v in (("found", False), ("blend", nan(52)), ("pose", nan(3)), ("sharp", np.nan), ("iod", np.nan),
                             ("box", nan(4)), ("mx_fer", nan(7)), ("mx", nan(len(MARGINS), 7)), ("hu", nan(len(MARGINS), 7)),
                             ("hu_fer", nan(7))):  # fmt: skip
                    rows[k].append(v)
                continue
            r = lm.analyze(frame, det)
            rows["found"].append(bool(r.found[0]))
            rows["blend"].append(r.blendshapes[0])
            rows["pose"].append(r.pose[0])
            rows["iod"].append(iod_from_landmarks(r.landmarks)[0])
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            rows["sharp"].append(sharpness(gray, det.boxes[0]))
            rows["box"].append(det.boxes[0])
            fer_crop, _ = grey_crops(frame, det)
            x = to_input(np.concatenate([fer_crop] + [margin_crops(frame, det.boxes, m)[0] for m in MARGINS]))
            with torch.inference_mode():
                a = mx.net(x.contiguous(memory_format=torch.channels_last)).numpy()
                b = hu(x.permute(0, 2, 3, 1)).numpy()
            rows["mx_fer"].append(a[0])
            rows["mx"].append(a[1:])
            rows["hu_fer"].append(b[0])
            rows["hu"].append(b[1:])
            if i % 100 == 0:
                print(f"{i}/{len(items)} {time.time() - t0:.0f} s", flush=True)
                cache.save()
    finally:
        cache.save()
    out = feats_path(args.size, args.blur, args.cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **{k: np.array(v) for k, v in rows.items()})
    print(f"{out}: {len(rows['fname'])} faces in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
