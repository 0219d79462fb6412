"""MediaPipe's FaceLandmarker (IMAGE mode, one face per crop) re-implemented in torch, batched.

Per face box, as ``recognition.face.landmarks.FaceLandmarker`` does it, a square crop of
``scale`` x the box's longer side is resampled to ``size`` px; on that crop this module
then reproduces MediaPipe's graph step by step, for all crops of many frames at once:
  1. face detector (BlazeFace short range, 128 x 128, [-1, 1]): 896 SSD anchors, sigmoid
     scores >= min_confidence, weighted NMS (IoU > 0.3); the best cluster is the face;
  2. its box grown 1.5x around its centre and rotated so the eye keypoints (0, 1) are
     level is the region of interest for the mesh network;
  3. face mesh v2 (256 x 256, [0, 1], border replicated): 478 landmarks and a presence
     logit (sigmoid >= min_confidence), projected back to the crop;
  4. blendshapes: the 146-landmark subset, x and y in crop pixels, through the MLP-Mixer;
  5. pose matrix: the face geometry pipeline (``geometry.FaceGeometry``) on the first
     468 landmarks, then ``pose_from_matrix`` as for MediaPipe's matrix.
Resampling follows OpenCV's warps as MediaPipe's CPU path runs them: pixel index
coordinates (a region's corner at the first pixel's centre), source positions rounded to
1/32 px, integer weights and results rounded to uint8 before scaling, zero border for the
detector, replicated border for the mesh input. The frame crops themselves follow cv2 5's
warpAffine, which the MediaPipe wrapper uses (exact positions, zero border).

On the CPU, where OpenCV is installed, both warps are OpenCV calls (``warps='cv2'``:
warpAffine for the frame crop as the wrapper does; remap on fixed-point maps for the
region, at the positions above), 0.2 ms a face instead of 8 ms of grid_sample;
and the networks can run in LiteRT's XNNPACK kernels (``runtime='litert'``,
``recognition.face.mesh.litert``) instead of the torch graph. CUDA always runs the torch
graph and the torch warps.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from affectline.settings import Settings
from affectline.types import Detections
from recognition.face.landmarks import LandmarkResult, crop_transform, pose_from_matrix
from recognition.face.mesh.geometry import FaceGeometry
from recognition.face.mesh.graph import TFLiteGraph
from recognition.face.mesh.weights import load_converted

# MediaPipe face_blendshapes_graph.cc, kLandmarksSubsetIdxs: the blendshape model's input points.
BLENDSHAPE_LANDMARKS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66,
    67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145,
    146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176,
    178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285,
    288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387,
    388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474,
    475, 476, 477,
)  # fmt: skip
DETECTOR_SIZE = 128
MESH_SIZE = 256
ROI_SCALE = 1.5  # face_detector_graph.cc RectTransformation
NMS_IOU = 0.3  # FaceDetectorGraphOptions.min_suppression_threshold default
N_KEYPOINTS = 6


def _anchors() -> torch.Tensor:
    """SSD anchor centres of the short-range detector: (896, 2) normalised (x, y)."""
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):  # layers 1-3 share stride 16: 3 x 2 anchors a cell
        n = -(-DETECTOR_SIZE // stride)
        for y in range(n):
            for x in range(n):
                out += [((x + 0.5) / n, (y + 0.5) / n)] * per_cell
    return torch.tensor(out, dtype=torch.float32)


def _grid_sample_u8(img: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, border: str) -> torch.Tensor:
    """Bilinear samples of ``img`` (N, C, H, W) float at pixel positions (N, Ho, Wo), rounded half up
    to uint8 values: (N, C, Ho, Wo). border: 'zeros' or 'border' (replicate)."""
    h, w = img.shape[-2:]
    grid = torch.stack((sx * (2.0 / (w - 1)) - 1.0, sy * (2.0 / (h - 1)) - 1.0), dim=-1).float()
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode=border, align_corners=True)
    return torch.floor(out + 0.5).clamp_(0.0, 255.0)


def warp_rects(img: torch.Tensor, rects: torch.Tensor, size: int, border: str) -> torch.Tensor:
    """Rotated rectangles (cx, cy, w, h, angle; pixels, radians) of ``img`` (B, S, S, C) uint8 -> (B, size, size, C)
    float holding uint8 values, as the OpenCV inside MediaPipe resamples them.

    Output pixel (u, v) samples cx + R(angle) . ((u/size - 1/2) w, (v/size - 1/2) h), as
    warpPerspective between a RotatedRect's corners and the output's corners, with OpenCV's
    fixed-point bilinear: positions rounded to 1/32 px (INTER_TAB_SIZE), weights multiples
    of 1/1024, half levels rounded up. grid_sample computes exactly that when its float
    arithmetic is exact: the image is padded to 2^k + 1 pixels a side, so a position k/32
    maps to the grid and back without rounding, and weights and sums of uint8 values stay
    exact in float32 (otherwise the many exact half levels tip either way).
    border: 'zeros' or 'replicate'.
    """
    b, s = img.shape[0], img.shape[1]
    p = (1 << (s - 2).bit_length()) + 1  # 257 for 256
    x = img.permute(0, 3, 1, 2).float()
    x = F.pad(x, (0, p - s, 0, p - s), mode="constant" if border == "zeros" else "replicate")
    # Positions in 1/32 px, in float64 as OpenCV computes them, split into a per-column and a
    # per-row term so only one full-size add runs in float64.
    t = torch.arange(size, dtype=torch.float64, device=img.device) / size - 0.5
    cx, cy, w, h, a = (rects[:, i, None].double() for i in range(5))
    c, sn = torch.cos(a), torch.sin(a)
    grid = torch.empty(b, size, size, 2, dtype=torch.float32, device=img.device)
    k = 2.0 / (32.0 * (p - 1))  # 1/32 px units -> grid_sample's [-1, 1]
    for j, (col, row) in enumerate((((cx + c * t * w) * 32.0, -sn * t * h * 32.0), ((cy + sn * t * w) * 32.0, c * t * h * 32.0))):
        q = torch.round(col[:, None, :] + row[:, :, None])  # (B, rows v, columns u)
        grid[..., j] = q * k - 1.0
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros" if border == "zeros" else "border", align_corners=True)
    return torch.floor(out.permute(0, 2, 3, 1) + 0.5).clamp_(0.0, 255.0)


def _cv2():
    """OpenCV when installed (a GPU machine may have torch and numpy only)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def warp_rects_cv2(img: torch.Tensor, rects: torch.Tensor, size: int) -> torch.Tensor:
    """``warp_rects`` with a replicated border, by ``cv2.remap`` on fixed-point maps: the same
    1/32 px positions and integer bilinear weights as MediaPipe's OpenCV 4 (cv2 5's own
    warpPerspective samples at exact positions, 5x further from MediaPipe's landmarks).
    (B, S, S, 3) uint8 CPU -> (B, size, size, 3) float holding uint8 values."""
    cv2 = _cv2()
    src = img.numpy()
    out = np.empty((len(src), size, size, 3), np.uint8)
    t = np.arange(size, dtype=np.float64) / size - 0.5
    for i, (cx, cy, w, h, a) in enumerate(rects.double().tolist()):
        c, sn = math.cos(a), math.sin(a)
        # Positions in 1/32 px, rounded half to even as OpenCV's saturate_cast (rows v, columns u).
        qx = np.rint((cx + c * t * w)[None, :] * 32.0 - (sn * t * h)[:, None] * 32.0).astype(np.int32)
        qy = np.rint((cy + sn * t * w)[None, :] * 32.0 + (c * t * h)[:, None] * 32.0).astype(np.int32)
        xy = np.stack((qx >> 5, qy >> 5), axis=-1).astype(np.int16)
        frac = ((qy & 31) << 5 | (qx & 31)).astype(np.uint16)
        cv2.remap(src[i], xy, frac, cv2.INTER_LINEAR, dst=out[i], borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out).float()


