"""Runs a TFLite graph (as read by ``tflite_reader``) in torch, batched, with torch only.

Tensors keep TFLite's NHWC layout as contiguous torch tensors; a convolution views its
input as NCHW (``permute`` of a contiguous NHWC tensor is torch's channels-last NCHW,
so no copy is made) and views its output back. Dimension 0 is always the batch: the
graphs were exported for batch 1, so shapes baked into RESHAPE use -1 there, constants
of batch 1 are broadcast, and slices never cut dimension 0. 1x1 stride-1 convolutions
(most of the mesh network and all of the blendshape MLP-Mixer) run as ``F.linear``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_SAME, _VALID = 0, 1  # tflite.Padding
_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch, "mkldnn_convolution")


def _act(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 2:
        return x.clamp(-1.0, 1.0)
    if code == 3:
        return x.clamp(0.0, 6.0)
    raise ValueError(f"fused activation {code} is not supported")


def _same_pads(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow 'SAME': output ceil(size/stride); an odd padding pixel goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFLiteGraph(nn.Module):
    """One TFLite network as a torch module; ``forward`` takes and returns NHWC-layout tensors."""

    def __init__(self, program: dict[str, Any]) -> None:
        super().__init__()
        self.inputs: list[int] = list(program["inputs"])
        self.outputs: list[int] = list(program["outputs"])
        self.output_names: list[str] = list(program["output_names"])
        shapes = program["shapes"]
        consts = {int(k): np.asarray(v) for k, v in program["consts"].items()}
        # DEQUANTIZE of float16 weights is done once here, at load time.
        ops = []
        for op in program["ops"]:
            if op["op"] == "DEQUANTIZE" and op["inputs"][0] in consts:
                consts[op["outputs"][0]] = consts[op["inputs"][0]].astype(np.float32)
                continue
            ops.append(op)
        self._ops: list[tuple[str, list[int], int, dict[str, Any]]] = []
        self._params = nn.ParameterDict()  # float weights, moved by .to(device)
        self._ints: dict[int, list[int]] = {}  # shape-like int constants stay python ints
        for op in ops:
            name, ins, opts = op["op"], list(op["inputs"]), dict(op["options"])
            out = op["outputs"][0]
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                w = consts[ins[1]].astype(np.float32)  # [O, KH, KW, I] or [1, KH, KW, C*m]
                if name == "CONV_2D":
                    w = w.transpose(0, 3, 1, 2)
                else:
                    w = w.transpose(3, 0, 1, 2)
                opts["kernel"] = tuple(w.shape[2:])
                # 1x1 convs on (B, 1, W, C) rows (the blendshape MLP-Mixer) are plain matmuls.
                opts["linear"] = (
                    name == "CONV_2D" and w.shape[2:] == (1, 1) and tuple(opts["stride"]) == (1, 1) and shapes[ins[0]][1] == 1
                )
                if opts["linear"]:
                    w = w[:, :, 0, 0]
                self._set(ins[1], w)
                if len(ins) > 2 and ins[2] >= 0:
                    self._set(ins[2], consts[ins[2]].astype(np.float32))
            elif name in ("RESHAPE",):
                opts["shape"] = [-1] + list(shapes[out][1:])
                ins = ins[:1]
            else:
                for j in ins[1:] if name != "CONCATENATION" else ins:
                    if j in consts and str(j) not in self._params and j not in self._ints:
                        c = consts[j]
                        if c.dtype.kind in "iu":
                            self._ints[j] = [int(v) for v in np.ravel(c)]
                        else:
                            self._set(j, c.astype(np.float32))
            self._ops.append((name, ins, out, opts))
        for j in self.inputs:
            if j in consts:
                raise ValueError("graph input is a constant")
        # Liveness: each activation is dropped after its last reader, and an elementwise op whose
        # first operand dies there writes into it (the mesh network is memory-bound at 128 x 128).
        last: dict[int, int] = {}
        for k, (_, ins, _, _) in enumerate(self._ops):
            for j in ins:
                last[j] = k
        keep = set(self.outputs) | set(self.inputs)
        self._free = [[j for j in set(ins) if last.get(j) == k and j not in keep] for k, (_, ins, _, _) in enumerate(self._ops)]
        for k, (name, ins, out, opts) in enumerate(self._ops):
            opts["inplace"] = (
                name in ("ADD", "SUB", "MUL", "DIV")
                and ins[0] not in keep
                and str(ins[0]) not in self._params
                and last.get(ins[0]) == k
                and ins.count(ins[0]) == 1
                and list(shapes[ins[0]]) == list(shapes[out])
            )

    def _set(self, j: int, arr: np.ndarray) -> None:
        self._params[str(j)] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(arr)), requires_grad=False)

    def _get(self, env: dict[int, torch.Tensor], j: int) -> torch.Tensor:
        t = env.get(j)
        return t if t is not None else self._params[str(j)]

    @torch.no_grad()
    def forward(self, *xs: torch.Tensor) -> list[torch.Tensor]:
        env: dict[int, torch.Tensor] = dict(zip(self.inputs, xs))
        for (name, ins, out, o), free in zip(self._ops, self._free):
            env[out] = self._run(name, ins, o, env)
            for j in free:
                env.pop(j, None)
        return [env[j] for j in self.outputs]

    def _run(self, name: str, ins: list[int], o: dict[str, Any], env: dict[int, torch.Tensor]) -> torch.Tensor:
        x = self._get(env, ins[0])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = self._params[str(ins[1])]
            b = self._params[str(ins[2])] if len(ins) > 2 and ins[2] >= 0 else None
            if o["linear"]:
                return _act(F.linear(x, w, b), o["act"])
            return _act(self._conv(x, w, b, o, groups=x.shape[3] if name == "DEPTHWISE_CONV_2D" else 1), o["act"])
        if name == "MAX_POOL_2D":
            xn = x.permute(0, 3, 1, 2)
            (kh, kw), (sh, sw) = o["filter"], o["stride"]
            if o["padding"] == _SAME:
                ph, pw = _same_pads(xn.shape[2], kh, sh, 1), _same_pads(xn.shape[3], kw, sw, 1)
                if any(ph + pw):
                    xn = F.pad(xn, (*pw, *ph), value=float("-inf"))
            return F.max_pool2d(xn, (kh, kw), (sh, sw)).permute(0, 2, 3, 1)
        if name in ("ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE"):
            y = self._get(env, ins[1])
            if o["inplace"] and x.shape == torch.broadcast_shapes(x.shape, y.shape):
                r = {"ADD": x.add_, "SUB": x.sub_, "MUL": x.mul_, "DIV": x.div_}[name](y)
            elif name == "ADD":
                r = x + y
            elif name == "SUB":
                r = x - y
            elif name == "MUL":
                r = x * y
            elif name == "DIV":
                r = x / y
            else:
                r = (x - y).square()
            return _act(r, o.get("act", 0))
        if name == "PRELU":
            a = self._get(env, ins[1])
            if x.dim() == 4 and a.numel() == x.shape[3]:  # per-channel: torch's prelu on the NCHW view is ~20x where()
                return F.prelu(x.permute(0, 3, 1, 2), a.reshape(-1)).permute(0, 2, 3, 1)
            return torch.where(x >= 0, x, x * a)
        if name == "RELU":
            return F.relu(x)
        if name == "LOGISTIC":
            return torch.sigmoid(x)
        if name == "SQRT":
            return x.sqrt()
        if name == "RSQRT":
            return x.rsqrt()
        if name == "NEG":
            return -x
        if name == "PAD":
            p = self._ints[ins[1]]  # [[before, after]] per dim, NHWC
            pads: list[int] = []
            for d in reversed(range(len(p) // 2)):
                pads += [p[2 * d], p[2 * d + 1]]
            return F.pad(x, pads)
        if name == "RESHAPE":
            return x.reshape(o["shape"])
        if name == "CONCATENATION":
            ts = [self._get(env, j) for j in ins]
            n = max(t.shape[0] for t in ts)
            ts = [t.expand(n, *t.shape[1:]) if t.shape[0] != n else t for t in ts]
            return _act(torch.cat(ts, dim=o["axis"]), o["act"])
        if name in ("MEAN", "SUM"):
            axes = [a % x.dim() for a in self._ints[ins[1]]]
            if 0 in axes:
                raise ValueError(f"{name} over the batch dimension")
            f = torch.mean if name == "MEAN" else torch.sum
            return f(x, dim=axes, keepdim=o["keep_dims"])
        if name == "TRANSPOSE":
            perm = self._ints[ins[1]]
            if perm[0] != 0:
                raise ValueError("TRANSPOSE moves the batch dimension")
            return x.permute(*perm)
        if name == "STRIDED_SLICE":
            return self._strided_slice(x, ins, o)
        raise ValueError(f"op {name} is not supported")

    @staticmethod
    def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, o: dict[str, Any], groups: int) -> torch.Tensor:
        xn = x.permute(0, 3, 1, 2)  # channels-last NCHW view, no copy
        (kh, kw), (sh, sw), (dh, dw) = o["kernel"], o["stride"], o["dilation"]
        pad = (0, 0)
        if o["padding"] == _SAME:
            ph, pw = _same_pads(xn.shape[2], kh, sh, dh), _same_pads(xn.shape[3], kw, sw, dw)
            if ph[0] == ph[1] and pw[0] == pw[1]:
                pad = (ph[0], pw[0])
            else:  # TF puts the odd pixel at the bottom/right; torch's padding is symmetric
                xn = F.pad(xn, (*pw, *ph))
        if xn.device.type == "cpu" and _MKLDNN:
            # oneDNN directly: F.conv2d sends small-batch single-thread 1x1 convs to a slow path that
            # first copies channels-last input to NCHW.
            y = torch.mkldnn_convolution(xn, w, b, list(pad), [sh, sw], [dh, dw], groups)
        else:
            y = F.conv2d(xn, w, b, (sh, sw), pad, (dh, dw), groups)
        return y.permute(0, 2, 3, 1)

    def _strided_slice(self, x: torch.Tensor, ins: list[int], o: dict[str, Any]) -> torch.Tensor:
        begin, end, strides = (self._ints[j] for j in ins[1:4])
        if o["ellipsis_mask"] or o["new_axis_mask"]:
            raise ValueError("STRIDED_SLICE with ellipsis/new-axis masks is not supported")
        idx: list[Any] = [slice(None)]  # dimension 0 is the batch: never cut
        shrink = []
        for d in range(1, len(begin)):
            b = None if o["begin_mask"] >> d & 1 else begin[d]
            e = None if o["end_mask"] >> d & 1 else end[d]
            if o["shrink_axis_mask"] >> d & 1:
                idx.append(slice(b, b + 1 if b != -1 else None))
                shrink.append(d)
            else:
                idx.append(slice(b, e, strides[d]))
        y = x[tuple(idx)]
        for d in reversed(shrink):
            y = y.squeeze(d)
        return y
