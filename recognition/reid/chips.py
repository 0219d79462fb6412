"""Aligned 150x150 face chips from 5 landmarks, as dlib's ``get_face_chip`` cuts them, in torch.

The geometry follows ``get_face_chip_details`` / ``extract_image_chips``
(dlib/image_transforms/interpolation.h):

- the 5 landmarks are matched by a least-squares similarity transform to dlib's
  template points, padded by ``padding`` on each side and scaled to the chip size;
- the chip covers a square of side ``size * scale`` centred on the image of the chip
  centre, rotated by the transform's angle; chip pixel (0, 0) lands on the square's
  top-left corner and (size-1, size-1) on its bottom-right (so one chip step is
  ``(size*scale - 1) / (size - 1)`` image pixels, not exactly ``scale``);
- each chip pixel is a bilinear mix of the four pixels around it, truncated to an
  integer like dlib's ``assign_pixel``; a point whose 2x2 neighbourhood leaves the
  image is black.

The sampling is an explicit four-neighbour gather rather than ``grid_sample`` so the
border rule above is dlib's exactly and faces from frames of different sizes can share
one call. Where the chip shrinks the face more than 2x (faces over ~250 px), dlib cuts it
from an image pyramid (pyramid_down<2>: a 5x5 binomial filter, every other pixel) built
over the union box of the frame's chips; that is reproduced too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dlib's 5-point template (right eye outer, right eye inner, left eye outer, left eye
# inner, nose base), in units of the unpadded chip.
TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


@dataclass(frozen=True)
class ChipGeometry:
    """Where each chip lies in its image, in dlib's terms (all arrays have n rows)."""

    centre: np.ndarray  # (n, 2) image point under the chip centre
    half: np.ndarray  # (n,) half the side of the chip square, minus half a pixel (dlib's centered_drect)
    angle: np.ndarray  # (n,) rotation, radians
    level: np.ndarray  # (n,) dlib pyramid level: -1 the image itself, k >= 0 downscaled 2**(k+1)
    size: int

    @property
    def rotation(self) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (n,2,2), b (n,2)): image point = A @ (col, row) + b, at full resolution."""
        rot = self.rotation
        tl = self.centre + rot @ np.array([-1.0, -1.0]) * self.half[:, None]
        return rot * (2 * self.half / (self.size - 1))[:, None, None], tl

    def corners(self) -> np.ndarray:
        """(n, 4, 2) rotated corners tl, tr, bl, br of each chip square."""
        signs = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
        return self.centre[:, None] + np.einsum("nij,kj->nki", self.rotation, signs) * self.half[:, None, None]


def chip_geometry(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> ChipGeometry:
    """dlib's ``get_face_chip_details`` for (n, 5, 2) landmarks."""
    pts = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    src = (padding + TEMPLATE_5) / (2 * padding + 1) * size  # chip coordinates
    ms, md = src.mean(0), pts.mean(1, keepdims=True)
    s, d = src - ms, pts - md
    ss = (s * s).sum()
    a = (s[None] * d).sum((1, 2)) / ss
    bb = (s[None, :, 0] * d[..., 1] - s[None, :, 1] * d[..., 0]).sum(1) / ss
    M = np.stack([np.stack([a, -bb], -1), np.stack([bb, a], -1)], -2)  # scale * rotation
    t = md[:, 0] - M @ ms
    angle, scale = np.arctan2(bb, a), np.hypot(a, bb)
    centre = M @ np.array([size / 2, size / 2]) + t
    half = (size * scale - 1) / 2  # dlib's centered_drect: width-1 between first and last pixel
    # pyramid_down<2>.rect_down maps a w-wide rect to a (w+1)/2-wide one; dlib descends
    # while the next level's rect still holds more pixels than the chip.
    level = np.full(len(pts), -1)
    w = 2 * half + 1
    while (deeper := ((w + 1) / 2) ** 2 > size * size).any():
        level, w = level + deeper, np.where(deeper, (w + 1) / 2, w)
    return ChipGeometry(centre, half, angle, level, size)


def _gather_bilinear(img, x, y):
    """dlib's interpolate_bilinear at float64 points (x, y) of an (H, W, 3) image -> (..., 3) float32.

    Only the four neighbours are read and converted (never the whole frame), and the mix
    is done in float64 like dlib's, so truncation lands on the same integers.
    """
    import torch

    H, W = img.shape[:2]
    if H < 2 or W < 2:  # nothing to interpolate (a pyramid level of a tiny crop): all black
        return torch.zeros((*x.shape, img.shape[2]), dtype=torch.float32, device=x.device)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.long(), y0.long()
    valid = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H)
    x0, y0 = x0.clamp(0, max(W - 2, 0)), y0.clamp(0, max(H - 2, 0))
    flat = img.reshape(-1, img.shape[2])
    i = y0 * W + x0
    tl, tr, bl, br = (flat[j].double() for j in (i, i + 1, i + W, i + W + 1))
    gx = 1 - fx
    # dlib's expression and order, (1-fy)*((1-fx)*tl + fx*tr) + fy*((1-fx)*bl + fx*br), in place
    top = tl.mul_(gx).add_(tr.mul_(fx))
    bottom = bl.mul_(gx).add_(br.mul_(fx))
    out = top.mul_(1 - fy).add_(bottom.mul_(fy)).floor_().mul_(valid[..., None])
    return out.float()


