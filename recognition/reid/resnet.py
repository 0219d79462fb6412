"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in torch.

The network is the one of dlib's ``dnn_face_recognition_ex.cpp``: a 7x7/2 convolution,
a 3x3/2 max pool, 14 residual blocks (32, 64, 128, 256 filters; "down" blocks use a 3x3/2
convolution and add a 2x2/2 average pool of their input), a global average pool and a
128-wide fully connected layer without bias. Batch norm was frozen into per-channel
``affine`` layers before the file was written; :func:`build_module` folds those into the
convolutions they follow.

dlib conventions kept here:
- stride-2 convolutions and pools have no padding, stride-1 convolutions pad by 1;
- ``add_prev`` of tensors of different sizes zero-pads the smaller one at the bottom,
  right and in the extra channels (a 3x3 block output meets a 4x4 pooled input);
- the input layer subtracts the channel means stored in the file and divides by 256.

The .dat file is parsed with :mod:`recognition.reid.dlib_format` (no dlib needed) and the
weights are cached as a torch state dict keyed by the file's sha256, so a machine with
torch alone can load the cached ``.pt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recognition.reid.dlib_format import DlibReader, file_sha256

# Residual blocks from the input up: (filters, down-sampling).
BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
CHIP_SIZE = 150


@dataclass
class ConvWeights:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray
    stride: int
    padding: int


@dataclass
class AffineWeights:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass
class FaceNetWeights:
    """Everything the torch module needs, in dlib's order from the input up."""

    channel_means: tuple[float, float, float]
    convs: list[ConvWeights] = field(default_factory=list)
    affines: list[AffineWeights] = field(default_factory=list)
    fc: np.ndarray | None = None  # (num_inputs, 128): output = x @ fc


# ------------------------------------------------------------------------------------
# Parsing


def _layer_stack() -> list[str]:
    """The layer wrappers from the loss layer down to the input, as dlib nests them.

    'L' is an ``add_layer`` (has details), 'T' a tag, 'S' a skip. The names say what the
    details must be; the parser checks each one against the file.
    """
    stack: list[str] = ["L:fc_2", "L:avg_pool_2"]
    for filters, down in reversed(BLOCKS):
        # relu<add_prev<[avg_pool<skip1<tag2<]] block<tag1<SUB>>>>>
        stack += ["L:relu_", "L:add_prev_"]
        if down:
            stack += ["L:avg_pool_2", "S", "T"]
        stack += ["L:affine_", "L:con_4", "L:relu_", "L:affine_", "L:con_4", "T"]
    stack += ["L:max_pool_2", "L:relu_", "L:affine_", "L:con_4"]  # the last sits on the input layer
    return stack


def _read_details(r: DlibReader, name: str, out: FaceNetWeights) -> None:
    r.expect_string(name)
    if name == "con_4":
        params = r.tensor().ravel()
        n_filters, nr, nc = r.int(), r.int(), r.int()
        stride_y, stride_x, pad_y, pad_x = r.int(), r.int(), r.int(), r.int()
        fshape, bshape = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        if stride_y != stride_x or pad_y != pad_x or fshape[0] != n_filters or fshape[2:] != (nr, nc):
            raise r.fail(f"unexpected convolution {fshape} stride {stride_y}x{stride_x} pad {pad_y}x{pad_x}")
        nw = int(np.prod(fshape))
        w = params[:nw].reshape(fshape)
        b = params[nw : nw + int(np.prod(bshape))]
        out.convs.append(ConvWeights(w.copy(), b.copy(), stride_y, pad_y))
    elif name == "affine_":
        params = r.tensor().ravel()
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        mode = r.int()
        if mode != 0:  # CONV_MODE: one scale and shift per channel
            raise r.fail(f"affine layer in mode {mode}, expected per-channel")
        k = int(np.prod(gshape))
        out.affines.append(AffineWeights(params[:k].copy(), params[k : k + int(np.prod(bshape))].copy()))
    elif name == "fc_2":
        n_out, n_in = r.int(), r.int()
        params = r.tensor().ravel()
        wshape, _ = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        if bias_mode != 1 or wshape[:2] != (n_in, n_out):
            raise r.fail(f"unexpected fc layer {wshape} bias mode {bias_mode}")
        out.fc = params[: n_in * n_out].reshape(n_in, n_out).copy()
    elif name in ("avg_pool_2", "max_pool_2"):
        [r.int() for _ in range(6)]  # nr, nc, strides, paddings: fixed by the architecture
    # relu_ and add_prev_ carry nothing


