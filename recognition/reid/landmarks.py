"""dlib's 5-point face shape predictor (``shape_predictor_5_face_landmarks.dat``) in numpy.

The model is a cascade of regression-tree forests (Kazemi & Sullivan 2014) as in
``dlib/image_processing/shape_predictor.h``. At each cascade level the current shape
is matched to the mean shape by a similarity transform, feature pixels (anchored to a
landmark plus an offset) are read from the grey image at rounded positions, every
tree walks its splits (``I[a] - I[b] > thresh`` goes left) and the leaves' shape
increments are summed. Shapes live in the unit square of the face box; dlib maps (0,0)
to the box's top-left and (1,1) to its bottom-right corner (inclusive corners) and
rounds the final points to integers, as here.

This version runs all faces of a batch together (trees and faces vectorised), so it
needs neither dlib nor a per-face loop. The parsed model is cached as ``.npz`` beside
the torch weights, keyed by the .dat file's sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recognition.reid.dlib_format import DlibReader, file_sha256


@dataclass(frozen=True)
class ShapeModel:
    initial_shape: np.ndarray  # (P, 2) mean shape in unit-box coordinates
    anchor: np.ndarray  # (L, F) landmark each feature pixel hangs from, per cascade level
    deltas: np.ndarray  # (L, F, 2) offset of each feature pixel from its anchor (mean-shape frame)
    idx1: np.ndarray  # (L, T, S) split features (feature-pixel indices)
    idx2: np.ndarray  # (L, T, S)
    thresh: np.ndarray  # (L, T, S) float32
    leaves: np.ndarray  # (L, T, S+1, P*2) float32 shape increments

    @property
    def num_parts(self) -> int:
        return len(self.initial_shape)

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # one per process: workers may race
        np.savez(tmp, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        tmp.replace(path)  # atomic

    @classmethod
    def load(cls, path: Path) -> "ShapeModel":
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


def parse_shape_predictor(data: bytes, name: str = "shape_predictor.dat") -> ShapeModel:
    """A dlib shape predictor from the bytes of its .dat file."""
    r = DlibReader(data, name)
    r.expect_int(1)
    init = r.matrix().astype(np.float32).ravel()
    n_levels = r.int()
    idx1, idx2, thresh, leaves = [], [], [], []
    for _ in range(n_levels):
        n_trees = r.int()
        li1, li2, lth, lleaf = [], [], [], []
        for _ in range(n_trees):
            n_splits = r.int()
            s = [(r.int(), r.int(), r.float()) for _ in range(n_splits)]
            n_leaves = r.int()
            if n_leaves != n_splits + 1:
                raise r.fail(f"tree with {n_splits} splits and {n_leaves} leaves is not full")
            lleaf.append(np.stack([r.matrix().ravel() for _ in range(n_leaves)]))
            li1.append([a for a, _, _ in s]), li2.append([b for _, b, _ in s]), lth.append([t for _, _, t in s])
        idx1.append(li1), idx2.append(li2), thresh.append(lth), leaves.append(lleaf)
    anchor = []
    for _ in range(r.expect_int(n_levels, what="anchor level count")):
        anchor.append([r.int() for _ in range(r.int())])
    deltas = []
    for _ in range(r.expect_int(n_levels, what="delta level count")):
        n = r.int()
        deltas.append(r.floats(2 * n).reshape(n, 2))
    if not r.at_end():
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the shape predictor")
    try:
        return ShapeModel(
            initial_shape=init.reshape(-1, 2),
            anchor=np.asarray(anchor, np.int64),
            deltas=np.asarray(deltas, np.float32),
            idx1=np.asarray(idx1, np.int64),
            idx2=np.asarray(idx2, np.int64),
            thresh=np.asarray(thresh, np.float32),
            leaves=np.asarray(leaves, np.float32),
        )
    except ValueError as e:  # ragged levels or trees
        raise r.fail(f"trees or levels of unequal size: {e}") from None


def similarity_2x2(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(..., 2, 2) least-squares rotation+scale taking point sets src (..., P, 2) onto dst.

    Umeyama's solution without the translation (dlib keeps only the matrix here). In 2-D
    it is closed form: [[a, -b], [b, a]] with a, b the normalised dot and cross sums of
    the centred points (the reflection case cannot arise for face shapes).
    """
    s = src - src.mean(-2, keepdims=True)
    d = dst - dst.mean(-2, keepdims=True)
    ss = (s * s).sum((-1, -2))
    a = (s * d).sum((-1, -2)) / ss
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(-1) / ss
    return np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)


def grey(pixels: np.ndarray) -> np.ndarray:
    """dlib's grey level of RGB pixels (..., 3): the integer mean of the three channels.

    Grey input (no channel axis of 3) is returned as is.
    """
    f = np.asarray(pixels)
    if f.ndim == 0 or f.shape[-1] != 3:
        return f
    return (f[..., 0].astype(np.uint16) + f[..., 1] + f[..., 2]) // 3


