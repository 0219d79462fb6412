"""``affectline eval expressions DIR``: the pipeline's own face code over labelled face images.

Each image (``DIR/labels.csv``: ``file,label`` with FER2013 names) is scored as the pipeline
would score it in a recording, per face size:
  * native: the image itself is the frame;
  * S px (16, 24, 32, 48, 64): the image is shrunk so its face (the detector's box width on
    the native image) is S px wide and pasted in the middle of a mid-grey 1920 x 1080 frame:
    a student at the back of a 1080p classroom.
The frame goes through the pipeline's detector (a whole-frame search, as at the start of a
track), then the pipeline's ``FaceStep`` (landmarks, blendshapes, pose, the expression model,
sharpness) and the readability gate. Nothing here re-implements those steps: it builds a
``Pipeline`` from the settings and calls its parts.

With ``cv`` (``--cv K``) the figures are out-of-fold: the model's head (the small calibrated head over
the networks' logits, blendshapes and pose, fitted on the development set) is refitted K times with its
own recipe, each time without one identity-grouped fold, on the head's inputs exactly as the face step
computed them here, and scores only that held-out fold (its temperature fitted within the training
folds): no person is scored by a head or a temperature that saw them. Detection, crops, networks and
gate are the pipeline's, unchanged; only the head's weights differ per fold.

The detector's whole-frame search on a 1080p frame is the slow part (~0.4 s on one core); with
``cache`` the chosen face of each (image, size, detector settings) is kept in a file and the next
run (another expression model, another gate) reuses it: the same boxes the detector gave.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from affectline.types import EXPRESSION_CLASSES, Detections
from recognition.evaluation.expressions import Scores, score

SIZES: tuple[int | None, ...] = (16, 24, 32, 48, 64, None)  # None = native
FRAME_HW = (1080, 1920)
GREY = 128


class EvalInputError(ValueError):
    """The folder, its labels.csv or an image in it is not usable (one line says which and why)."""


@dataclass(frozen=True)
class Labelled:
    file: str
    label: int  # index into EXPRESSION_CLASSES
    identity: str  # the name before the last _NNNN (LFW naming): folds are grouped by it


def identity_of(file: str) -> str:
    stem = Path(file).stem
    head, _, tail = stem.rpartition("_")
    return head if head and tail.isdigit() else stem


def read_labels(folder: Path) -> list[Labelled]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalInputError(f"{folder}: not a folder")
    path = folder / "labels.csv"
    if not path.is_file():
        raise EvalInputError(f"{path}: missing (expected a labels.csv with columns file,label)")
    out: list[Labelled] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise EvalInputError(f"{path}: header must have columns file,label, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in EXPRESSION_CLASSES:
                raise EvalInputError(f"{path} line {line}: label {row['label']!r} is not one of {', '.join(EXPRESSION_CLASSES)}")
            name = (row["file"] or "").strip()
            if not name:
                raise EvalInputError(f"{path} line {line}: empty file name")
            out.append(Labelled(name, EXPRESSION_CLASSES.index(label), identity_of(name)))
    if not out:
        raise EvalInputError(f"{path}: no labelled rows")
    return out


def subsample(items: list[Labelled], n: int | None, seed: int = 0) -> list[Labelled]:
    """A seeded sample of ``n`` images, each class in its share (at least one each), in file order.

    The whole-frame 1080p search costs ~0.4 s of CPU a frame, so the per-size curve is measured
    on a sample; native faces (cheap) can be scored on every image."""
    if n is None or n >= len(items):
        return items
    rng = np.random.default_rng(seed)
    by: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        by.setdefault(it.label, []).append(i)
    keep: list[int] = []
    for label, idx in sorted(by.items()):
        k = max(1, round(n * len(idx) / len(items)))
        keep += list(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return [items[i] for i in sorted(keep)]


def image_path(folder: Path, item: Labelled) -> Path:
    """``file`` as given, else under ``images/`` (the fixture's layout)."""
    p = Path(folder) / item.file
    return p if p.is_file() else Path(folder) / "images" / item.file


def load_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EvalInputError(f"{path}: missing or not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def place(img: np.ndarray, native_width: float, size: int | None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The frame for one face size and where the image lies in it (x0, y0, x1, y1).

    size None: the image itself. Else the image shrunk (area interpolation, as a camera's
    pixels average the scene) so the face is ``size`` px wide, in a mid-grey 1080p frame."""
    h, w = img.shape[:2]
    if size is None:
        return img, (0, 0, w, h)
    f = size / native_width
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    H, W = FRAME_HW
    frame = np.full((H, W, 3), GREY, np.uint8)
    y0, x0 = (H - sh) // 2, (W - sw) // 2
    frame[y0 : y0 + sh, x0 : x0 + sw] = small
    return frame, (x0, y0, x0 + sw, y0 + sh)


def pick(dets: Detections, rect: tuple[int, int, int, int]) -> int | None:
    """The detection that is the pasted face: most of it inside the image's rectangle, the largest such."""
    if len(dets) == 0:
        return None
    b = dets.boxes
    x0, y0, x1, y1 = rect
    iw = np.clip(np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0), 0, None)
    ih = np.clip(np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0), 0, None)
    area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    inside = iw * ih / area >= 0.5
    if not inside.any():
        return None
    return int(np.flatnonzero(inside)[np.argmax(area[inside])])


