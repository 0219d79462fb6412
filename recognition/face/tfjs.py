"""TensorFlow.js graph models read with numpy and run in torch (no TensorFlow, no JavaScript).

A TF.js "graph-model" is a ``model.json`` (``modelTopology``: a TensorFlow GraphDef as JSON,
``weightsManifest``: the order, names, shapes and dtypes of the constants) and binary shards
holding those constants back to back, little-endian. ``read_graph_model`` parses both;
``TFJSGraph`` evaluates the graph in torch for the small set of ops that the converter leaves
in a Keras convolutional classifier (fused conv + bias + ReLU, depthwise conv, max pool, add,
mean, softmax). Tensors are kept NCHW inside (torch's layout); TF's NHWC axes, HWIO kernels
and asymmetric 'SAME' padding are translated where they are read, so an unknown op or
attribute raises instead of being guessed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict


def _attr_str(a: dict) -> str:
    return base64.b64decode(a["s"]).decode()


def _attr_ints(a: dict) -> tuple[int, ...]:
    return tuple(int(v) for v in a["list"].get("i", []))


def _attr_strs(a: dict) -> tuple[str, ...]:
    return tuple(base64.b64decode(v).decode() for v in a["list"].get("s", []))


def read_weights(manifest: list[dict], shard_dir: Path, shards: dict[str, bytes] | None = None) -> dict[str, np.ndarray]:
    """The constants of a ``weightsManifest``: each group's shards concatenated, cut in order."""
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        blob = b"".join((shards or {}).get(p) or (Path(shard_dir) / p).read_bytes() for p in group["paths"])
        at = 0
        for w in group["weights"]:
            if "quantization" in w:
                raise ValueError(f"weight {w['name']!r} is quantized; only float32/int32 weights are supported")
            dt = np.dtype(_DTYPES[w["dtype"]]).newbyteorder("<")
            n = int(np.prod(w["shape"], dtype=np.int64))
            size = n * dt.itemsize
            if at + size > len(blob):
                raise ValueError(f"weight {w['name']!r} runs past the end of its shards ({len(blob)} bytes)")
            out[w["name"]] = np.frombuffer(blob, dt, n, at).reshape(w["shape"]).astype(dt.newbyteorder("="))
            at += size
        if at != len(blob):
            raise ValueError(f"shards {group['paths']} hold {len(blob)} bytes, the manifest lists {at}")
    return out


def read_graph_model(model_json: Path, shards: dict[str, bytes] | None = None) -> tuple[list[Node], dict[str, np.ndarray], dict]:
    """(nodes, constants by name, the JSON's other fields) of a TF.js graph model.

    ``shards``: shard bytes by file name, where they do not lie beside the JSON (e.g. read
    from an npm tarball)."""
    model_json = Path(model_json)
    d = json.loads(model_json.read_text())
    if d.get("format") != "graph-model":
        raise ValueError(f"{model_json}: format {d.get('format')!r}, expected 'graph-model'")
    nodes = [Node(n["name"], n["op"], tuple(n.get("input", ())), n.get("attr", {})) for n in d["modelTopology"]["node"]]
    weights = read_weights(d["weightsManifest"], model_json.parent, shards)
    return nodes, weights, {k: v for k, v in d.items() if k not in ("modelTopology", "weightsManifest")}