def _round(x: np.ndarray) -> np.ndarray:
    """dlib's float -> integer point conversion (half away from zero)."""
    return np.where(x >= 0, np.floor(x + 0.5), -np.floor(-x + 0.5)).astype(np.int64)


class ShapePredictor:
    """5 (or 68) landmarks for many faces at once, as dlib's ``shape_predictor`` computes them."""

    def __init__(self, model: ShapeModel) -> None:
        self.model = model

    def __call__(self, images: list[np.ndarray], image_idx: np.ndarray, rects: np.ndarray) -> np.ndarray:
        """(n, P, 2) integer landmarks.

        ``images`` are RGB (H, W, 3) or grey (H, W) uint8 images, ``image_idx`` (n,) says
        which image each face is in, ``rects`` (n, 4) are dlib rectangles (left, top,
        right, bottom; right/bottom inclusive) in that image.
        """
        m = self.model
        rects = np.asarray(rects, np.float64).reshape(-1, 4)
        n = len(rects)
        if n == 0:
            return np.zeros((0, m.num_parts, 2), np.int64)
        image_idx = np.asarray(image_idx, np.int64).reshape(n)
        origin, extent = rects[:, None, :2], (rects[:, 2:] - rects[:, :2])[:, None, :]  # unit box -> pixels
        groups = [(np.flatnonzero(image_idx == u), images[u]) for u in np.unique(image_idx)]

        init = m.initial_shape.astype(np.float32)
        shape = np.broadcast_to(init, (n, *init.shape)).copy()  # float32 as dlib
        n_trees, n_splits = m.idx1.shape[1:]
        n_feats = m.anchor.shape[1]
        depth = int(np.log2(n_splits + 1))
        # Flat indices: one np.take per step is several times faster than 2-D fancy indexing.
        tree_base = (np.arange(n_trees) * n_splits)[None, :]
        leaf_base = (np.arange(n_trees) * (n_splits + 1))[None, :]
        face_base = (np.arange(n) * n_feats)[:, None]
        feats = np.zeros((n, n_feats), np.float32)
        for lvl in range(len(m.idx1)):
            idx1, idx2, thresh = m.idx1[lvl].ravel(), m.idx2[lvl].ravel(), m.thresh[lvl].ravel()
            leaves = m.leaves[lvl].reshape(n_trees * (n_splits + 1), -1)
            tform = similarity_2x2(init[None].astype(np.float64), shape.astype(np.float64)).astype(np.float32)
            pts = np.matmul(m.deltas[lvl][None], tform.transpose(0, 2, 1)) + shape[:, m.anchor[lvl]]
            px = _round(pts * extent + origin)
            for rows, img in groups:  # read only the feature pixels, never a whole grey frame
                x, y = px[rows, :, 0], px[rows, :, 1]
                inside = (x >= 0) & (y >= 0) & (x < img.shape[1]) & (y < img.shape[0])
                vals = grey(img[np.where(inside, y, 0), np.where(inside, x, 0)])
                feats[rows] = np.where(inside, vals, 0)
            flat_feats = feats.ravel()
            node = np.zeros((n, n_trees), np.int64)
            for _ in range(depth):
                k = tree_base + node
                a = np.take(flat_feats, face_base + np.take(idx1, k))
                b = np.take(flat_feats, face_base + np.take(idx2, k))
                node = 2 * node + np.where(a - b > np.take(thresh, k), 1, 2)
            # Tree by tree in float32, the order dlib adds them (a sum in another order can
            # move a feature pixel across a rounding boundary at the next level).
            steps = np.concatenate([shape.reshape(n, 1, -1), np.take(leaves, leaf_base + node - n_splits, axis=0)], 1)
            shape = np.cumsum(steps, 1, dtype=np.float32)[:, -1].reshape(shape.shape)
        return _round(shape.astype(np.float64) * extent + origin)


def default_dat_path() -> Path | None:
    try:
        import face_recognition_models as frm
    except ImportError:
        return None
    return Path(frm.pose_predictor_five_point_model_location())


def load_shape_predictor(model_dir: Path, dat_path: Path | None = None) -> ShapePredictor:
    """The 5-point predictor, parsed once from dlib's .dat and cached under ``model_dir``."""
    model_dir = Path(model_dir)
    dat_path = Path(dat_path) if dat_path else default_dat_path()
    if dat_path is not None and dat_path.exists():
        cache = model_dir / f"dlib_shape5_{file_sha256(dat_path)[:16]}.npz"
        if not cache.exists():
            model = parse_shape_predictor(dat_path.read_bytes(), dat_path.name)
            model_dir.mkdir(parents=True, exist_ok=True)
            model.save(cache)
    else:
        found = sorted(model_dir.glob("dlib_shape5_*.npz"))
        if not found:
            raise FileNotFoundError(
                f"no 5-point shape predictor: face_recognition_models is not installed and {model_dir} holds no parsed copy"
            )
        cache = found[0]
    return ShapePredictor(ShapeModel.load(cache))