class DetectionCache:
    """The picked face per (image bytes, size, detector settings), as a JSON file."""

    def __init__(self, path: Path | None, detector_key: str) -> None:
        self.path, self.key = (Path(path) if path else None), detector_key
        self.rows: dict[str, dict | None] = {}
        if self.path and self.path.is_file():
            self.rows = json.loads(self.path.read_text())

    def _k(self, digest: str, size: int | None) -> str:
        return f"{self.key}|{digest}|{size or 'native'}"

    def get(self, digest: str, size: int | None) -> tuple[bool, Detections | None]:
        k = self._k(digest, size)
        if k not in self.rows:
            return False, None
        r = self.rows[k]
        if r is None:
            return True, None
        data = {name: np.asarray(v, np.float32)[None] for name, v in r["data"].items()}
        return True, Detections(np.asarray(r["box"], np.float32)[None], np.asarray([r["score"]], np.float32), data=data)

    def put(self, digest: str, size: int | None, det: Detections | None) -> None:
        self.rows[self._k(digest, size)] = None if det is None else {
            "box": det.boxes[0].tolist(), "score": float(det.scores[0]),
            "data": {k: np.asarray(v[0]).tolist() for k, v in det.data.items()},
        }  # fmt: skip

    def save(self) -> None:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".part")
            tmp.write_text(json.dumps(self.rows))
            tmp.replace(self.path)


def detector_key(settings) -> str:
    return f"{settings.detector}:{settings.min_face_px}:{settings.min_face_frac:.6f}"


@dataclass
class FaceOutcome:
    """What the pipeline made of one labelled image at one size."""

    detected: bool
    readable: bool
    reason: str  # "" readable, a gate reason, or "not_detected"
    probs: np.ndarray  # (7,) NaN when not readable
    box: np.ndarray | None = None
    feats: dict[str, np.ndarray] | None = None  # the head's inputs (one row each), when collected for --cv


def judge_rows(dets: Detections, rows, params=None):
    """The readability gate on a FaceStep's rows, as the pipeline applies it."""
    from recognition.face.readability import ReadabilityParams, judge

    if hasattr(rows, "readability") and rows.readability is not None:
        return rows.readability
    return judge(dets.boxes, rows.found, rows.pose, rows.sharp, getattr(rows, "iod", None), params or ReadabilityParams())


