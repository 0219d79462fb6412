"""Face pose matrix from landmarks: MediaPipe's face geometry pipeline, batched in torch.

MediaPipe's ``geometry_pipeline_metadata_landmarks.binarypb`` holds the canonical face
mesh (468 vertices) and the Procrustes basis (landmark ids and weights). The pipeline
(perspective camera, 63 degree vertical field of view, near plane 1, origin at the top
left) projects the screen landmarks onto the near plane, estimates the canonical-to-face
scale twice with a weighted orthogonal Procrustes fit, unprojects the landmarks with that
scale and fits once more; the last fit is the 4x4 pose matrix. Here every step runs on a
batch of faces (float64, torch.linalg.svd).
"""

from __future__ import annotations

import math
import struct

import numpy as np
import torch

N_MESH = 468  # the geometry pipeline ignores the 10 iris landmarks
VERTICAL_FOV_DEG = 63.0
NEAR = 1.0


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes) -> list[tuple[int, int, object]]:
    """Protobuf wire format, one level: (field number, wire type, value)."""
    out, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i : i + 8], i + 8
        elif wt == 5:
            v, i = struct.unpack("<f", b[i : i + 4])[0], i + 4
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i : i + n], i + n
        else:
            raise ValueError(f"protobuf wire type {wt} is not supported")
        out.append((num, wt, v))
    return out


def parse_geometry_metadata(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(canonical (468, 3) float32, weights (468,) float32) from the binarypb.

    GeometryPipelineMetadata: 1 canonical_mesh (Mesh3d: 1 vertex_type, 3 vertex_buffer
    floats), 2 procrustes_landmark_basis (1 landmark_id, 2 weight), 3 input_source.
    Vertex type 0 (VERTEX_PT) is x, y, z, u, v per vertex.
    """
    mesh, basis, source = None, [], 0
    for num, wt, v in _fields(data):
        if num == 1 and wt == 2:
            mesh = v
        elif num == 2 and wt == 2:
            ref = {n: x for n, _, x in _fields(v)}
            basis.append((int(ref.get(1, 0)), float(ref.get(2, 0.0))))
        elif num == 3 and wt == 0:
            source = v
    if mesh is None:
        raise ValueError("geometry metadata has no canonical mesh")
    if source == 2:  # FACE_DETECTION_PIPELINE rewrites z from the canonical mesh: not this file
        raise ValueError("geometry metadata is for the face-detection pipeline, not landmarks")
    vtype, floats = 0, []
    for num, wt, v in _fields(mesh):
        if num == 1 and wt == 0:
            vtype = v
        elif num == 3 and wt == 5:
            floats.append(v)
        elif num == 3 and wt == 2:  # packed
            floats.extend(np.frombuffer(v, "<f4").tolist())
    if vtype != 0:
        raise ValueError(f"canonical mesh vertex type {vtype} is not VERTEX_PT")
    verts = np.asarray(floats, np.float32).reshape(-1, 5)[:, :3]
    weights = np.zeros(len(verts), np.float32)
    for i, w in basis:
        weights[i] = w
    return verts, weights


class FaceGeometry(torch.nn.Module):
    """``forward(landmarks (B, >=468, 3) normalised to the image, width, height) -> (B, 4, 4)``."""

    def __init__(self, canonical: np.ndarray, weights: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("canonical", torch.as_tensor(np.asarray(canonical), dtype=torch.float64).T.contiguous())
        self.register_buffer("sqrt_w", torch.as_tensor(np.asarray(weights), dtype=torch.float64).sqrt())

    def _fit(self, target: torch.Tensor) -> torch.Tensor:
        """Weighted orthogonal Procrustes, canonical -> target (B, 3, N): (B, 4, 4) with scale."""
        sw = self.sqrt_w
        total = (sw * sw).sum()
        a = self.canonical * sw  # (3, N)
        b = target * sw  # (B, 3, N)
        centre = (a * sw).sum(-1, keepdim=True) / total
        ac = a - centre * sw
        u, _, vt = torch.linalg.svd(b @ ac.T)
        flip = (torch.linalg.det(u) * torch.linalg.det(vt)) < 0
        u = torch.where(flip[:, None, None], u * torch.tensor([1.0, 1.0, -1.0], dtype=u.dtype, device=u.device), u)
        r = u @ vt
        scale = ((r @ ac) * b).sum((-1, -2)) / (ac * a).sum()
        rs = scale[:, None, None] * r
        t = ((b - rs @ a) * sw).sum(-1) / total
        m = torch.zeros(target.shape[0], 4, 4, dtype=target.dtype, device=target.device)
        m[:, :3, :3] = rs
        m[:, :3, 3] = t
        m[:, 3, 3] = 1.0
        return m

    @torch.no_grad()
    def forward(self, landmarks: torch.Tensor, width: int, height: int) -> torch.Tensor:
        if landmarks.shape[0] == 0:
            return torch.zeros(0, 4, 4, dtype=torch.float64, device=landmarks.device)
        h_near = 2.0 * NEAR * math.tan(0.5 * math.radians(VERTICAL_FOV_DEG))
        w_near = width * h_near / height
        left, bottom = -0.5 * w_near, -0.5 * h_near
        s = landmarks[:, :N_MESH, :].to(torch.float64).transpose(1, 2).clone()  # (B, 3, N)
        s[:, 1] = 1.0 - s[:, 1]  # origin at the top-left corner
        s = s * torch.tensor([w_near, h_near, w_near], dtype=s.dtype, device=s.device)[:, None]
        s[:, 0] += left
        s[:, 1] += bottom
        depth = s[:, 2].mean(-1, keepdim=True)

        def unproject(scale: torch.Tensor) -> torch.Tensor:
            m = s.clone()
            m[:, 2] = (m[:, 2] - depth + NEAR) / scale[:, None]
            m[:, 0] = m[:, 0] * m[:, 2] / NEAR
            m[:, 1] = m[:, 1] * m[:, 2] / NEAR
            m[:, 2] = -m[:, 2]  # screen space is left-handed, metric space right-handed
            return m

        flipped = s.clone()
        flipped[:, 2] = -flipped[:, 2]
        scale1 = self._fit(flipped)[:, :3, 0].norm(dim=-1)
        scale2 = self._fit(unproject(scale1))[:, :3, 0].norm(dim=-1)
        return self._fit(unproject(scale1 * scale2))
