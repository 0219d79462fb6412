"""Expression accuracy by face size through the pipeline's own face models: the readability gate's thresholds.

A quick curve for choosing the gate's thresholds (``recognition.face.readability``), until
``affectline eval expressions`` gives the full one: a class-balanced sample of the labelled
development faces (``../shared/fixtures/expressions``), each shrunk so the face is S px wide
(the LFW crops' face is ~85% of the image width) and set in a plain frame, then MTCNN, the
landmarker and the FER model exactly as ``Pipeline`` configures them (``FaceStep`` is the same
code), and the gate's judgement on each face.

Prints, per size: detected, landmarks found, median pupil distance, readable share, the FER
accuracy and 5-class macro-F1 (angry, happy, sad, surprise, neutral) over every detected face
and over the readable ones; then the same by pupil-distance band; and the pupil distance /
box width ratio at native size (``IOD_PER_BOX_WIDTH``).

    PYTHONPATH=. .venv/bin/python bench/readability_curve.py --per-class 60 [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIVE = ("angry", "happy", "sad", "surprise", "neutral")
SIZES = (12, 16, 20, 24, 32, 48, 64, 0)  # 0 = native (350 px image)
BLURS = (0.02, 0.04, 0.08)  # Gaussian sigma as a fraction of the face width, on the 64 px face (motion, focus)
FACE_FRAC = 0.85


def macro_f1(y: list[str], p: list[str], classes=FIVE) -> float:
    f1 = []
    for c in classes:
        tp = sum(1 for a, b in zip(y, p) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, p) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, p) if a == c and b != c)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1))


def sample(root: Path, per_class: int, seed: int = 0) -> list[tuple[Path, str]]:
    rows = list(csv.DictReader(open(root / "labels.csv")))
    rng = np.random.default_rng(seed)
    out = []
    for c in FIVE:
        files = [r["file"] for r in rows if r["label"] == c]
        for f in rng.permutation(files)[:per_class]:
            out.append((root / "images" / f, c))
    return out


def frame_for(img: np.ndarray, size: int, blur: float = 0.0) -> np.ndarray:
    """The image shrunk so its face is ``size`` px wide (blurred by ``blur`` x face width), in the middle
    of a plain frame 3x its size."""
    if size:
        w = max(4, int(round(size / FACE_FRAC)))
        img = cv2.resize(img, (w, w), interpolation=cv2.INTER_AREA)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur * (size or img.shape[1] * FACE_FRAC))
    h = img.shape[0]
    side = max(3 * h, 160)
    canvas = np.full((side, side, 3), 110, np.uint8)
    o = (side - h) // 2
    canvas[o : o + h, o : o + h] = img
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "fixtures" / "expressions"))
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from affectline.settings import Settings
    from affectline.types import EXPRESSION_CLASSES
    from pipeline.analyse import _load_landmarker
    from pipeline.faces import sharpness
    from recognition.detection import load_detector
    from recognition.face.expression import ExpressionModel
    from recognition.face.readability import iod_from_landmarks, judge

    s = Settings(torch_threads=1)
    det = load_detector(s.detector, s, device="cpu")
    lmk = _load_landmarker(s, "cpu")
    fer = ExpressionModel.load(s, device="cpu")
    items = sample(Path(args.data), args.per_class)
    rec: list[dict] = []
    t0 = time.perf_counter()
    for path, label in items:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for size, blur in [(z, 0.0) for z in SIZES] + [(64, b) for b in BLURS]:
            frame = frame_for(img, size, blur)
            d = det.detect([frame])[0]
            if not len(d):
                rec.append({"size": size, "blur": blur, "label": label, "detected": False})
                continue
            c = np.array([frame.shape[1] / 2, frame.shape[0] / 2])
            d = d[[int(np.argmin(np.linalg.norm(d.centers - c, axis=1)))]]  # the face in the middle
            lm = lmk.analyze(frame, d)
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            sharp = np.array([sharpness(gray, d.boxes[0])], np.float32)
            iod = iod_from_landmarks(lm.landmarks)
            r = judge(d.boxes, lm.found, lm.pose, sharp, iod)
            p = fer.predict(frame, d)[0]
            rec.append({"size": size, "blur": blur, "label": label, "detected": True, "found": bool(lm.found[0]),
                        "box_w": float(d.widths[0]), "iod": float(r.iod[0]), "iod_lm": float(iod[0]),
                        "yaw": float(lm.pose[0, 0]), "pitch": float(lm.pose[0, 1]), "sharp": float(sharp[0]),
                        "readable": bool(r.readable[0]), "reason": r.reason[0],
                        "pred": EXPRESSION_CLASSES[int(np.nanargmax(p))] if np.isfinite(p).all() else ""})  # fmt: skip
    took = time.perf_counter() - t0

    def line(name: str, rs: list[dict]) -> dict:
        det_ = [r for r in rs if r["detected"]]
        rd = [r for r in det_ if r["readable"]]
        out = {"name": name, "n": len(rs), "detected": len(det_),
               "found": sum(r["found"] for r in det_) / max(len(det_), 1),
               "median_iod": float(np.median([r["iod"] for r in det_])) if det_ else float("nan"),
               "median_sharp": float(np.median([r["sharp"] for r in det_])) if det_ else float("nan"),
               "readable": len(rd) / max(len(det_), 1),
               "acc_all": float(np.mean([r["pred"] == r["label"] for r in det_])) if det_ else float("nan"),
               "f1_all": macro_f1([r["label"] for r in det_], [r["pred"] for r in det_]) if det_ else float("nan"),
               "acc_readable": float(np.mean([r["pred"] == r["label"] for r in rd])) if rd else float("nan"),
               "f1_readable": macro_f1([r["label"] for r in rd], [r["pred"] for r in rd]) if rd else float("nan")}  # fmt: skip
        return out

    head = f"{'':>12} {'n':>4} {'det':>4} {'lm':>5} {'iod':>5} {'sharp':>6} {'read':>5} {'acc':>5} {'F1':>5} {'acc|r':>5} {'F1|r':>5}"
    fmt = "{name:>12} {n:>4} {detected:>4} {found:5.2f} {median_iod:5.1f} {median_sharp:6.0f} {readable:5.2f} {acc_all:5.2f} {f1_all:5.2f} {acc_readable:5.2f} {f1_readable:5.2f}"
    print(f"{len(items)} images x {len(SIZES)} sizes in {took:.0f} s; chance accuracy 0.20 (5 balanced classes)")
    print("by face width (px):")
    print(head)
    by_size = [line(f"{s} px" if s else "native", [r for r in rec if r["size"] == s and not r["blur"]]) for s in SIZES]
    by_size += [line(f"64 blur{b:g}", [r for r in rec if r["size"] == 64 and r["blur"] == b]) for b in BLURS]
    for row in by_size:
        print(fmt.format(**row))
    print("by pupil distance (px, landmarks where found, else 0.40 x box width), every size pooled:")
    print(head)
    bands = [(0, 5), (5, 7), (7, 9), (9, 11), (11, 14), (14, 20), (20, 30), (30, 1e9)]
    det_all = [r for r in rec if r["detected"] and not r["blur"]]
    by_iod = [line(f"{a:g}-{b:g}" if b < 1e9 else f">={a:g}", [r for r in det_all if a <= r["iod"] < b]) for a, b in bands]
    for row in by_iod:
        if row["n"]:
            print(fmt.format(**row))
    print("by sharpness (Laplacian variance of the 64 px grey crop), faces of pupil distance >= 10 px, blurred ones included:")
    print(head)
    big = [r for r in rec if r["detected"] and r["iod"] >= 10]
    sbands = [(0, 10), (10, 20), (20, 40), (40, 80), (80, 160), (160, 1e9)]
    by_sharp = [line(f"{a:g}-{b:g}" if b < 1e9 else f">={a:g}", [r for r in big if a <= r["sharp"] < b]) for a, b in sbands]
    for row in by_sharp:
        if row["n"]:
            print(fmt.format(**row))
    nat = [r for r in rec if r["size"] == 0 and not r["blur"] and r["detected"] and r["found"] and np.isfinite(r["iod_lm"])]
    ratio = float(np.median([r["iod_lm"] / r["box_w"] for r in nat])) if nat else float("nan")
    print(f"pupil distance / MTCNN box width at native size: median {ratio:.3f} over {len(nat)} faces")
    if args.json:
        Path(args.json).write_text(json.dumps({"by_size": by_size, "by_iod": by_iod, "by_sharpness": by_sharp, "iod_per_box_width": ratio,
                                               "records": rec}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