class Evaluator:
    """The pipeline's detector, face step and gate over labelled images (see the module docstring)."""

    def __init__(self, pipeline, cache: DetectionCache, gate_params=None, collect: bool = False) -> None:
        self.pipeline, self.cache, self.gate_params, self.collect = pipeline, cache, gate_params, collect

    def detect(self, frame: np.ndarray, rect, digest: str, size: int | None) -> Detections | None:
        hit, det = self.cache.get(digest, size)
        if hit:
            return det
        dets = self.pipeline.detector.detect([frame])[0]
        i = pick(dets, rect)
        det = None if i is None else dets[np.array([i])]
        self.cache.put(digest, size, det)
        return det

    def run_image(self, img: np.ndarray, digest: str, sizes: Sequence[int | None]) -> dict[int | None, FaceOutcome]:
        nan = np.full(len(EXPRESSION_CLASSES), np.nan, np.float32)
        native = self.detect(img, (0, 0, img.shape[1], img.shape[0]), digest, None)
        out: dict[int | None, FaceOutcome] = {}
        for size in sizes:
            if native is None:  # no face found on the image itself: nothing to scale it by
                out[size] = FaceOutcome(False, False, "not_detected", nan)
                continue
            width = float(native.boxes[0, 2] - native.boxes[0, 0])
            frame, rect = place(img, width, size)
            det = native if size is None else self.detect(frame, rect, digest, size)
            if det is None:
                out[size] = FaceOutcome(False, False, "not_detected", nan)
                continue
            seen: list[dict[str, np.ndarray]] = []
            model = self.pipeline.faces.expression
            if self.collect:  # the head's inputs as the face step computes them (``CalibratedExpressionModel.tap``)
                model.tap = lambda feats, valid: seen.append({b: v[:1].copy() for b, v in feats.items()} if valid.any() else {})
            try:
                rows = self.pipeline.faces.run([frame], [det])[0]
            finally:
                if self.collect:
                    model.tap = None
            gate = judge_rows(det, rows, self.gate_params)
            ok = bool(gate.readable[0])
            feats = seen[0] if ok and seen and seen[0] else None
            out[size] = FaceOutcome(True, ok, gate.reason[0], rows.expr[0] if ok else nan, det.boxes[0], feats)
        return out


def size_name(size: int | None) -> str:
    return "native" if size is None else f"{size}px"


def evaluate(folder: Path, pipeline, sizes: Sequence[int | None] = SIZES, cache_path: Path | None = None,
             threshold: float = 0.5, sample: int | None = None,
             progress: Callable[[int, int], None] | None = None, cv: int | None = None) -> dict[str, Scores]:  # fmt: skip
    """Scores per face size name ("16px" ... "native") and "all" (every size pooled).

    cv: K identity-grouped folds: the head is refitted per fold and each face scored out of fold
    (``out_of_fold``); the pipeline's expression model must be a calibrated head."""
    items = subsample(read_labels(folder), sample)
    paths = [image_path(folder, it) for it in items]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise EvalInputError(f"{missing[0]}: listed in labels.csv but missing ({len(missing)} missing in all)")
    if cv is not None and not hasattr(pipeline.faces.expression, "head"):
        raise EvalInputError(f"--cv refits a calibrated head; the expression model {pipeline.expression_name} has none "
                             "(AFFECTLINE_EXPRESSION_MODEL=calibrated or calibrated_ensemble)")  # fmt: skip
    if cv is not None and len({it.identity for it in items}) < cv:
        raise EvalInputError(f"{folder}: --cv {cv} needs at least {cv} identities, the images have {len({it.identity for it in items})}")
    cache = DetectionCache(cache_path, detector_key(pipeline.settings))
    ev = Evaluator(pipeline, cache, collect=cv is not None)
    outcomes: dict[int | None, list[FaceOutcome]] = {s: [] for s in sizes}
    try:
        for i, (it, p) in enumerate(zip(items, paths)):
            raw = p.read_bytes()
            img = load_image(p)
            for s, o in ev.run_image(img, hashlib.sha1(raw).hexdigest(), sizes).items():
                outcomes[s].append(o)
            if progress:
                progress(i + 1, len(items))
            if cache_path and (i + 1) % 50 == 0:
                cache.save()
    finally:
        cache.save()
    y = np.array([it.label for it in items])
    if cv is not None:
        out_of_fold(items, outcomes, pipeline.faces.expression.head, cv)
    result: dict[str, Scores] = {}
    for s in sizes:
        os_ = outcomes[s]
        result[size_name(s)] = _scores(y, os_, threshold)
    pooled = [o for s in sizes for o in outcomes[s]]
    result["all"] = _scores(np.tile(y, len(sizes)), pooled, threshold)
    return result


