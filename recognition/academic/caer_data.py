"""CLIP-CAER data: crops, TSN frame sampling, augmentations and a RAER-layout dataset.

A RAER-layout dataset is a label list, one clip per line::

    path num_frames label

``path`` is a folder of frame images (sorted by name) or a video file, relative to
the list's folder (or ``root``); ``label`` is 1-based in the order of
``affectline.types.ACADEMIC_CLASSES`` (1 = Neutrality ... 5 = Distraction).
Optional box files follow the official JSON shapes: face boxes
``{clip_path: {frame_name: [l, t, r, b]}}`` (for a video, frame_name is the frame
index as a string) and one context ("body") box per clip ``{clip_path: [l, t, r, b]}``.

Crops follow the official test-time pipeline exactly (see SPEC.md 4.1): the face
box widened by 20 px, clipped, resized bilinearly to a square ignoring aspect; the
context box letterboxed. Frames are uint8 RGB (H, W, 3) throughout.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FACE_MARGIN = 20
NUM_SEGMENTS = 16
FRAME_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ----------------------------------------------------------------------------- crops


def face_region(frame: np.ndarray, box: Sequence[float] | None, margin: int = FACE_MARGIN) -> np.ndarray:
    """The face box widened by ``margin`` px per side and clipped to the frame (not resized).

    ``box`` None (or containing NaN) means no detection: the whole frame, as in the
    official loader. Coordinates are truncated to int before widening, like the
    official code.
    """
    if box is None or not np.all(np.isfinite(box)):
        return frame
    h, w = frame.shape[:2]
    left, top, right, bottom = (int(v) for v in box)
    return frame[max(0, top - margin) : min(h, bottom + margin), max(0, left - margin) : min(w, right + margin)]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """PIL bilinear resize to size x size, aspect ignored (a no-op at that size)."""
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BILINEAR))


def face_crop(frame: np.ndarray, box: Sequence[float] | None, size: int, margin: int = FACE_MARGIN) -> np.ndarray:
    """Official face input: the widened, clipped box resized to size x size, ignoring aspect."""
    return resize_square(face_region(frame, box, margin), size)


def letterbox(frame: np.ndarray, size: int) -> np.ndarray:
    """Scale by min(size/w, size/h) with bilinear interpolation and centre on black (odd pixel bottom/right)."""
    import cv2

    h, w = frame.shape[:2]
    if (h, w) == (size, size):
        return frame
    r = min(size / w, size / h)
    nw, nh = max(1, int(w * r)), max(1, int(h * r))
    small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = small
    return out


def context_crop(frame: np.ndarray, box: Sequence[float] | None, size: int) -> np.ndarray:
    """The context ("body") box cropped and letterboxed; None = the whole frame.

    Cropping has PIL semantics (rounded coordinates, zero padding outside the frame).
    """
    if box is not None and np.all(np.isfinite(box)):
        frame = np.asarray(Image.fromarray(frame).crop(tuple(float(v) for v in box)))
    return letterbox(frame, size)


def fit_frames(frames: np.ndarray, size: int, stream: str) -> np.ndarray:
    """Bring (T, H, W, 3) uint8 crops to (T, size, size, 3): faces are resized, contexts letterboxed."""
    if frames.shape[1:3] == (size, size):
        return frames
    fit = resize_square if stream == "face" else letterbox
    return np.stack([fit(f, size) for f in frames])


# ----------------------------------------------------------------------------- sampling


def tsn_test_indices(n_frames: int, segments: int = NUM_SEGMENTS) -> np.ndarray:
    """Segment centres: int(tick/2 + tick*k), tick = n/segments; short clips repeat their last frame."""
    if n_frames > segments:
        tick = n_frames / segments
        return np.array([int(tick / 2.0 + tick * k) for k in range(segments)], dtype=np.int64)
    return np.pad(np.arange(n_frames, dtype=np.int64), (0, segments - n_frames), mode="edge")


def tsn_train_indices(
    n_frames: int, segments: int = NUM_SEGMENTS, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN training sampling: one random frame inside each of ``segments`` equal segments."""
    rng = rng or np.random.default_rng()
    seg = n_frames // segments
    if seg > 0:
        return np.arange(segments, dtype=np.int64) * seg + rng.integers(0, seg, size=segments)
    return np.pad(np.arange(n_frames, dtype=np.int64), (0, segments - n_frames), mode="edge")


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """The published training augmentation, drawn once per stream per clip.

    Official order: rotate the raw crops by one angle in [-max_degrees, max_degrees]
    (nearest neighbour, black fill), resize to the model size, then flip the whole
    clip horizontally with probability ``flip_p``. The face and context streams draw
    their angle and flip independently, as in the official loader.
    """

    max_degrees: float = 4.0
    flip_p: float = 0.5

    def __call__(self, crops: list[np.ndarray], size: int, rng: random.Random, resize) -> np.ndarray:
        angle = rng.uniform(-self.max_degrees, self.max_degrees)
        flip = rng.random() < self.flip_p
        out = []
        for c in crops:
            img = Image.fromarray(c).rotate(angle) if self.max_degrees else Image.fromarray(c)
            arr = resize(np.asarray(img), size)
            out.append(arr[:, ::-1] if flip else arr)
        return np.ascontiguousarray(np.stack(out))


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ClipRecord:
    """One labelled clip of a list file; ``label`` is 0-based.

    ``num_frames`` is kept as the list declares it; sampling uses the frames actually
    found (the official loader trusts the list, which only matters when they disagree).
    """

    path: Path
    key: str  # the path as written in the list (box files are keyed by it)
    num_frames: int
    label: int


