"""MTCNN (Zhang et al. 2016) in torch: a three-stage cascade of small CNNs over an image pyramid.

Loads the pinned P/R/O-Net state dicts (``mtcnn_pnet``, ``mtcnn_rnet``, ``mtcnn_onet`` in
``recognition/models.toml``; the layer names are those of the facenet-pytorch export).
Every stage runs batched over all frames of the same size, on CPU or CUDA; crops for
the refinement stages are taken with ``roi_align`` from the pyramid level nearest their
size (one call per level, not a loop per box). The nets run channels-last and take raw
0..255 pixels once loaded (the input scaling is folded into their first convolution).

Boxes use continuous pixel coordinates: [x1, x2) x [y1, y2), width ``x2 - x1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, roi_align

from affectline.settings import Settings, get_settings
from affectline.types import Detections
from recognition.detection.base import FaceDetector, check_frames, nms, off_known


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # The weights descend from the original Caffe/MATLAB model, which saw images transposed;
    # its dense layers therefore expect features flattened in (width, height, channel) order.
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_transposed(self.prelu3(self.conv3(x)))))
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box offsets and five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x then 5 y, relative to the crop

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x), self.dense6_3(x)


PIXEL_MEAN, PIXEL_SCALE = 127.5, 0.0078125  # the nets were trained on (x - 127.5) / 128


@torch.no_grad()
def _fold_input_scaling(conv: nn.Conv2d) -> None:
    """Let ``conv`` take raw 0..255 pixels: conv(W, (x - m) * k) + b = conv(W * k, x) + b - m * k * sum(W).

    Exact for any input, black out-of-frame crop pixels included, because the first
    convolutions have no padding; it saves a pass over every pyramid level and crop."""
    conv.bias -= PIXEL_MEAN * PIXEL_SCALE * conv.weight.sum(dim=(1, 2, 3))
    conv.weight *= PIXEL_SCALE


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (the refinement nets expect square crops)."""
    wh = boxes[:, 2:] - boxes[:, :2]
    side = wh.max(1, keepdim=True).values
    c = boxes[:, :2] + wh / 2
    return torch.cat([c - side / 2, c + side / 2], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + reg * wh


# Against the cascade that resampled every level and crop from the full frame, on real
# footage (30-face 1080p class, crowd, group photo, 270p class): the same 84 faces, box IoU
# mean 0.996, min 0.93. Smaller values are cheaper and move boxes more (crop bins of 1 px:
# min IoU 0.87; levels from halvings only twice their size: 0.88).
CROP_MIN_BIN = 2  # a crop's output pixel covers at least this many source pixels
PYRAMID_MIN_RATIO = 4  # a pyramid level is resampled from an image at least this many times its size


class _Sources:
    """The frames and their pyramid levels, as places to cut R/O-Net crops from.

    A crop is cut from the coarsest image in which the box still measures CROP_MIN_BIN
    times the crop's size, so ``roi_align`` averages 2 x 2 or 3 x 3 samples per output
    pixel; cut from the full frame, a 200 px box needs 9 x 9 (most of the cascade's crop
    time). The levels are area-averaged already, so a crop pixel stays an average over its area."""

    def __init__(self, imgs: torch.Tensor) -> None:
        self.h, self.w = imgs.shape[2:]
        self.imgs: list[torch.Tensor] = [imgs]
        self.scale: list[tuple[float, float]] = [(1.0, 1.0)]

    def add(self, level: torch.Tensor) -> None:
        self.imgs.append(level)
        self.scale.append((level.shape[3] / self.w, level.shape[2] / self.h))

    def crops(self, boxes: torch.Tensor, img_idx: torch.Tensor, size: int) -> torch.Tensor:
        # Parts of a box outside the frame read as black, as in the original MTCNN's zero padding.
        out = boxes.new_empty((len(boxes), 3, size, size))
        side = boxes[:, 2] - boxes[:, 0]  # square boxes
        pick = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
        for k, (sx, sy) in enumerate(self.scale[1:], 1):
            pick[side * min(sx, sy) >= size * CROP_MIN_BIN] = k  # levels come finest first
        for k in pick.unique().tolist():
            m = (pick == k).nonzero(as_tuple=True)[0]
            sx, sy = self.scale[k]
            b = boxes[m] * boxes.new_tensor([sx, sy, sx, sy])
            rois = torch.cat([img_idx[m, None].to(boxes.dtype), b], 1)
            out[m] = roi_align(self.imgs[k], rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return out.contiguous(memory_format=torch.channels_last)


def _refine(net: nn.Module, src: _Sources, boxes: torch.Tensor, idx: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Run R/O-Net on the proposals a chunk at a time: a busy frame can yield tens of
    thousands of stage-1 boxes, and their crops in one tensor would take gigabytes. On CPU
    small chunks keep the activations in cache (R-Net on 889 crops: 2048 -> 128 a chunk
    took 0.6x the time); a GPU wants large ones."""
    chunk = 2048 if boxes.is_cuda else 128
    if len(boxes) <= chunk:
        return net(src.crops(boxes, idx, size))
    outs = [net(src.crops(boxes[i : i + chunk], idx[i : i + chunk], size)) for i in range(0, len(boxes), chunk)]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def _pyramid_level(halves: list[torch.Tensor], h: int, w: int, s: float) -> torch.Tensor:
    """The frame area-resampled by ``s``, from the smallest 2x-halving of it that is still
    PYRAMID_MIN_RATIO times the level's size: area resampling reads its whole input, and 12
    levels read from a 1080p frame cost ~0.3 s. (Halvings closer to the level's size blur
    it more than the original pyramid did and move boxes: ratio 2 gave IoU down to 0.88.)"""
    size = (int(h * s + 1), int(w * s + 1))

    def big_enough(hh: int, ww: int) -> bool:
        return hh >= PYRAMID_MIN_RATIO * size[0] and ww >= PYRAMID_MIN_RATIO * size[1]

    while big_enough(halves[-1].shape[2] // 2, halves[-1].shape[3] // 2):
        halves.append(F.avg_pool2d(halves[-1], 2))
    src = next((x for x in reversed(halves) if big_enough(*x.shape[2:])), halves[0])
    return F.interpolate(src, size=size, mode="area")


def _off_known(boxes: torch.Tensor, idx: torch.Tensor, known: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """Mask of the candidates whose centre lies in none of their frame's ``known`` boxes.

    A candidate centred on a face already followed is that face (or a part of it): R/O-Net
    would only confirm it and the final NMS drop it again, so it is cheaper not to crop it."""
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    if known is None or len(boxes) == 0:
        return keep
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    for j, kb in enumerate(known):
        if len(kb) == 0:
            continue
        m = (idx == j).nonzero(as_tuple=True)[0]
        x, y = c[m, 0, None], c[m, 1, None]
        inside = (x >= kb[:, 0]) & (x < kb[:, 2]) & (y >= kb[:, 1]) & (y < kb[:, 3])
        keep[m] = ~inside.any(1)
    return keep


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thr: float) -> torch.Tensor:
    """NMS on intersection over the smaller box, per frame (drops a face part nested in a face)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Offsetting each frame's boxes far apart keeps frames from suppressing each other.
    shifted = boxes + groups[:, None].to(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    keep = nms(shifted.cpu().numpy(), scores.cpu().numpy(), thr, overlap="min")
    return torch.as_tensor(keep, device=boxes.device)


class MTCNN(nn.Module):
    """The cascade on tensors: ``forward(imgs)`` with imgs (B, 3, H, W) float in 0..255 RGB.

    ``min_face_px`` sets the pyramid's first scale (12 / min_face_px): smaller values find
    smaller faces at quadratically growing cost. ``thresholds`` are the per-stage face
    probabilities a candidate must reach (higher: fewer false positives, lower recall);
    ``factor`` is the pyramid step (closer to 1: more scales, slower, slightly better recall).
    """

    def __init__(
        self,
        min_face_px: int = 12,
        min_face_frac: float = 0.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> None:
        super().__init__()
        if min_face_px < 6:
            raise ValueError(f"min_face_px must be at least 6, got {min_face_px}")
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.min_face_px, self.thresholds, self.factor = min_face_px, thresholds, factor
        self.min_face_frac = min_face_frac
        self.last_candidates = (0, 0)  # crops given to R-Net and O-Net by the last forward

    def load(self, settings: Settings) -> MTCNN:
        from recognition.registry import resolve

        for net, name in ((self.pnet, "mtcnn_pnet"), (self.rnet, "mtcnn_rnet"), (self.onet, "mtcnn_onet")):
            net.load_state_dict(torch.load(resolve(name, settings), map_location="cpu", weights_only=True))
            _fold_input_scaling(net.conv1)
        # Channels-last puts the convolutions and max-pools on oneDNN's fast path on CPU
        # (P-Net on a 1080p frame's first level: 1.7-2.4x; cuDNN takes the layout too).
        return self.eval().to(memory_format=torch.channels_last)

    def scales(self, h: int, w: int, min_face: float | None = None) -> list[float]:
        # The smallest face searched for: min_face_px, or a fraction of the frame height when
        # that is larger (a 20 px back-row face in 1080p; 12 px in 270p). The first pyramid
        # level dominates the cost, so 1080p at 20 px runs ~2.8x faster than at 12 px.
        mf = min_face or max(self.min_face_px, self.min_face_frac * h)
        s, side, out = 12.0 / mf, min(h, w) * 12.0 / mf, []
        while side >= 12:
            out.append(s)
            s, side = s * self.factor, side * self.factor
        return out

    @torch.inference_mode()
    def forward(self, imgs: torch.Tensor, min_face: float | None = None,
                known: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Return boxes (k, 4), scores (k,), landmarks (k, 5, 2) and the frame index (k,) of each face.

        ``known``: per image, (n, 4) boxes of faces found already; candidates centred in them
        are dropped before R-Net and again before O-Net, so only other faces are searched for."""
        h, w = imgs.shape[2:]
        t1, t2, t3 = self.thresholds
        dev = imgs.device
        # Stage 1: proposals from every pyramid level, NMS within each level and then across levels.
        imgs = imgs.contiguous()  # roi_align and the halvings want NCHW; a permuted HWC batch is not
        src, halves = _Sources(imgs), [imgs]
        boxes, scores, regs, idx = [], [], [], []
        for s in self.scales(h, w, min_face):
            x = _pyramid_level(halves, h, w, s)
            src.add(x)
            prob, reg = self.pnet(x.contiguous(memory_format=torch.channels_last))
            b, i, j = (prob >= t1).nonzero(as_tuple=True)
            if len(b) == 0:
                continue
            tl = torch.stack([j, i], 1).to(imgs.dtype) * 2
            bx = torch.cat([tl, tl + 12], 1) / s
            sc = prob[b, i, j]
            keep = batched_nms(bx, sc, b, 0.5)
            boxes.append(bx[keep]), scores.append(sc[keep]), regs.append(reg[b, :, i, j][keep]), idx.append(b[keep])
        del halves
        empty = (torch.zeros(0, 4, device=dev), torch.zeros(0, device=dev), torch.zeros(0, 5, 2, device=dev))
        self.last_candidates = (0, 0)
        if not boxes:
            return *empty, torch.zeros(0, dtype=torch.long, device=dev)
        bx, sc, reg, b = torch.cat(boxes), torch.cat(scores), torch.cat(regs), torch.cat(idx)
        keep = batched_nms(bx, sc, b, 0.7)
        bx, b = _square(_regress(bx[keep], reg[keep])), b[keep]
        new = _off_known(bx, b, known)
        bx, b = bx[new], b[new]
        self.last_candidates = (len(bx), 0)

        # Stage 2: refine on 24x24 crops.
        prob, reg = _refine(self.rnet, src, bx, b, 24)
        ok = prob > t2
        bx, sc, reg, b = bx[ok], prob[ok], reg[ok], b[ok]
        keep = batched_nms(bx, sc, b, 0.7)
        bx, b = _square(_regress(bx[keep], reg[keep])), b[keep]
        new = _off_known(bx, b, known)
        bx, b = bx[new], b[new]
        self.last_candidates = (self.last_candidates[0], len(bx))
        if len(bx) == 0:
            return *empty, b

        # Stage 3: score, final box and landmarks on 48x48 crops.
        prob, reg, pts = _refine(self.onet, src, bx, b, 48)
        ok = prob > t3
        bx, sc, reg, pts, b = bx[ok], prob[ok], reg[ok], pts[ok], b[ok]
        wh = bx[:, 2:] - bx[:, :2]
        lm = torch.stack([pts[:, :5], pts[:, 5:]], 2) * wh[:, None, :] + bx[:, None, :2]
        bx = _regress(bx, reg)
        keep = _nms_min(bx, sc, b, 0.7)
        return bx[keep], sc[keep], lm[keep], b[keep]


def _faces(boxes: np.ndarray, scores: np.ndarray, lms: np.ndarray, w: int, h: int) -> Detections:
    """Detections in a w x h frame: boxes clipped to it, the five landmarks kept."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    lms = np.asarray(lms, np.float32).reshape(-1, 5, 2)
    return Detections(boxes, np.asarray(scores, np.float32), data={"landmarks5": lms})


class MTCNNDetector(FaceDetector):
    """The default detector: best recall on small classroom faces (see docs/detectors.md)."""

    name = "mtcnn"

    def __init__(
        self,
        settings: Settings | None = None,
        device: str = "cpu",
        min_face_px: int | None = None,
        max_batch_pixels: int | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.device = torch.device(device)
        self.model = MTCNN(min_face_px or settings.min_face_px, min_face_frac=settings.min_face_frac)
        self.model = self.model.load(settings).to(self.device)
        # Bounds the first pyramid level's activations: (B, 10, H, W) float32 at ~40 bytes a pixel.
        self.max_batch_pixels = max_batch_pixels or (16 if self.device.type == "cuda" else 4) * 1920 * 1080

    def detect(self, frames: Sequence[np.ndarray], known: Sequence[np.ndarray] | None = None) -> list[Detections]:
        """Faces in each frame; with ``known`` (per frame, (n, 4) boxes of faces found already)
        only the others: candidates centred in a known box skip R-Net and O-Net."""
        frames = check_frames(frames)
        if known is not None and len(known) != len(frames):
            raise ValueError(f"known must hold one box array per frame: {len(known)} for {len(frames)} frames")
        out: list[Detections | None] = [None] * len(frames)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(frames):
            by_shape.setdefault(f.shape, []).append(i)
        for shape, ids in by_shape.items():
            h, w = shape[:2]
            step = max(1, self.max_batch_pixels // (h * w))
            for k in range(0, len(ids), step):
                part = ids[k : k + step]
                batch = torch.from_numpy(np.stack([frames[i] for i in part])).to(self.device)
                imgs = batch.permute(0, 3, 1, 2).float()
                kn = None if known is None else [self._boxes(known[i]) for i in part]
                boxes, scores, lms, idx = (t.cpu().numpy() for t in self.model(imgs, known=kn))
                for j, i in enumerate(part):
                    m = idx == j
                    out[i] = _faces(boxes[m], scores[m], lms[m], w, h)
        return out  # type: ignore[return-value]

    def _boxes(self, boxes: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4), device=self.device)

    def detect_new(self, frame: np.ndarray, known: np.ndarray) -> Detections:
        # The cascade skips candidates centred on known faces; a box regressed to just off one still goes.
        return off_known(self.detect([frame], [known])[0], known)

    # Local search: a square region REGION_FACES face-widths wide around each expected box,
    # resampled to REGION_PX pixels, so the expected face measures REGION_PX / REGION_FACES px
    # and the cascade finds faces from 1/2x to 3x that size (a face that came closer or
    # moved away) anywhere within a face-width of the prediction.
    REGION_FACES, REGION_PX, REGION_MIN_FACE = 3.0, 72, 12

    def detect_near(self, frame: np.ndarray, boxes: np.ndarray) -> Detections:
        """The full cascade on small regions around ``boxes`` only, all regions in one batch."""
        frame = check_frames([frame])[0]
        h, w = frame.shape[:2]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return _faces(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)), w, h)
        c = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = np.maximum(boxes[:, 2:] - boxes[:, :2], 1).max(1, keepdims=True) * self.REGION_FACES
        regions = np.concatenate([c - side / 2, c + side / 2], 1)
        img = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float().contiguous()
        rois = torch.cat([torch.zeros(len(regions), 1), torch.from_numpy(regions)], 1).to(self.device)
        # Parts of a region outside the frame read as black, like the cascade's own crops.
        crops = roi_align(img, rois, (self.REGION_PX, self.REGION_PX), 1.0, sampling_ratio=-1, aligned=True)
        bx, sc, lm, idx = (t.cpu().numpy() for t in self.model(crops, min_face=self.REGION_MIN_FACE))
        # Back to frame pixels, then one face per place (regions of neighbours overlap).
        scale = (side[:, 0] / self.REGION_PX)[idx]
        origin = regions[idx, :2]
        bx = bx * np.repeat(scale[:, None], 4, 1) + np.tile(origin, 2)
        lm = lm * scale[:, None, None] + origin[:, None, :]
        keep = nms(bx, sc, 0.5, overlap="min") if len(bx) else np.zeros(0, np.int64)
        return _faces(bx[keep], sc[keep], lm[keep], w, h)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