def _read_layer_tail(r: DlibReader, version: int, on_input: bool) -> None:
    """The bookkeeping an ``add_layer`` writes after its details (flags, cached tensors)."""
    r.bool(), r.bool(), r.bool()
    r.tensor(), r.tensor()  # x_grad, cached_output (empty once the net was cleaned)
    if on_input:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # sample expansion factor
    elif version >= 2:
        r.tensor()  # params_grad


def parse_face_resnet(data: bytes, name: str = "dlib_face_recognition_resnet_model_v1.dat") -> FaceNetWeights:
    """Weights of dlib's face ResNet from the bytes of its .dat file."""
    r = DlibReader(data, name)
    r.expect_int(1)  # add_loss_layer
    loss = r.expect_string("loss_metric_", "loss_metric_2")
    if loss == "loss_metric_2":
        r.float(), r.float()  # margin, distance threshold (training only)
    stack = _layer_stack()
    versions = []
    for kind in stack:
        versions.append(r.expect_int(1, 2, 3) if kind.startswith("L") else r.expect_int(1))
    r.expect_string("input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    nr, nc = r.int(), r.int()
    if (nr, nc) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input size {nr}x{nc}, expected {CHIP_SIZE}")
    out = FaceNetWeights(channel_means=means)
    # Details come from the innermost layer outwards.
    for i in range(len(stack) - 1, -1, -1):
        kind = stack[i]
        if kind in ("T", "S"):
            continue
        _read_details(r, kind[2:], out)
        _read_layer_tail(r, versions[i], on_input=(i == len(stack) - 1))
    if not r.at_end():
        raise r.fail(f"{len(r.data) - r.pos} bytes left after the network")
    if len(out.convs) != 1 + 2 * len(BLOCKS) or len(out.affines) != len(out.convs) or out.fc is None:
        raise r.fail("layer counts do not match the face ResNet")
    return out


# ------------------------------------------------------------------------------------
# Torch module

def _torch_classes():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Affine(nn.Module):
        """Frozen batch norm: per-channel scale and shift."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.register_buffer("gamma", torch.ones(1, channels, 1, 1))
            self.register_buffer("beta", torch.zeros(1, channels, 1, 1))

        def forward(self, x):
            return x * self.gamma + self.beta

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, down: bool) -> None:
            super().__init__()
            s = 2 if down else 1
            self.down = down
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=s, padding=0 if down else 1)
            self.aff1 = Affine(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.aff2 = Affine(cout)

        def forward(self, x):
            y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
            skip = F.avg_pool2d(x, 2, 2) if self.down else x
            if skip.shape != y.shape:  # dlib's add_prev: zero-pad the smaller to the larger
                c, h, w = (max(a, b) for a, b in zip(skip.shape[1:], y.shape[1:]))
                skip = F.pad(skip, (0, w - skip.shape[3], 0, h - skip.shape[2], 0, c - skip.shape[1]))
                y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2], 0, c - y.shape[1]))
            return F.relu(y + skip)

    class DlibFaceResNet(nn.Module):
        """(N, 3, 150, 150) RGB chips, 0-255 floats or uint8 -> (N, 128) descriptors."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
            self.conv = nn.Conv2d(3, 32, 7, stride=2)
            self.aff = Affine(32)
            blocks, cin = [], 32
            for cout, down in BLOCKS:
                blocks.append(Block(cin, cout, down))
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, 128, bias=False)

        def forward(self, chips):
            x = (chips.to(self.mean.dtype) - self.mean) / 256.0
            x = F.max_pool2d(F.relu(self.aff(self.conv(x))), 3, 2)
            x = self.blocks(x)
            return self.fc(x.mean(dim=(2, 3)))

    return DlibFaceResNet


