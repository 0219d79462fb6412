"""The three networks and the geometry data of ``face_landmarker.task``, as torch-loadable data.

Reading the .task file needs the ``tflite`` package; the result is cached under
``Settings.model_dir`` as ``face_landmarker_torch-<sha256[:16]>.pt`` (keyed by the
task file's pinned sha256), which ``torch.load(weights_only=True)`` reads back with
torch alone, e.g. on a GPU machine where ``tflite`` is not installed:
``python -m recognition.face.mesh.weights`` converts here and prints the file to copy into
that machine's model_dir.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from affectline.settings import Settings, get_settings

MEMBERS = {
    "detector": "face_detector.tflite",
    "mesh": "face_landmarks_detector.tflite",
    "blendshapes": "face_blendshapes.tflite",
}
GEOMETRY_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
FORMAT = 1  # bump when the cached layout changes


def cache_path(settings: Settings | None = None) -> Path:
    from recognition.registry import specs

    s = settings or get_settings()
    return Path(s.model_dir) / f"face_landmarker_torch-{specs()['face_landmarker'].sha256[:16]}.pt"


def _tensorise(program: dict[str, Any]) -> dict[str, Any]:
    out = dict(program)
    out["consts"] = {int(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in program["consts"].items()}
    return out


def convert_task(task: Path) -> dict[str, Any]:
    """Everything the torch landmarker needs, read from the .task zip (needs ``tflite``)."""
    from recognition.face.mesh.geometry import parse_geometry_metadata
    from recognition.face.mesh.tflite_reader import read_tflite

    with zipfile.ZipFile(task) as z:
        programs = {k: _tensorise(read_tflite(z.read(m))) for k, m in MEMBERS.items()}
        canonical, weights = parse_geometry_metadata(z.read(GEOMETRY_MEMBER))
    return {
        "format": FORMAT,
        "programs": programs,
        "canonical": torch.from_numpy(canonical),
        "weights": torch.from_numpy(weights),
    }


def load_converted(settings: Settings | None = None) -> dict[str, Any]:
    """The converted networks: from the cache if present, else converted from the .task and cached."""
    path = cache_path(settings)
    if path.exists():
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("format") == FORMAT:
            return data
    from recognition.registry import resolve

    try:
        import tflite  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"{path} is missing and converting face_landmarker.task needs the 'tflite' package; "
            "convert on a machine that has it and copy the file into model_dir"
        ) from e
    data = convert_task(resolve("face_landmarker", settings))
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(f".{os.getpid()}.part")
    torch.save(data, staged)
    os.replace(staged, path)  # atomic: concurrent workers never read half a file
    return data


if __name__ == "__main__":  # python -m recognition.face.mesh.weights: convert once, print the file to carry
    print(cache_path() if load_converted() else "")