def out_of_fold(items: Sequence[Labelled], outcomes: dict[int | None, list[FaceOutcome]], head, k: int,
                seed: int = 0) -> None:  # fmt: skip
    """Replace each readable face's probabilities by those of ``head``'s recipe refitted without its fold.

    Folds are whole identities (``group_folds`` over the images' people), the same at every size, so
    a person's 24 px copy never trains the head that scores their native face. Per fold the head is
    fitted (``fit_head``: its blocks, L2 strength and class weights, its temperature from inner grouped
    folds of the training part only) on every evaluated size's readable faces of the other folds."""
    from threadpoolctl import threadpool_limits

    from recognition.face.expression_head import fit_head, group_folds

    ident = np.array([it.identity for it in items])
    fold_of_item = group_folds(ident, k, seed)
    rows = [(s, j) for s, outs in outcomes.items() for j, o in enumerate(outs) if o.readable and o.feats]
    if not rows:
        return
    feats = {b: np.concatenate([outcomes[s][j].feats[b] for s, j in rows]) for b in head.blocks}
    y = np.array([items[j].label for _, j in rows])
    g = ident[[j for _, j in rows]]
    fold = fold_of_item[[j for _, j in rows]]
    probs = np.zeros((len(rows), len(EXPRESSION_CLASSES)), np.float32)
    for f in range(k):
        te = fold == f
        if not te.any():
            continue
        inner = min(5, len(set(g[~te])))
        with threadpool_limits(1):  # BLAS threads on a busy 2-core machine only wait for each other
            h, _ = fit_head({b: v[~te] for b, v in feats.items()}, y[~te], g[~te], head.blocks, c=head.c,
                            class_power=head.class_power, k=inner, seed=seed)  # fmt: skip
        probs[te] = h.probs({b: v[te] for b, v in feats.items()})
    for (s, j), p in zip(rows, probs):
        outcomes[s][j].probs = p


def _scores(y: np.ndarray, outs: list[FaceOutcome], threshold: float) -> Scores:
    probs = np.stack([o.probs for o in outs]) if outs else np.zeros((0, len(EXPRESSION_CLASSES)))
    reasons = Counter(o.reason for o in outs if not o.readable)
    return score(y, probs, np.array([o.readable for o in outs], bool), threshold, dict(reasons),
                 detected=np.array([o.detected for o in outs], bool))  # fmt: skip


def table(result: dict[str, Scores]) -> str:
    """The figures as a plain-text table, one row per face size. ``cover``: faces given an expression
    (detected and readable) / labelled images; ``conf``: those also at or above the uncertain threshold
    / labelled images; ``acc≥t``: the accuracy of the latter."""
    head = f"{'size':>7} {'faces':>5} {'read':>5} {'cover':>5} {'acc':>5} {'F1(5)':>5} {'F1(7)':>5} {'ECE':>5} {'conf':>5} {'acc≥t':>5}  " + " ".join(
        f"{c[:4]:>4}" for c in EXPRESSION_CLASSES
    )
    lines = [head + "   (recall per class)"]
    for name, r in result.items():
        f = lambda v: "  -  " if not np.isfinite(v) else f"{v:5.2f}"  # noqa: E731
        rec = " ".join("  - " if not np.isfinite(r.recall[c]) else f"{r.recall[c]:4.2f}" for c in EXPRESSION_CLASSES)
        lines.append(f"{name:>7} {r.faces:5d} {r.readable:5d} {f(r.coverage)} {f(r.accuracy)} {f(r.macro_f1_5)} "
                     f"{f(r.macro_f1_7)} {f(r.ece)} {f(r.confident)} {f(r.accuracy_answered)}  {rec}")  # fmt: skip
    native = result.get("native")
    if native is not None:
        lines.append("")
        lines.append("confusion at native size (rows true, columns predicted: " + ", ".join(c[:4] for c in EXPRESSION_CLASSES) + ")")
        for c, row in zip(EXPRESSION_CLASSES, native.confusion):
            lines.append(f"{c:>9} " + " ".join(f"{v:4d}" for v in row))
    reasons = {name: r.reasons for name, r in result.items() if r.reasons and name != "all"}
    if reasons:
        lines.append("")
        lines.append("not read, per reason: " + "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(rs.items())) for n, rs in reasons.items()))
    return "\n".join(lines)