def read_label_list(list_file: str | Path, root: str | Path | None = None, n_classes: int = 5) -> list[ClipRecord]:
    """Parse ``path num_frames label`` lines (1-based labels); blank lines and ``#`` comments are skipped."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"label list {list_file} does not exist")
    base = Path(root) if root is not None else list_file.parent
    out = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{list_file}:{n}: expected 'path num_frames label', got {line!r}")
        key, frames, label = parts
        try:
            frames_i, label_i = int(frames), int(label)
        except ValueError:
            raise ValueError(f"{list_file}:{n}: num_frames and label must be integers, got {line!r}") from None
        if not 1 <= label_i <= n_classes:
            raise ValueError(f"{list_file}:{n}: label {label_i} is outside 1..{n_classes} (labels are 1-based)")
        path = Path(key) if Path(key).is_absolute() else base / key
        out.append(ClipRecord(path=path, key=key, num_frames=frames_i, label=label_i - 1))
    if not out:
        raise ValueError(f"label list {list_file} has no clips")
    return out


def split_validation(records: Sequence[ClipRecord], fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Stratified, deterministic train/validation split (at least one validation clip per class with >= 2 clips)."""
    rng = random.Random(seed)
    train, val = [], []
    for c in sorted({r.label for r in records}):
        members = [r for r in records if r.label == c]
        rng.shuffle(members)
        k = min(len(members) - 1, max(1, round(len(members) * fraction))) if len(members) > 1 else 0
        val += members[:k]
        train += members[k:]
    return train, val


def _load_boxes(path: str | Path | None) -> dict:
    if path is None:
        return {}
    with open(path) as f:
        return json.load(f)


class ClipReader:
    """Frames of one clip: a folder of images (sorted by name) or a short video file.

    Videos are decoded with decord; PyAV is the fallback for files decord mishandles
    (it fails on some narrow frame widths), decoding the whole clip once.
    """

    def __init__(self, path: Path):
        self.path = path
        self.files: list[Path] | None = None
        self._vr = None
        self._frames: list[np.ndarray] | None = None
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS)
            if not self.files:
                raise FileNotFoundError(f"clip folder {path} holds no frame images ({', '.join(sorted(FRAME_EXTS))})")
            self.names = [p.name for p in self.files]
            return
        if not path.is_file():
            raise FileNotFoundError(f"clip {path} is neither a frame folder nor a video file")
        import decord

        try:
            self._vr = decord.VideoReader(str(path))
            self._vr.get_batch([0])  # decord can open a file yet fail to copy its frames
            n = len(self._vr)
        except (decord.DECORDError, RuntimeError):
            self._vr = None
            self._frames = _decode_all_av(path)
            n = len(self._frames)
        if n == 0:
            raise ValueError(f"video {path} has no frames")
        self.names = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.names)

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        if self.files is not None:
            return [np.asarray(Image.open(self.files[i]).convert("RGB")) for i in indices]
        if self._vr is not None:
            return list(self._vr.get_batch([int(i) for i in indices]).asnumpy())
        return [self._frames[int(i)] for i in indices]


def _decode_all_av(path: Path) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise ValueError(f"video {path} cannot be decoded: {e}") from None


class CaerClipDataset:
    """A torch-style dataset over a RAER label list: item -> (face uint8 (T,S,S,3), context uint8 (T,S,S,3), label).

    ``train=True`` uses random TSN offsets and the published augmentation; otherwise
    segment centres and no augmentation. Outputs stay uint8: the model divides by 255
    on its own device, which keeps batches small.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        image_size: int = 224,
        segments: int = NUM_SEGMENTS,
        train: bool = False,
        face_boxes: str | Path | Mapping | None = None,
        context_boxes: str | Path | Mapping | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        self.records = list(records)
        self.size = image_size
        self.segments = segments
        self.train = train
        self.face_boxes = face_boxes if isinstance(face_boxes, Mapping) else _load_boxes(face_boxes)
        self.context_boxes = context_boxes if isinstance(context_boxes, Mapping) else _load_boxes(context_boxes)
        self.augment = (augment or Augment()) if train else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Random draws depend on (seed, epoch, index) only: reproducible, worker-independent and resumable."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _boxes_for(self, table: Mapping, rec: ClipRecord):
        return table.get(rec.key, table.get(str(rec.path)))

    def __getitem__(self, i: int):
        import torch

        rec = self.records[i]
        reader = ClipReader(rec.path)
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        n = len(reader)
        idx = (
            tsn_train_indices(n, self.segments, np.random.default_rng(rng.getrandbits(64)))
            if self.train
            else tsn_test_indices(n, self.segments)
        )
        frames = reader.frames(idx)
        face_table = self._boxes_for(self.face_boxes, rec) or {}
        ctx_box = self._boxes_for(self.context_boxes, rec)
        names = [reader.names[j] for j in idx]
        if self.augment is None:
            faces = np.stack([face_crop(f, face_table.get(nm), self.size) for f, nm in zip(frames, names)])
            ctxs = np.stack([context_crop(f, ctx_box, self.size) for f in frames])
        else:
            # Official order: crop (face unresized, context letterboxed), rotate, then resize.
            raw_faces = [face_region(f, face_table.get(nm)) for f, nm in zip(frames, names)]
            faces = self.augment(raw_faces, self.size, rng, resize_square)
            ctxs = self.augment([context_crop(f, ctx_box, self.size) for f in frames], self.size, rng, letterbox)
        return torch.from_numpy(faces), torch.from_numpy(ctxs), rec.label