def state_dict_from_weights(w: FaceNetWeights) -> dict:
    """The torch state dict of :class:`DlibFaceResNet` for parsed dlib weights."""
    import torch

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    sd = {"mean": t(np.asarray(w.channel_means).reshape(1, 3, 1, 1))}
    names = ["conv"] + [f"blocks.{i}.conv{j}" for i in range(len(BLOCKS)) for j in (1, 2)]
    affs = ["aff"] + [f"blocks.{i}.aff{j}" for i in range(len(BLOCKS)) for j in (1, 2)]
    for name, aff, c, a in zip(names, affs, w.convs, w.affines):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = t(c.weight), t(c.bias)
        sd[f"{aff}.gamma"], sd[f"{aff}.beta"] = t(a.gamma.reshape(1, -1, 1, 1)), t(a.beta.reshape(1, -1, 1, 1))
    sd["fc.weight"] = t(w.fc.T)
    return sd


def _fold_affines(net) -> None:
    """Fold each frozen batch norm into the convolution before it (w * g, b * g + beta) and
    drop it: the same numbers (~5e-7 apart), two passes over every activation fewer
    (the network on 30 chips: ~0.9x the time, 1 thread, loaded machine)."""
    import torch
    from torch import nn

    pairs = [(net, "conv", "aff")] + [(b, f"conv{j}", f"aff{j}") for b in net.blocks for j in (1, 2)]
    with torch.no_grad():
        for owner, conv_name, aff_name in pairs:
            conv, aff = getattr(owner, conv_name), getattr(owner, aff_name)
            g, beta = aff.gamma.reshape(-1), aff.beta.reshape(-1)
            conv.weight.mul_(g.reshape(-1, 1, 1, 1))
            conv.bias.mul_(g).add_(beta)
            setattr(owner, aff_name, nn.Identity())


def build_module(state_dict: dict):
    net = _torch_classes()()
    net.load_state_dict(state_dict)
    _fold_affines(net)
    return net.eval().requires_grad_(False)


def default_dat_path() -> Path | None:
    try:
        import face_recognition_models as frm
    except ImportError:
        return None
    return Path(frm.face_recognition_model_location())


def cached_pt_path(model_dir: Path, sha256: str) -> Path:
    return Path(model_dir) / f"dlib_face_resnet_{sha256[:16]}.pt"


def load_face_resnet(model_dir: Path, dat_path: Path | None = None, device: str = "cpu"):
    """The torch face ResNet, converted once from dlib's .dat and cached under ``model_dir``.

    With no .dat at hand (a machine without face_recognition_models), any cached
    conversion in ``model_dir`` is used.
    """
    import torch

    model_dir = Path(model_dir)
    dat_path = Path(dat_path) if dat_path else default_dat_path()
    if dat_path is not None and dat_path.exists():
        pt = cached_pt_path(model_dir, file_sha256(dat_path))
        if not pt.exists():
            sd = state_dict_from_weights(parse_face_resnet(dat_path.read_bytes(), dat_path.name))
            model_dir.mkdir(parents=True, exist_ok=True)
            tmp = pt.with_name(f"{pt.name}.{os.getpid()}.tmp")
            torch.save(sd, tmp)
            tmp.replace(pt)  # atomic: a second worker never reads a half-written file
    else:
        found = sorted(model_dir.glob("dlib_face_resnet_*.pt"))
        if not found:
            raise FileNotFoundError(
                f"no dlib face ResNet: face_recognition_models is not installed and {model_dir} holds no converted copy"
            )
        pt = found[0]
    sd = torch.load(pt, map_location="cpu", weights_only=True)
    return build_module(sd).to(device)
