"""Real-face test material: annotated frames of data/media and sequences built from real photos.

The sequences paste face crops of ``group_multiface.jpg`` (six real people, boxes from
``tests/fixtures/faces_gt.json``) onto a plain background with a feathered elliptical
mask and move them over time, so the detector, the embedder and the tracker all see
real faces while the ground truth (who is where) is known exactly.

Everything expensive is cached per process (``lru_cache``), so test modules that share
a pytest run detect each frame once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from tests.paths import MEDIA  # noqa: E402
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@lru_cache(maxsize=1)
def face_annotations() -> dict:
    return json.loads((FIXTURES / "faces_gt.json").read_text())


def annotated(media: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{frame index: (faces (n, 4), hard (m, 4))} for one media file of faces_gt.json."""
    frames = face_annotations()["media"][media]
    return {
        int(i): (np.array(v["faces"], np.float32).reshape(-1, 4), np.array(v["hard"], np.float32).reshape(-1, 4))
        for i, v in frames.items()
    }


def read_image(name: str) -> np.ndarray:
    img = cv2.imread(str(MEDIA / name), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read {MEDIA / name}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_frames(name: str, indices: list[int] | None = None, scale: float = 1.0) -> tuple[list[np.ndarray], float]:
    """RGB frames of a shared video (all, or ``indices``), resized by ``scale``; returns (frames, fps)."""
    import decord

    vr = decord.VideoReader(str(MEDIA / name))
    idx = list(range(len(vr))) if indices is None else list(indices)
    batch = vr.get_batch(idx).asnumpy()
    frames = [
        f if scale == 1.0 else cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in batch
    ]
    return frames, float(vr.get_avg_fps())


# -- sequences made of real faces ----------------------------------------------------------


@dataclass
class FaceSprite:
    """A real face cut from a photo, with the face box inside the cut-out."""

    image: np.ndarray  # RGB crop with margin
    face: np.ndarray  # (4,) face box in crop coordinates
    person: int


@lru_cache(maxsize=1)
def group_sprites(margin: float = 0.45) -> tuple[FaceSprite, ...]:
    """The six people of group_multiface.jpg, each cut with ``margin`` face sizes around the face."""
    img = read_image("group_multiface.jpg")
    faces, _ = annotated("group_multiface.jpg")[0]
    out = []
    for k, (x1, y1, x2, y2) in enumerate(faces):
        w, h = x2 - x1, y2 - y1
        cx1, cy1 = int(max(0, x1 - margin * w)), int(max(0, y1 - margin * h))
        cx2, cy2 = int(min(img.shape[1], x2 + margin * w)), int(min(img.shape[0], y2 + margin * h))
        out.append(FaceSprite(img[cy1:cy2, cx1:cx2].copy(), np.array([x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1]), k))
    return tuple(out)


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A plain wall: a soft vertical gradient with mild noise (no face-like structure)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 115, h)[:, None, None] * np.array([1.0, 0.97, 0.92])[None, None, :]
    img = np.broadcast_to(ramp, (h, w, 3)) + rng.normal(0, 3, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def paste(canvas: np.ndarray, sprite: FaceSprite, cx: float, cy: float, face_w: float, brightness: float = 1.0):
    """Paste ``sprite`` so its face is ``face_w`` wide and centred at (cx, cy); return the face box or None if off-frame."""
    s = face_w / (sprite.face[2] - sprite.face[0])
    img = cv2.resize(sprite.image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    img = (img.astype(np.float32) * brightness).clip(0, 255)
    fx1, fy1, fx2, fy2 = sprite.face * s
    ox, oy = round(cx - (fx1 + fx2) / 2), round(cy - (fy1 + fy2) / 2)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    # Feathered ellipse: no hard rectangle edges for the detector to latch onto.
    r = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    alpha = np.clip((1.0 - r) / 0.25, 0, 1)[..., None]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, W), min(oy + h, H)
    if x1 <= x0 or y1 <= y0:
        return None
    sub = canvas[y0:y1, x0:x1].astype(np.float32)
    a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    canvas[y0:y1, x0:x1] = (a * img[y0 - oy : y1 - oy, x0 - ox : x1 - ox] + (1 - a) * sub).astype(np.uint8)
    box = np.array([ox + fx1, oy + fy1, ox + fx2, oy + fy2], np.float32)
    visible = (min(box[2], W) - max(box[0], 0)) / (box[2] - box[0])
    return box if visible > 0.6 else None


@dataclass
class Sequence:
    """Frames with exact ground truth: per frame, face boxes and the person each belongs to."""

    frames: list[np.ndarray]
    times: np.ndarray
    gt_boxes: list[np.ndarray] = field(default_factory=list)
    gt_person: list[np.ndarray] = field(default_factory=list)


def render(
    paths: dict[int, list[tuple[float, float, float, float] | None]], size=(360, 640), fps=5.0, seed=0
) -> Sequence:
    """Render people along paths {person: [(cx, cy, face_w, brightness) or None per frame]}.

    Later people in ``paths`` are pasted over earlier ones (they walk in front).
    """
    sprites = group_sprites()
    n = len(next(iter(paths.values())))
    bg = background(*size, seed=seed)
    seq = Sequence([], np.arange(n) / fps)
    for i in range(n):
        canvas = bg.copy()
        boxes, people = [], []
        for person, path in paths.items():
            if path[i] is None:
                continue
            box = paste(canvas, sprites[person], *path[i])
            if box is not None:
                boxes.append(box)
                people.append(person)
        seq.frames.append(canvas)
        seq.gt_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        seq.gt_person.append(np.array(people, np.int64))
    return seq


def leave_and_return(n: int = 40, fps: float = 5.0) -> Sequence:
    """Person 0 sits left, person 2 walks right out of the frame, stays out 2.4 s, walks back in smaller and darker.

    Ground truth: two people; person 2 must keep one id across the absence.
    """
    a = [(150.0 + 3 * np.sin(i / 3), 170.0, 70.0, 1.0) for i in range(n)]
    b: list = []
    for i in range(n):
        if i < 14:  # walks right and out
            b.append((380.0 + 25 * i, 180.0, 66.0, 1.0))
        elif i < 26:  # away 12 frames = 2.4 s
            b.append(None)
        else:  # comes back from the right, further away, in other light
            b.append((660.0 - 20 * (i - 26), 190.0, 56.0, 0.85))
    return render({0: a, 2: b}, fps=fps)


def crossing(n: int = 30, fps: float = 5.0) -> Sequence:
    """Persons 1 and 4 walk towards each other at one height and cross; 4 passes in front of 1."""
    one = [(80.0 + 16 * i, 180.0, 64.0, 1.0) for i in range(n)]
    four = [(560.0 - 16 * i, 186.0, 64.0, 1.0) for i in range(n)]
    return render({1: one, 4: four}, fps=fps)


def meet_and_turn_back(fps: float = 5.0) -> Sequence:
    """Persons 1 and 4 walk towards each other, stand together 0.6 s (4 hides 1), and both turn back.

    Motion alone predicts person 1 walking on through person 4, so only appearance keeps ids.
    """
    walk = list(range(8))  # 8 frames towards the middle
    x1 = [160.0 + 23 * k for k in walk] + [322.0] * 3 + [322.0 - 23 * k for k in range(1, 10)]
    x4 = [480.0 - 23 * k for k in walk] + [318.0] * 3 + [318.0 + 23 * k for k in range(1, 10)]
    return render({1: [(x, 180.0, 64.0, 1.0) for x in x1], 4: [(x, 184.0, 64.0, 1.0) for x in x4]}, fps=fps)


def classroom_frames(n_faces: int = 30, n_frames: int = 12, fps: float = 4.0, size=(1080, 1920), seed: int = 1):
    """Yield (frame, face boxes) of ``n_faces`` seated people on a grid (the six real faces
    repeated, some mirrored), swaying slightly; one frame at a time, so long clips stay small."""
    sprites = list(group_sprites())
    sprites += [
        FaceSprite(
            s.image[:, ::-1].copy(),
            np.array([s.image.shape[1] - s.face[2], s.face[1], s.image.shape[1] - s.face[0], s.face[3]]),
            s.person + 6,
        )
        for s in group_sprites()
    ]
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n_faces * size[1] / size[0])))
    rows = int(np.ceil(n_faces / cols))
    h, w = size
    bg = background(h, w, seed=seed)
    base = [
        ((c + 0.5) * w / cols, (r + 0.5) * h / rows, float(rng.uniform(40, 70)))
        for r in range(rows)
        for c in range(cols)
    ][:n_faces]
    phase = rng.uniform(0, 2 * np.pi, n_faces)
    for i in range(n_frames):
        t = i / fps
        canvas = bg.copy()
        boxes = []
        for k, (cx, cy, fw) in enumerate(base):
            # Sway: 6 px sideways at 2 rad/s, 3 px up and down at 4/3 rad/s.
            box = paste(canvas, sprites[k % len(sprites)], cx + 6 * np.sin(2 * t + phase[k]),
                        cy + 3 * np.cos(4 * t / 3 + phase[k]), fw)  # fmt: skip
            boxes.append(box)
        yield canvas, np.array(boxes, np.float32).reshape(-1, 4)