def _same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TF 'SAME': output ceil(n / s); the odd padding pixel goes after."""
    eff = (k - 1) * d + 1
    total = max((-(-n // s) - 1) * s + eff - n, 0)
    return total // 2, total - total // 2


class TFJSGraph(nn.Module):
    """A TF.js graph model in torch: NHWC input in, the graph's output tensor out."""

    SUPPORTED = {"Placeholder", "Const", "Identity", "_FusedConv2D", "Conv2D", "DepthwiseConv2dNative",
                 "MaxPool", "AddV2", "Add", "Relu", "Mean", "Softmax", "BiasAdd"}  # fmt: skip

    def __init__(self, nodes: list[Node], weights: dict[str, np.ndarray], output: str | None = None) -> None:
        super().__init__()
        unknown = sorted({n.op for n in nodes} - self.SUPPORTED)
        if unknown:
            raise ValueError(f"unsupported TF ops: {', '.join(unknown)}")
        self.nodes = {n.name: n for n in nodes}
        inputs = [n.name for n in nodes if n.op == "Placeholder"]
        if len(inputs) != 1:
            raise ValueError(f"expected one input placeholder, found {inputs}")
        self.input_name = inputs[0]
        consumed = {i.split(":")[0].lstrip("^") for n in nodes for i in n.inputs}
        outs = [n.name for n in nodes if n.name not in consumed and n.op != "Const"]
        self.output_name = output or (outs[0] if len(outs) == 1 else None)
        if self.output_name is None:
            raise ValueError(f"several graph outputs {outs}: name one")
        missing = [n.name for n in nodes if n.op == "Const" and n.name not in weights]
        if missing:
            raise ValueError(f"constants missing from the weights: {missing[:3]}")
        self.order = self._topological()
        # Kernels are stored in torch's layout once, as buffers (they move with .to(device)).
        self._keys: dict[str, str] = {}
        for name in self.order:
            n = self.nodes[name]
            if n.op in ("_FusedConv2D", "Conv2D"):
                self._buffer(n.inputs[1], torch.from_numpy(weights[n.inputs[1]].transpose(3, 2, 0, 1).copy()))
                for extra in n.inputs[2:]:
                    self._buffer(extra, torch.from_numpy(weights[extra].copy()))
            elif n.op == "DepthwiseConv2dNative":
                w = weights[n.inputs[1]]  # (kh, kw, cin, mult) -> (cin * mult, 1, kh, kw)
                kh, kw, cin, mult = w.shape
                self._buffer(n.inputs[1], torch.from_numpy(w.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None].copy()))
            elif n.op == "BiasAdd":
                self._buffer(n.inputs[1], torch.from_numpy(weights[n.inputs[1]].copy()))
        self.consts = {k: v for k, v in weights.items() if v.dtype == np.int32}

    def _buffer(self, name: str, t: torch.Tensor) -> None:
        key = f"w{len(self._keys)}"
        self._keys[name] = key
        self.register_buffer(key, t.float() if t.is_floating_point() else t)

    def _w(self, name: str) -> torch.Tensor:
        return getattr(self, self._keys[name])

    def _topological(self) -> list[str]:
        order, seen = [], set()

        def visit(name: str) -> None:
            stack = [(name, False)]
            while stack:
                cur, done = stack.pop()
                if done:
                    order.append(cur)
                    continue
                if cur in seen:
                    continue
                seen.add(cur)
                stack.append((cur, True))
                for i in self.nodes[cur].inputs:
                    j = i.split(":")[0].lstrip("^")
                    if j not in seen:
                        stack.append((j, False))

        visit(self.output_name)
        return order

    @staticmethod
    def _pad_for(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], padding: str, value: float = 0.0):
        if padding == "VALID":
            return x
        if padding != "SAME":
            raise ValueError(f"padding {padding!r} not supported")
        ph = _same_pads(x.shape[2], k[0], s[0], d[0])
        pw = _same_pads(x.shape[3], k[1], s[1], d[1])
        return F.pad(x, (*pw, *ph), value=value)

    def _conv(self, n: Node, x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
        a = n.attr
        if "data_format" in a and _attr_str(a["data_format"]) != "NHWC":
            raise ValueError(f"{n.name}: data_format {_attr_str(a['data_format'])} not supported")
        st = _attr_ints(a["strides"]) if "strides" in a else (1, 1, 1, 1)
        dl = _attr_ints(a["dilations"]) if "dilations" in a else (1, 1, 1, 1)
        s, d = (st[1], st[2]), (dl[1], dl[2])
        x = self._pad_for(x, (w.shape[2], w.shape[3]), s, d, _attr_str(a["padding"]))
        return F.conv2d(x, w, stride=s, dilation=d, groups=groups)

    def forward(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        vals: dict[str, torch.Tensor] = {self.input_name: x_nhwc.permute(0, 3, 1, 2)}
        for name in self.order:
            n = self.nodes[name]
            if n.op in ("Placeholder", "Const"):
                continue
            ins = [vals.get(i.split(":")[0]) for i in n.inputs]
            if n.op == "Identity":
                y = ins[0]
            elif n.op in ("_FusedConv2D", "Conv2D"):
                y = self._conv(n, ins[0], self._w(n.inputs[1]))
                ops = _attr_strs(n.attr["fused_ops"]) if n.op == "_FusedConv2D" else ()
                for op in ops:
                    if op == "BiasAdd":
                        y = y + self._w(n.inputs[2]).view(1, -1, 1, 1)
                    elif op == "Relu":
                        y = F.relu(y)
                    else:
                        raise ValueError(f"{n.name}: fused op {op} not supported")
            elif n.op == "DepthwiseConv2dNative":
                y = self._conv(n, ins[0], self._w(n.inputs[1]), groups=ins[0].shape[1])
            elif n.op == "BiasAdd":
                y = ins[0] + self._w(n.inputs[1]).view(1, -1, 1, 1)
            elif n.op == "MaxPool":
                k, st = _attr_ints(n.attr["ksize"]), _attr_ints(n.attr["strides"])
                xp = self._pad_for(ins[0], (k[1], k[2]), (st[1], st[2]), (1, 1), _attr_str(n.attr["padding"]), float("-inf"))
                y = F.max_pool2d(xp, (k[1], k[2]), (st[1], st[2]))
            elif n.op in ("AddV2", "Add"):
                y = ins[0] + ins[1]
            elif n.op == "Relu":
                y = F.relu(ins[0])
            elif n.op == "Mean":
                axes = self.consts[n.inputs[1]].reshape(-1).tolist()
                if ins[0].dim() != 4:
                    raise ValueError(f"{n.name}: Mean over a rank-{ins[0].dim()} tensor not supported")
                keep = bool(n.attr.get("keep_dims", {}).get("b", False))
                if keep:
                    raise ValueError(f"{n.name}: keep_dims not supported")
                y = ins[0].mean(dim=[_NHWC_TO_NCHW_AXIS[a] for a in axes])
            elif n.op == "Softmax":
                y = torch.softmax(ins[0], dim=-1)
            else:  # pragma: no cover - SUPPORTED is checked at construction
                raise ValueError(n.op)
            vals[name] = y
        out = vals[self.output_name]
        return out.permute(0, 2, 3, 1) if out.dim() == 4 else out

    def logits_node(self) -> str:
        """The name of the node feeding the final Softmax (for calibrated logits)."""
        n = self.nodes[self.output_name]
        while n.op == "Identity":
            n = self.nodes[n.inputs[0]]
        if n.op != "Softmax":
            raise ValueError(f"the output {self.output_name} is not a softmax")
        return n.inputs[0].split(":")[0]
