"""Reads a TFLite flatbuffer into a plain op list that ``graph.TFLiteGraph`` runs in torch.

Only this module needs the ``tflite`` package (a pure-python flatbuffers reader); what
it returns is made of str, int, float, lists and numpy arrays, so it can be saved with
``torch.save`` and run where only torch and numpy are installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The op types the three networks of face_landmarker.task use, and the few options each needs.
SUPPORTED = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "ADD", "SUB", "MUL", "DIV", "PRELU", "RELU",
    "LOGISTIC", "PAD", "RESHAPE", "CONCATENATION", "MEAN", "SUM", "SQRT", "RSQRT", "NEG",
    "SQUARED_DIFFERENCE", "STRIDED_SLICE", "TRANSPOSE", "DEQUANTIZE",
}  # fmt: skip

_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


def _options(op, name: str) -> dict[str, Any]:
    import tflite

    classes = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "ADD": tflite.AddOptions,
        "SUB": tflite.SubOptions,
        "MUL": tflite.MulOptions,
        "DIV": tflite.DivOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
        "MEAN": tflite.ReducerOptions,
        "SUM": tflite.ReducerOptions,
        "STRIDED_SLICE": tflite.StridedSliceOptions,
    }
    cls = classes.get(name)
    table = op.BuiltinOptions()
    if cls is None or table is None:
        return {}
    o = cls()
    o.Init(table.Bytes, table.Pos)
    out: dict[str, Any] = {}
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
        out.update(padding=o.Padding(), stride=(o.StrideH(), o.StrideW()), act=o.FusedActivationFunction())
        if name == "MAX_POOL_2D":
            out["filter"] = (o.FilterHeight(), o.FilterWidth())
        else:
            out["dilation"] = (o.DilationHFactor(), o.DilationWFactor())
    elif name in ("ADD", "SUB", "MUL", "DIV", "CONCATENATION"):
        out["act"] = o.FusedActivationFunction()
        if name == "CONCATENATION":
            out["axis"] = o.Axis()
    elif name in ("MEAN", "SUM"):
        out["keep_dims"] = bool(o.KeepDims())
    elif name == "STRIDED_SLICE":
        out.update(
            begin_mask=o.BeginMask(), end_mask=o.EndMask(), ellipsis_mask=o.EllipsisMask(),
            new_axis_mask=o.NewAxisMask(), shrink_axis_mask=o.ShrinkAxisMask(),
        )  # fmt: skip
    return out


def read_tflite(data: bytes) -> dict[str, Any]:
    """The graph of a one-subgraph TFLite model: ops, constant buffers, tensor shapes."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ValueError(f"expected one subgraph, got {model.SubgraphsLength()}")
    g = model.Subgraphs(0)
    shapes, consts = [], {}
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shapes.append([int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else [])
        buf = model.Buffers(t.Buffer())
        if buf is not None and buf.DataLength() > 0:
            arr = buf.DataAsNumpy().view(_NP_TYPES[t.Type()]).reshape(shapes[-1] or ())
            consts[i] = arr.copy()
    ops = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        if name not in SUPPORTED:
            raise ValueError(f"op {name} (#{i}) is not supported by the torch executor")
        ops.append(
            {
                "op": name,
                "inputs": [int(j) for j in op.InputsAsNumpy()],
                "outputs": [int(j) for j in op.OutputsAsNumpy()],
                "options": _options(op, name),
            }
        )
    return {
        "inputs": [int(j) for j in g.InputsAsNumpy()],
        "outputs": [int(j) for j in g.OutputsAsNumpy()],
        "output_names": [g.Tensors(int(j)).Name().decode() for j in g.OutputsAsNumpy()],
        "shapes": shapes,
        "consts": consts,
        "ops": ops,
    }