def classroom_of(n_faces: int = 30, n_frames: int = 12, fps: float = 4.0, size=(1080, 1920), seed: int = 1) -> Sequence:
    """``classroom_frames`` as a ``Sequence`` in memory (short clips)."""
    seq = Sequence([], np.arange(n_frames) / fps)
    for frame, boxes in classroom_frames(n_faces, n_frames, fps, size, seed):
        seq.frames.append(frame)
        seq.gt_boxes.append(boxes)
        seq.gt_person.append(np.arange(n_faces))
    return seq


# -- running the recognition stack over a sequence ---------------------------------------


@dataclass
class TrackRun:
    """Per frame: detections with online ids; after finish: summaries."""

    dets: list  # list[Detections] with track_id filled
    summaries: list
    embedded: int  # faces embedded
    rows: int  # faces detected


def run_tracker(frames, times, detections, embedder, config=None, embed_all: bool = False) -> TrackRun:
    """Track precomputed ``detections`` over ``frames``, embedding only what the tracker asks for
    (the pipeline's own per-frame rule, ``recognition.tracking.follow.embed_then_update``)."""
    from pipeline.faces import embed_one_frame
    from recognition.tracking import Tracker
    from recognition.tracking.follow import embed_then_update

    tr, embed = Tracker(config), embed_one_frame(embedder)
    out, embedded, rows = [], 0, 0
    for frame, t, d in zip(frames, times, detections):
        d, n = embed_then_update(tr, embed, frame, float(t), d, embed_all=embed_all)
        embedded += n
        rows += len(d)
        out.append(d)
    return TrackRun(out, tr.finish(), embedded, rows)