@dataclass
class CropResult:
    """Outputs for a batch of crops; coordinates normalised to the crop (z shares x's scale)."""

    landmarks: np.ndarray  # (B, 478, 3) float32
    blendshapes: np.ndarray  # (B, 52) float32
    matrix: np.ndarray  # (B, 4, 4) float64
    found: np.ndarray  # (B,) bool: detector face and presence >= min_confidence
    presence: np.ndarray  # (B,) float32, NaN where the detector found nothing


class TorchFaceLandmarker:
    """Drop-in for ``FaceLandmarker`` (same ``analyze`` and ``LandmarkResult``), batched in torch.

    device: torch device string (default: ``settings.torch_device()``); ``.to(device)`` moves it.
    batch_size: crops per forward pass; ``analyze_many`` runs all crops of all its frames in
        batches of this size, one pass per crop scale still needed. Default: 16 on CPU (the
        128 x 128 layers of a larger batch no longer stay in cache), 256 on CUDA.
    runtime: 'torch' (``TFLiteGraph``, CPU or CUDA) or 'litert' (LiteRT's XNNPACK kernels on the
        CPU: ``threads`` single-threaded sets of the networks side by side, each on its share
        of the crops; the mesh network 3x faster per face there than the torch graph).
    warps: 'cv2' (OpenCV's warps, as MediaPipe's CPU path runs them), 'torch' (grid_sample,
        what CUDA runs), or 'auto': cv2 on the CPU where it is installed, else torch.
    ``crops_seen`` and ``seconds`` count crops and the time spent in the networks, as the
    MediaPipe wrapper's counters do; ``cpu_seconds`` the CPU time of the threads that ran them
    (torch's own worker threads not included).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        device: str | None = None,
        scales: tuple[float, ...] = (1.8, 1.3, 2.5),
        size: int = 256,
        min_confidence: float = 0.5,
        batch_size: int | None = None,
        runtime: str = "torch",
        threads: int = 1,
        warps: str = "auto",
    ) -> None:
        from affectline.settings import get_settings

        if not scales or min(scales) < 1.0 or size < 64:
            raise ValueError(f"TorchFaceLandmarker needs scales >= 1 and size >= 64, got scales={scales}, size={size}")
        if runtime not in ("torch", "litert") or warps not in ("auto", "cv2", "torch"):
            raise ValueError(f"runtime must be 'torch' or 'litert' and warps 'auto', 'cv2' or 'torch', got {runtime!r}, {warps!r}")
        if warps == "cv2" and _cv2() is None:
            raise ValueError("warps='cv2' needs OpenCV (cv2), which is not installed here: use 'auto' or 'torch'")
        s = settings or get_settings()
        data = load_converted(s)
        if runtime == "litert":
            from recognition.face.mesh.litert import LiteRTGraph
            from recognition.face.mesh.weights import MEMBERS
            from recognition.registry import resolve

            task = resolve("face_landmarker", s)
            # One set of networks per thread, each on its share of the crops (LiteRT's invoke
            # releases the GIL): two single-threaded sets on 2 cores beat one two-threaded set.
            self._sets = [
                tuple(LiteRTGraph.from_task(task, MEMBERS[k]) for k in ("detector", "mesh", "blendshapes"))
                for _ in range(max(1, threads))
            ]
            self.detector, self.mesh, self.blend = self._sets[0]
            self._pool = ThreadPoolExecutor(len(self._sets)) if len(self._sets) > 1 else None
        else:
            self.detector = TFLiteGraph(data["programs"]["detector"]).eval()
            self.mesh = TFLiteGraph(data["programs"]["mesh"]).eval()
            self.blend = TFLiteGraph(data["programs"]["blendshapes"]).eval()
            self._sets, self._pool = [(self.detector, self.mesh, self.blend)], None
        self.runtime, self._warps = runtime, warps
        self._lock = threading.Lock()  # the counters, when network sets run side by side
        self.geometry = FaceGeometry(data["canonical"].numpy(), data["weights"].numpy())
        self.anchors = _anchors()
        self.subset = torch.tensor(BLENDSHAPE_LANDMARKS, dtype=torch.long)
        self.scales, self.size, self.min_confidence = tuple(scales), size, min_confidence
        self._batch_size = batch_size
        self.device = torch.device("cpu")
        self.crops_seen = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.to(device or s.torch_device())

    @property
    def batch_size(self) -> int:
        return max(1, self._batch_size or (256 if self.device.type == "cuda" else 16))

    @batch_size.setter
    def batch_size(self, n: int | None) -> None:
        self._batch_size = n

    @property
    def warps(self) -> str:
        """'cv2' or 'torch': what resamples the crops on this device (see the class docstring)."""
        if self.device.type != "cpu" or self._warps == "torch":
            return "torch"
        return "cv2" if _cv2() is not None else "torch"

    def to(self, device: str | torch.device) -> Self:
        self.device = torch.device(device)
        for m in (self.detector, self.mesh, self.blend, self.geometry):
            m.to(self.device)
        self.anchors = self.anchors.to(self.device)
        self.subset = self.subset.to(self.device)
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops the thread pool of the LiteRT sets (if any)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # --- the MediaPipe graph on a batch of crops -------------------------------------------

    def _detect(self, crops: torch.Tensor, detector) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Best face of each crop (B, S, S, 3) uint8: found (B,), box (B, 4) xyxy and keypoints (B, 6, 2), normalised."""
        b, s = crops.shape[0], crops.shape[1]
        if s % DETECTOR_SIZE == 0:  # output pixel u samples source pixel u * s/128 exactly
            k = s // DETECTOR_SIZE
            x = crops[:, ::k, ::k].float()
        else:
            whole = torch.tensor([[s / 2, s / 2, s, s, 0.0]], device=crops.device).expand(b, 5)
            x = warp_rects(crops, whole, DETECTOR_SIZE, "zeros")
        reg, cls = detector(x * (2.0 / 255.0) - 1.0)
        score = torch.sigmoid(cls[..., 0].clamp(-100.0, 100.0))  # (B, 896)
        a = self.anchors
        reg = reg / DETECTOR_SIZE
        cx, cy = reg[..., 0] + a[:, 0], reg[..., 1] + a[:, 1]
        w, h = reg[..., 2], reg[..., 3]
        boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)  # (B, 896, 4)
        kps = reg[..., 4 : 4 + 2 * N_KEYPOINTS].reshape(b, -1, N_KEYPOINTS, 2) + a[:, None, :]
        keep = score >= self.min_confidence
        best = torch.where(keep, score, torch.full_like(score, -1.0)).argmax(dim=1)
        found = keep.gather(1, best[:, None])[:, 0]
        top = boxes.gather(1, best[:, None, None].expand(b, 1, 4))  # (B, 1, 4)
        ix = (torch.minimum(boxes[..., 2], top[..., 2]) - torch.maximum(boxes[..., 0], top[..., 0])).clamp(min=0)
        iy = (torch.minimum(boxes[..., 3], top[..., 3]) - torch.maximum(boxes[..., 1], top[..., 1])).clamp(min=0)
        inter = ix * iy
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        union = area + area.gather(1, best[:, None]) - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))
        wgt = torch.where(keep & (iou > NMS_IOU), score, torch.zeros_like(score))
        wgt = wgt / wgt.sum(dim=1, keepdim=True).clamp(min=1e-12)
        box = (boxes * wgt[..., None]).sum(dim=1)
        kp = (kps * wgt[..., None, None]).sum(dim=1)
        return found, box, kp

    @torch.no_grad()
    def _run(self, crops: torch.Tensor, k: int = 0) -> dict[str, torch.Tensor]:
        """All outputs for crops (B, S, S, 3) uint8 on ``self.device``, by network set ``k``."""
        detector, mesh, blend_net = self._sets[k]
        s = crops.shape[1]
        found, box, kp = self._detect(crops, detector)
        # Region of interest: the box grown 1.5x, turned so the eyes (keypoints 0 and 1) are level.
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        w, h = (box[:, 2] - box[:, 0]) * ROI_SCALE, (box[:, 3] - box[:, 1]) * ROI_SCALE
        d = (kp[:, 1] - kp[:, 0]) * s
        angle = torch.atan2(d[:, 1], d[:, 0])
        rect = torch.stack((cx * s, cy * s, w * s, h * s, angle), dim=1)
        if self.warps == "cv2":
            x = warp_rects_cv2(crops, rect, MESH_SIZE) * (1.0 / 255.0)
        else:
            x = warp_rects(crops, rect, MESH_SIZE, "replicate") * (1.0 / 255.0)
        raw, presence_logit, _ = mesh(x)
        presence = torch.sigmoid(presence_logit.reshape(-1))
        lm = raw.reshape(-1, 478, 3) / MESH_SIZE
        # MediaPipe's LandmarkProjectionCalculator: rotate in the rect's normalised frame, then scale.
        u, v = lm[..., 0] - 0.5, lm[..., 1] - 0.5
        c, sn = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        px = (c * u - sn * v) * w[:, None] + cx[:, None]
        py = (sn * u + c * v) * h[:, None] + cy[:, None]
        pz = lm[..., 2] * w[:, None]
        lm = torch.stack((px, py, pz), dim=-1)
        pts = lm[:, self.subset, :2] * torch.tensor([float(s), float(s)], device=lm.device)
        (blend,) = blend_net(pts)
        matrix = self.geometry(lm, s, s)
        return {
            "landmarks": lm,
            "blendshapes": blend,
            "matrix": matrix,
            "found": found & (presence >= self.min_confidence),
            "presence": torch.where(found, presence, torch.full_like(presence, float("nan"))),
        }

    def analyze_crops(self, crops: np.ndarray | torch.Tensor) -> CropResult:
        """Run square crops (B x S x S x 3 uint8 RGB, as fed to MediaPipe) through the graph."""
        t = torch.as_tensor(np.asarray(crops) if not isinstance(crops, torch.Tensor) else crops)
        if t.dim() != 4 or t.shape[-1] != 3 or t.shape[1] != t.shape[2] or t.dtype != torch.uint8:
            raise ValueError(f"crops must be B x S x S x 3 uint8, got {tuple(t.shape)} {t.dtype}")
        x = t.to(self.device)
        bs = self.batch_size
        if self._pool is not None and len(x) > 1:  # each set takes every n-th batch, one thread each
            bs = min(bs, -(-len(x) // len(self._sets)))
            batches = [x[i : i + bs] for i in range(0, len(x), bs)]
            parts = list(self._pool.map(lambda j: self._timed(batches[j], j % len(self._sets)), range(len(batches))))
        else:
            parts = [self._timed(x[i : i + bs]) for i in range(0, len(x), bs)]
        cat = {k: torch.cat([p[k] for p in parts]) if parts else None for k in ("landmarks", "blendshapes", "matrix", "found", "presence")}
        if not parts:
            return CropResult(
                np.zeros((0, 478, 3), np.float32), np.zeros((0, 52), np.float32), np.zeros((0, 4, 4)),
                np.zeros(0, bool), np.zeros(0, np.float32),
            )  # fmt: skip
        return CropResult(
            cat["landmarks"].float().cpu().numpy(),
            cat["blendshapes"].float().cpu().numpy(),
            cat["matrix"].double().cpu().numpy(),
            cat["found"].cpu().numpy(),
            cat["presence"].float().cpu().numpy(),
        )

    def _timed(self, x: torch.Tensor, k: int = 0) -> dict[str, torch.Tensor]:
        t, c = time.perf_counter(), time.thread_time()
        out = self._run(x, k)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        with self._lock:
            self.seconds += time.perf_counter() - t
            self.cpu_seconds += time.thread_time() - c  # this thread's own (XNNPACK runs on it too)
            self.crops_seen += len(x)
        return out

    # --- frames and boxes -------------------------------------------------------------------

    def _crops(self, frame: np.ndarray | torch.Tensor, boxes: np.ndarray, scale: float) -> tuple[torch.Tensor, np.ndarray]:
        """Square crops of one frame: (n, size, size, 3) uint8 and their (x0, y0, side).

        ``frame`` is the H x W x 3 uint8 array (CPU: each crop converts only the pixels it
        reads) or, on CUDA, the whole frame already uploaded as (1, 3, H, W) float.
        """
        n, s = len(boxes), self.size
        geo = np.array([crop_transform(b, scale, s)[1:] for b in boxes], np.float64).reshape(n, 3)
        t = torch.arange(s, dtype=torch.float64)
        if isinstance(frame, torch.Tensor):
            k = torch.as_tensor(geo, dtype=torch.float64, device=frame.device)
            t = t.to(frame.device)
            # cv2.warpAffine(frame, [[k, 0, -k x0], [0, k, -k y0]]): output pixel u samples x0 + u * side / size
            # (cv2 5 samples at exact positions with float weights, as grid_sample does).
            sx = (k[:, 0, None, None] + t[None, None, :] * (k[:, 2, None, None] / s)).expand(n, s, s)
            sy = (k[:, 1, None, None] + t[None, :, None] * (k[:, 2, None, None] / s)).expand(n, s, s)
            # All crops of the frame in one call: one image of n x size rows by size columns.
            rows = _grid_sample_u8(frame, sx.reshape(1, n * s, s), sy.reshape(1, n * s, s), "zeros")
            return rows[0].reshape(3, n, s, s).permute(1, 2, 3, 0).to(torch.uint8), geo
        h, w = frame.shape[:2]
        out = torch.empty(n, s, s, 3, dtype=torch.uint8)
        if self.warps == "cv2":  # exactly the MediaPipe wrapper's crop
            cv2, o = _cv2(), out.numpy()
            for i, b in enumerate(boxes):
                cv2.warpAffine(frame, crop_transform(b, scale, s)[0], (s, s), dst=o[i], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
            return out, geo
        for i, (x0, y0, side) in enumerate(geo):
            # The pixels this crop's bilinear taps can touch; outside the frame they are zeros either way.
            c0, r0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
            c1, r1 = min(int(math.ceil(x0 + side)) + 2, w), min(int(math.ceil(y0 + side)) + 2, h)
            if c1 - c0 < 2 or r1 - r0 < 2:  # the crop lies (almost) wholly outside the frame
                c0, r0, c1, r1 = 0, 0, w, h
            sub = torch.from_numpy(frame[r0:r1, c0:c1]).permute(2, 0, 1)[None].float()
            sx = (x0 - c0 + t * (side / s))[None, None, :].expand(1, s, s)
            sy = (y0 - r0 + t * (side / s))[None, :, None].expand(1, s, s)
            out[i] = _grid_sample_u8(sub, sx, sy, "zeros")[0].permute(1, 2, 0).to(torch.uint8)
        return out.to(self.device), geo

    def analyze(self, frame: np.ndarray, dets: Detections, scales: tuple[float, ...] | None = None) -> LandmarkResult:
        """Landmark every box of ``dets`` in ``frame`` (H x W x 3 uint8 RGB); see ``analyze_many``."""
        return self.analyze_many([frame], [dets], scales)[0]

    def analyze_many(self, frames: Sequence[np.ndarray], dets_list: Sequence[Detections],
                     scales: tuple[float, ...] | None = None) -> list[LandmarkResult]:  # fmt: skip
        """One ``LandmarkResult`` per frame; all boxes of all frames go through the networks together.

        Each box is tried at each of ``scales`` (default ``self.scales``) in turn until a face is
        found whose landmarks are centred inside the box (as the MediaPipe wrapper does); each
        scale is one batched pass over the boxes still missing.
        """
        if len(frames) != len(dets_list):
            raise ValueError(f"{len(frames)} frames but {len(dets_list)} detection sets")
        outs, sources, todo = [], [], []
        for fi, (frame, dets) in enumerate(zip(frames, dets_list)):
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frame must be H x W x 3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")
            outs.append(LandmarkResult.empty(len(dets)))
            ok = [i for i, b in enumerate(dets.boxes) if np.all(np.isfinite(b)) and b[2] > b[0] and b[3] > b[1]]
            if self.device.type == "cpu":
                sources.append(frame)
            else:  # one upload of the uint8 frame, converted on the device
                sources.append(torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float() if ok else None)
            todo += [(fi, i) for i in ok]
        for scale in tuple(scales) if scales else self.scales:
            if not todo:
                break
            crops, geos = [], []
            for fi in sorted({f for f, _ in todo}):
                rows = [i for f, i in todo if f == fi]
                c, g = self._crops(sources[fi], np.asarray(dets_list[fi].boxes)[rows], scale)
                crops.append(c)
                geos.append(g)
            order = [(f, i) for f in sorted({f for f, _ in todo}) for i in [i for ff, i in todo if ff == f]]
            res = self.analyze_crops(torch.cat(crops))
            geo = np.concatenate(geos)
            missing = []
            for j, (fi, i) in enumerate(order):
                if not res.found[j] or not self._place(res, j, geo[j], dets_list[fi].boxes[i], outs[fi], i):
                    missing.append((fi, i))
            todo = missing
        return outs

    @staticmethod
    def _place(res: CropResult, j: int, geo: np.ndarray, box: np.ndarray, out: LandmarkResult, i: int) -> bool:
        x0, y0, side = geo
        lm = res.landmarks[j] * np.float32(side) + np.array([x0, y0, 0], np.float32)
        # A wide crop can hold a neighbour's face: keep only a face centred inside the box.
        cx, cy = (lm[:, 0].min() + lm[:, 0].max()) / 2, (lm[:, 1].min() + lm[:, 1].max()) / 2
        if not (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
            return False
        out.landmarks[i] = lm
        out.blendshapes[i] = res.blendshapes[j]
        out.pose[i] = pose_from_matrix(res.matrix[j])
        out.found[i] = True
        return True
