"""The same three networks run by LiteRT (TensorFlow Lite's runtime, XNNPACK kernels) on the CPU.

A drop-in for ``TFLiteGraph`` in ``TorchFaceLandmarker``: called with NHWC torch tensors, it
returns the graph's outputs in the same order and shapes. On the CPU, XNNPACK runs the mesh
network in 4.8 CPU-ms a face on one core (quiet; 7.6-8.6 ms on a loaded machine), about a third
of what the torch graph takes; the torch graph stays what runs on CUDA (and where LiteRT is
not installed).

Faces go through one at a time: the graphs were exported for batch 1 and their RESHAPE
constants keep it, so a tensor resized to batch n mixes the faces (the detector's
concatenated anchors come out interleaved; measured), and XNNPACK is no faster per face
at batch 16 than at 1.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path

import numpy as np
import torch


def available() -> bool:
    """Whether LiteRT's interpreter can be imported here (the ``ai-edge-litert`` wheel)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class LiteRTGraph:
    """One .tflite member of ``face_landmarker.task`` in a LiteRT interpreter.

    threads: XNNPACK threads for each call (2 on 2 cores: the mesh 1.8x faster per face).
    Calls are serialised by a lock: an interpreter holds its tensors between set and get.
    """

    def __init__(self, model: bytes, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._it = Interpreter(model_content=model, num_threads=max(1, int(threads)))
        self._it.allocate_tensors()
        (inp,) = self._it.get_input_details()
        self._input, self._input_shape = inp["index"], tuple(int(v) for v in inp["shape"])
        # Outputs in the subgraph's order (as TFLiteGraph returns them), each without its batch-1 axis.
        self._outputs = [(d["index"], tuple(int(v) for v in d["shape"])) for d in self._it.get_output_details()]
        self._lock = threading.Lock()

    @classmethod
    def from_task(cls, task: str | Path, member: str, threads: int = 1) -> LiteRTGraph:
        with zipfile.ZipFile(task) as z:
            return cls(z.read(member), threads)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
        if a.shape[1:] != self._input_shape[1:]:
            raise ValueError(f"input of shape {a.shape[1:]} for a network that takes {self._input_shape[1:]}")
        n = len(a)
        outs = [np.empty((n, *(s[1:] if len(s) > 1 and s[0] == 1 else s)), np.float32) for _, s in self._outputs]
        with self._lock:
            for i in range(n):
                self._it.set_tensor(self._input, a[i : i + 1])
                self._it.invoke()
                for o, (j, _) in zip(outs, self._outputs):
                    o[i] = self._it.get_tensor(j).reshape(o.shape[1:])
        return [torch.from_numpy(o) for o in outs]

    # TFLiteGraph is an nn.Module: the landmarker moves and switches it like one.
    def to(self, device: str | torch.device) -> LiteRTGraph:
        if torch.device(device).type != "cpu":
            raise ValueError(f"LiteRT networks run on the CPU only, not on {device}: use runtime='torch' there")
        return self

    def eval(self) -> LiteRTGraph:
        return self