def sequence_figures(seq: Sequence, run: TrackRun):
    """Identity figures of a tracker run on a sequence with exact ground truth (final ids)."""
    from recognition.tracking.evaluate import final_ids, identity_figures, label_rows

    t, p, k = [], [], []
    for time, d, gb, gp in zip(seq.times, run.dets, seq.gt_boxes, seq.gt_person):
        t += [time] * len(d)
        p += label_rows(d.boxes, gb, gp).tolist()
        k += final_ids(d.track_id, run.summaries).tolist()
    return identity_figures(np.array(t), np.array(p), np.array(k))


# -- the crowd video ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def crowd_people() -> dict:
    return json.loads((FIXTURES / "crowd_people.json").read_text())


@lru_cache(maxsize=2)
def mtcnn(min_face_px: int = 12):
    """One MTCNN detector per process (and minimum face size), shared by the test modules."""
    from affectline.settings import Settings
    from recognition.detection import load_detector

    return load_detector("mtcnn", Settings(min_face_px=min_face_px))


@lru_cache(maxsize=1)
def embedder():
    from recognition.reid import FaceEmbedder

    return FaceEmbedder()


@lru_cache(maxsize=8)
def detected(name: str):
    """A built sequence (``leave_and_return``, ``crossing``, ...) and its MTCNN detections."""
    seq = globals()[name]()
    return seq, mtcnn().detect(seq.frames)


# What the tests track: the crowd at 3/4 size (faces 19-95 px) every 5th frame (5 fps, close to the
# default 4 fps); MTCNN searches from 16 px there, 21 px at full size (the smallest crowd face is 25 px).
CROWD = {"scale": 0.75, "step": 5, "min_face_px": 16}


@lru_cache(maxsize=4)
def crowd_detections(scale: float = 0.75, step: int = 5, min_face_px: int = 12):
    """Frames (every ``step``-th, resized by ``scale``), their times, MTCNN detections and frame indices."""
    frames, fps = read_frames("crowd_walk_1080p.mp4", scale=scale)
    idx = list(range(0, len(frames), step))
    frames = [frames[i] for i in idx]
    return tuple(frames), np.array(idx) / fps, tuple(mtcnn(min_face_px).detect(frames)), tuple(idx)


def crowd_labels(dets, idx, scale: float) -> list[np.ndarray]:
    """Per frame, the person (index into faces_1s) of each detection at annotated keyframes; -1 elsewhere."""
    from recognition.tracking.evaluate import label_rows

    people = crowd_people()
    names = list(people["faces_1s"])
    out = []
    for d, i in zip(dets, idx):
        kf = people["keyframes"].get(str(i))
        if kf is None:
            out.append(np.full(len(d), -1, np.int64))
            continue
        boxes = np.array(list(kf.values()), np.float32) * scale
        out.append(label_rows(d.boxes, boxes, np.array([names.index(n) for n in kf])))
    return out
