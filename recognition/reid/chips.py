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
one call. Where the chip shrinks the face more than 2x, dlib first builds an image
pyramid; here the face region is box-averaged by the same power of two instead (an
approximation: such faces, over ~250 px wide, are not in the test media).
"""

from __future__ import annotations

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


def chip_transforms(landmarks: np.ndarray, size: int = 150, padding: float = 0.25):
    """For (n, 5, 2) landmarks: (A (n,2,2), b (n,2), level (n,)) with image = A @ (col,row) + b.

    ``level`` is dlib's pyramid level for the chip (-1: sample the image itself; k >= 0:
    sample it downscaled 2**(k+1) times).
    """
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
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    tl = centre + rot @ np.array([-1.0, -1.0]) * half[:, None]
    A = rot * (2 * half / (size - 1))[:, None, None]
    # pyramid_down<2>.rect_down maps a w-wide rect to a (w+1)/2-wide one; dlib descends
    # while the next level's rect still holds more pixels than the chip.
    level = np.full(len(pts), -1)
    w = 2 * half + 1
    while (deeper := ((w + 1) / 2) ** 2 > size * size).any():
        level, w = level + deeper, np.where(deeper, (w + 1) / 2, w)
    return A, tl, level


def _gather_bilinear(img, x, y):
    """dlib's interpolate_bilinear at float points (x, y) of an (H, W, 3) float image -> (..., 3)."""
    import torch

    H, W = img.shape[:2]
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.long(), y0.long()
    valid = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < W) & (y0 + 1 < H)
    x0, y0 = x0.clamp(0, max(W - 2, 0)), y0.clamp(0, max(H - 2, 0))
    flat = img.reshape(-1, img.shape[2])
    i = y0 * W + x0
    tl, tr, bl, br = flat[i], flat[i + 1], flat[i + W], flat[i + W + 1]
    out = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    return torch.where(valid[..., None], torch.floor(out), torch.zeros_like(out))


def extract_chips(frames, image_idx: np.ndarray, A: np.ndarray, b: np.ndarray, level: np.ndarray,
                  size: int = 150, device: str = "cpu"):
    """(n, 3, size, size) float chips (integer values 0-255) of RGB uint8 ``frames``.

    ``frames`` are numpy (H, W, 3) arrays or torch tensors already on ``device``.
    """
    import torch
    import torch.nn.functional as F

    n = len(A)
    out = torch.zeros((n, size, size, 3), dtype=torch.float32, device=device)
    if n == 0:
        return out.permute(0, 3, 1, 2)
    g = torch.arange(size, dtype=torch.float64, device=device)
    cr = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1)  # (size, size, 2): (col, row)
    At = torch.as_tensor(A, dtype=torch.float64, device=device)
    bt = torch.as_tensor(b, dtype=torch.float64, device=device)
    pts = torch.einsum("nij,rcj->nrci", At, cr) + bt[:, None, None, :]  # float64: exact sub-pixel phase
    image_idx = np.asarray(image_idx)
    for u in np.unique(image_idx):
        frame = frames[u]
        img = frame if isinstance(frame, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frame))
        img = img.to(device)
        rows = np.flatnonzero((image_idx == u) & (level < 0))
        if len(rows):
            r = torch.as_tensor(rows, device=device)
            p = pts[r]
            # Gather from this frame only; fractions in float32 are plenty once the
            # integer part is split off in float64.
            out[r] = _gather_bilinear(img.float(), p[..., 0], p[..., 1]).float()
        for i in np.flatnonzero((image_idx == u) & (level >= 0)):
            k = 2 ** (int(level[i]) + 1)
            p = pts[i]
            x0, y0 = int(max(p[..., 0].min().item() // k * k - k, 0)), int(max(p[..., 1].min().item() // k * k - k, 0))
            x1 = int(min(p[..., 0].max().item() + 2 * k, img.shape[1]))
            y1 = int(min(p[..., 1].max().item() + 2 * k, img.shape[0]))
            crop = img[y0:y1, x0:x1].float().permute(2, 0, 1)[None]
            small = F.avg_pool2d(crop, k, k, ceil_mode=False)[0].permute(1, 2, 0).contiguous()
            # pixel centres: small pixel j covers crop pixels [j*k, j*k + k)
            xs, ys = (p[..., 0] - x0 + 0.5) / k - 0.5, (p[..., 1] - y0 + 0.5) / k - 0.5
            out[i] = _gather_bilinear(small, xs, ys).float()
    return out.permute(0, 3, 1, 2)