def _pyramid_down(img):
    """dlib's pyramid_down<2> of an (H, W, 3) float image of integers: 5x5 [1 4 6 4 1]^2 filter,
    every other pixel, integer division by 256; ((H-3)//2, (W-3)//2) pixels."""
    import torch
    import torch.nn.functional as F

    H, W = img.shape[:2]
    if H <= 8 or W <= 8:
        return img.new_zeros((0, 0, 3))
    k1 = img.new_tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k1[:, None] * k1[None, :]).expand(3, 1, 5, 5)
    x = F.conv2d(img.permute(2, 0, 1)[None], k, stride=2, groups=3)[0].permute(1, 2, 0)
    # sums are exact integers; +0.5 keeps floor() off a multiple of 256 despite float error
    return torch.floor((x[: (H - 3) // 2, : (W - 3) // 2] + 0.5) / 256)


def _rect_down(l, t, r, b, times: int):
    """pyramid_down<2>.rect_down applied ``times`` times (dlib maps p -> p/2 - (1.25, 0.75))."""
    for _ in range(times):
        l, t, r, b = l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75
    return l, t, r, b


def _pyramid_chips(img, geom: ChipGeometry, rows: np.ndarray, faces: np.ndarray, grid, device):
    """Chips of ``faces`` (pyramid level >= 0) as dlib's extract_image_chips cuts them when
    called with all of ``rows`` (the frame's faces): one pyramid over their union box."""
    import torch

    H, W = img.shape[:2]
    corners = geom.corners()
    box = None
    for i in rows:  # the union of every chip's rotated square, grown by the margin its depth needs
        grow = 2.0
        for _ in range(max(int(geom.level[i]) + 1, 0)):
            grow = grow * 2 + 2
        l, t = corners[i, :, 0].min() - grow, corners[i, :, 1].min() - grow
        r, b = corners[i, :, 0].max() + grow, corners[i, :, 1].max() + grow
        l, t, r, b = max(l, 0), max(t, 0), min(r, W - 1), min(b, H - 1)
        if l > r or t > b:
            continue
        rr = [int(np.floor(v + 0.5)) for v in (l, t, r, b)]  # drectangle -> rectangle rounds
        box = rr if box is None else [min(box[0], rr[0]), min(box[1], rr[1]), max(box[2], rr[2]), max(box[3], rr[3])]
    out = torch.zeros((len(faces), geom.size, geom.size, 3), dtype=torch.float32, device=device)
    if box is None:
        return out
    levels = [img[box[1] : box[3] + 1, box[0] : box[2] + 1].float()]
    for _ in range(int(geom.level[faces].max()) + 1):
        levels.append(_pyramid_down(levels[-1]))
    last = geom.size - 1
    for j, i in enumerate(faces):
        lv = int(geom.level[i])
        cx, cy, h = geom.centre[i, 0] - box[0], geom.centre[i, 1] - box[1], geom.half[i]
        l, t, r, b = _rect_down(cx - h, cy - h, cx + h, cy + h, lv + 1)
        c = np.array([(l + r) / 2, (t + b) / 2])
        rot = geom.rotation[i]
        tl = c + rot @ (np.array([l, t]) - c)
        tr = c + rot @ (np.array([r, t]) - c)
        bl = c + rot @ (np.array([l, b]) - c)
        A = torch.as_tensor(np.stack([(tr - tl) / last, (bl - tl) / last], 1), dtype=torch.float64, device=device)
        p = torch.einsum("ij,rcj->rci", A, grid) + torch.as_tensor(tl, dtype=torch.float64, device=device)
        out[j] = _gather_bilinear(levels[lv + 1], p[..., 0], p[..., 1])
    return out


def extract_chips(frames, image_idx: np.ndarray, geom: ChipGeometry, device: str = "cpu"):
    """(n, 3, size, size) float chips (integer values 0-255) of RGB uint8 ``frames``.

    ``frames`` are numpy (H, W, 3) arrays or torch tensors; ``image_idx`` (n,) names each
    face's frame. Faces of one frame are cut as one dlib ``extract_image_chips`` call
    would (which matters only for pyramid-size faces).
    """
    import torch

    size, n = geom.size, len(geom.level)
    out = torch.zeros((n, size, size, 3), dtype=torch.float32, device=device)
    if n == 0:
        return out.permute(0, 3, 1, 2)
    g = torch.arange(size, dtype=torch.float64, device=device)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1)  # (size, size, 2): (col, row)
    A, b = geom.affine()
    image_idx = np.asarray(image_idx)
    for u in np.unique(image_idx):
        frame = frames[u]
        if not isinstance(frame, torch.Tensor):
            frame = np.ascontiguousarray(frame)
            # torch wants writable memory (a read-only array, e.g. from PIL, is copied once)
            frame = torch.from_numpy(frame if frame.flags.writeable else frame.copy())
        img = frame
        img = img.to(device)
        rows = np.flatnonzero(image_idx == u)
        flat = rows[geom.level[rows] < 0]
        if len(flat):
            r = torch.as_tensor(flat, device=device)
            At = torch.as_tensor(A[flat], dtype=torch.float64, device=device)
            bt = torch.as_tensor(b[flat], dtype=torch.float64, device=device)
            p = torch.einsum("nij,rcj->nrci", At, grid) + bt[:, None, None, :]
            out[r] = _gather_bilinear(img, p[..., 0], p[..., 1])
        deep = rows[geom.level[rows] >= 0]
        if len(deep):
            out[torch.as_tensor(deep, device=device)] = _pyramid_chips(img, geom, rows, deep, grid, device)
    return out.permute(0, 3, 1, 2)
