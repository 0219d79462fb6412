"""The torch FaceLandmarker against MediaPipe itself, on real footage.

Faces are dlib HOG boxes on the group photo, the head-turn clip (frames 0, 17, 20, 40, 43,
eyes open and shut) and the crowd (frames 40, 60, 90). Two comparisons:
  * the same 256 x 256 crop (cv2.warpAffine, as the MediaPipe wrapper makes it) through
    MediaPipe's FaceLandmarker and through ``TorchFaceLandmarker.analyze_crops``: this
    measures the re-implemented graph (detector, region, mesh, blendshapes, geometry);
  * ``FaceLandmarker.analyze`` against ``TorchFaceLandmarker.analyze_many`` on the frames:
    each makes its own crops (on the CPU both with cv2.warpAffine).
Both network runtimes (the torch graph; LiteRT's XNNPACK) are compared. Tolerances reached on
this footage (25 faces; printed by ``-s``), asserted with margin:
  same crop:   landmarks 0.002 px mean / 0.015-0.018 px max (crop px), blendshapes 0.00003
               mean absolute difference / 0.0023 max, head pose 0.005-0.008 degrees max;
  own crops:   landmarks 0.003 px mean / 0.021-0.025 px max (crop px, overstated: see below),
               blendshapes 0.00003 / 0.0023, head pose 0.008 degrees max.
With the torch warps (grid_sample, what CUDA runs; ``warps='torch'``) the own crops differ
from cv2's by 1 grey level in ~0.05% of pixels: landmarks 0.05 / 0.4 px, blendshapes
0.0006 / 0.025, pose 0.19 degrees (``test_torch_warps_stay_close``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from affectline.settings import Settings
from affectline.types import Detections
from recognition.face.landmarks import FaceLandmarker, LandmarkResult, crop_transform, pose_from_matrix
from recognition.face.landmarker import load_landmarker
from recognition.face.mesh.landmarker import TorchFaceLandmarker

from tests.paths import MEDIA, ROOT

# cv2, decord and dlib are imported where used: the GPU test runs where only torch, numpy
# and pillow are installed.


def hog(frame: np.ndarray, upsample: int) -> Detections:
    import dlib

    rects = dlib.get_frontal_face_detector()(frame, upsample)
    boxes = np.array(sorted([r.left(), r.top(), r.right(), r.bottom()] for r in rects), np.float32).reshape(-1, 4)
    return Detections(boxes, np.ones(len(boxes)))


@pytest.fixture(scope="module")
def footage() -> list[tuple[str, np.ndarray, Detections]]:
    """(name, frame, boxes) of the three sources; 20+ faces in all."""
    import cv2
    import decord

    out = []
    group = cv2.cvtColor(cv2.imread(str(MEDIA / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    out.append(("group", group, hog(group, 1)))
    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    dets = hog(vr[0].asnumpy(), 1)  # the two sit still: frame 0's boxes serve the clip
    out += [(f"turns{i}", vr[i].asnumpy(), dets) for i in (0, 17, 20, 40, 43)]
    vr = decord.VideoReader(str(MEDIA / "crowd_walk_1080p.mp4"))
    for i in (40, 60, 90):
        f = vr[i].asnumpy()
        out.append((f"crowd{i}", f, hog(f, 0)))
    assert sum(len(d) for _, _, d in out) >= 20
    return out


@pytest.fixture(scope="module", params=["torch", "litert"])
def torch_lm(request) -> TorchFaceLandmarker:
    """The re-implemented graph with each network runtime (torch's graph; LiteRT's XNNPACK), two sets side by side."""
    with TorchFaceLandmarker(Settings(), device="cpu", runtime=request.param, threads=2) as lm:
        yield lm


@pytest.fixture(scope="module")
def mediapipe_graph():
    """MediaPipe's own FaceLandmarker on whole crops, options as the wrapper sets them."""
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from recognition.registry import resolve

    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(resolve("face_landmarker"))),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
        min_face_detection_confidence=0.5,
        min_face_presence_confidence=0.5,
    )
    g = vision.FaceLandmarker.create_from_options(opts)
    yield g
    g.close()


def crops_of(footage, scale: float = 1.8) -> np.ndarray:
    import cv2

    out = []
    for _, frame, dets in footage:
        for b in dets.boxes:
            a = crop_transform(b, scale, 256)[0]
            out.append(cv2.warpAffine(frame, a, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
    return np.stack(out)


def test_same_crop_gives_mediapipes_landmarks_blendshapes_and_pose(footage, torch_lm, mediapipe_graph):
    import mediapipe as mp

    crops = crops_of(footage)
    got = torch_lm.analyze_crops(crops)
    lm_err, bs_err, pose_err, found = [], [], [], []
    for j, crop in enumerate(crops):
        res = mediapipe_graph.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop)))
        found.append(bool(res.face_landmarks))
        if not res.face_landmarks or not got.found[j]:
            continue
        ref = np.array([(p.x, p.y, p.z) for p in res.face_landmarks[0]], np.float32)
        lm_err.append(np.linalg.norm(got.landmarks[j, :, :2] - ref[:, :2], axis=1) * 256)
        bs_err.append(np.abs(got.blendshapes[j] - [c.score for c in res.face_blendshapes[0]]))
        ref_pose = pose_from_matrix(np.asarray(res.facial_transformation_matrixes[0]))
        pose_err.append(np.abs(pose_from_matrix(got.matrix[j]) - ref_pose))
    assert found == got.found.tolist()
    assert len(lm_err) >= 18  # most HOG faces are found at 1.8x
    lm_err, bs_err, pose_err = map(np.concatenate, (lm_err, bs_err, pose_err))
    print(
        f"\nsame crop, {len(crops)} crops: landmarks {lm_err.mean():.4f}/{lm_err.max():.4f} px (mean/max), "
        f"blendshapes {bs_err.mean():.5f}/{bs_err.max():.4f}, pose {pose_err.max():.4f} deg max"
    )
    assert lm_err.mean() < 0.01 and lm_err.max() < 0.05
    assert bs_err.mean() < 0.0002 and bs_err.max() < 0.01
    assert pose_err.max() < 0.02


def test_frames_give_the_mediapipe_wrappers_results(footage, torch_lm):
    frames, dets = [f for _, f, _ in footage], [d for _, _, d in footage]
    with FaceLandmarker() as mpl:
        ref = [mpl.analyze(f, d) for f, d in zip(frames, dets)]
    got = torch_lm.analyze_many(frames, dets)
    lm_err, bs_err, pose_err = [], [], []
    for (name, _, d), r, g in zip(footage, ref, got):
        assert isinstance(g, LandmarkResult) and len(g) == len(d)
        assert g.found.tolist() == r.found.tolist(), name
        m = r.found
        if not m.any():
            continue
        # Landmark error in crop pixels: frame pixels times 256 / the crop side, taken as 1.3x the box's
        # longer side (the smallest scale tried; most faces are found at 1.8x, so this overstates it).
        side = np.maximum(d.boxes[m, 2] - d.boxes[m, 0], d.boxes[m, 3] - d.boxes[m, 1]) * 1.3
        lm_err.append((np.linalg.norm(g.landmarks[m, :, :2] - r.landmarks[m, :, :2], axis=2) * (256 / side)[:, None]).ravel())
        bs_err.append(np.abs(g.blendshapes[m] - r.blendshapes[m]).ravel())
        pose_err.append(np.abs(g.pose[m] - r.pose[m]).ravel())
        assert np.isnan(g.landmarks[~m]).all() and np.isnan(g.pose[~m]).all()
    lm_err, bs_err, pose_err = map(np.concatenate, (lm_err, bs_err, pose_err))
    print(
        f"\nown crops: landmarks {lm_err.mean():.4f}/{lm_err.max():.4f} crop px (mean/max), "
        f"blendshapes {bs_err.mean():.5f}/{bs_err.max():.4f}, pose {pose_err.max():.4f} deg max"
    )
    assert lm_err.mean() < 0.01 and lm_err.max() < 0.1
    assert bs_err.mean() < 0.0002 and bs_err.max() < 0.01
    assert pose_err.max() < 0.05


def test_torch_warps_stay_close(footage):
    """The grid_sample warps (what CUDA runs) against cv2's on the same frames and boxes."""
    frames, dets = [f for _, f, _ in footage], [d for _, _, d in footage]
    with TorchFaceLandmarker(Settings(), device="cpu", warps="torch") as tw:
        assert tw.warps == "torch"
        got = tw.analyze_many(frames, dets)
    with TorchFaceLandmarker(Settings(), device="cpu") as cw:
        assert cw.warps == "cv2"
        ref = cw.analyze_many(frames, dets)
    for g, r in zip(got, ref):
        m = g.found & r.found
        assert (g.found == r.found).mean() >= 0.95
        assert np.abs(g.blendshapes[m] - r.blendshapes[m]).max(initial=0) < 0.05
        assert np.abs(g.pose[m] - r.pose[m]).max(initial=0) < 0.5


def test_one_batch_across_frames_equals_frame_by_frame(footage, torch_lm):
    frames, dets = [f for _, f, _ in footage[:6]], [d for _, _, d in footage[:6]]
    many = torch_lm.analyze_many(frames, dets)
    for f, d, m in zip(frames, dets, many):
        one = torch_lm.analyze(f, d)
        assert one.found.tolist() == m.found.tolist()
        np.testing.assert_allclose(one.landmarks[one.found], m.landmarks[m.found], atol=2e-3)
        np.testing.assert_allclose(one.blendshapes[one.found], m.blendshapes[m.found], atol=2e-4)
        np.testing.assert_allclose(one.pose[one.found], m.pose[m.found], atol=1e-2)


def test_bad_boxes_and_empty_input(torch_lm, footage):
    _, frame, dets = footage[0]
    boxes = np.concatenate([dets.boxes[:1], [[np.nan, 0, 10, 10], [50, 50, 40, 60]]]).astype(np.float32)
    r = torch_lm.analyze(frame, Detections(boxes, np.ones(3)))
    assert r.found.tolist() == [True, False, False]
    assert len(torch_lm.analyze(frame, Detections(np.zeros((0, 4), np.float32), np.zeros(0)))) == 0
    assert torch_lm.analyze_many([], []) == []
    with pytest.raises(ValueError, match="uint8"):
        torch_lm.analyze(frame.astype(np.float32), dets)


def test_settings_pick_the_landmarker():
    with load_landmarker(Settings(landmarker="torch"), "cpu") as fl:
        assert isinstance(fl, TorchFaceLandmarker) and fl.runtime == "torch" and fl.warps == "cv2"
    for name in ("litert", "auto"):  # auto: LiteRT's networks on the CPU, torch's on CUDA
        with load_landmarker(Settings(landmarker=name), "cpu", threads=2) as fl:
            assert isinstance(fl, TorchFaceLandmarker) and fl.runtime == "litert" and len(fl._sets) == 2
    with load_landmarker(Settings(landmarker="mediapipe"), "cpu") as fl:
        assert isinstance(fl, FaceLandmarker)
    with pytest.raises(ValueError, match="CPU only"):
        load_landmarker(Settings(landmarker="litert"), "cuda")
    with pytest.raises(ValueError, match="runtime"):
        TorchFaceLandmarker(Settings(), device="cpu", runtime="tensorrt")


def test_litert_landmarker_needs_litert(monkeypatch):
    """Where ai-edge-litert is missing, 'auto' falls back to MediaPipe and 'litert' says what to install."""
    from recognition.face.mesh import litert

    monkeypatch.setattr(litert, "available", lambda: False)
    with load_landmarker(Settings(landmarker="auto"), "cpu") as fl:
        assert isinstance(fl, FaceLandmarker)
    with pytest.raises(RuntimeError, match="ai-edge-litert"):
        load_landmarker(Settings(landmarker="litert"), "cpu")


def test_without_opencv_the_torch_warps_run(monkeypatch):
    from recognition.face.mesh import landmarker

    monkeypatch.setattr(landmarker, "_cv2", lambda: None)
    assert TorchFaceLandmarker(Settings(), device="cpu").warps == "torch"
    with pytest.raises(ValueError, match="needs OpenCV"):
        TorchFaceLandmarker(Settings(), device="cpu", warps="cv2")


def test_converted_file_runs_with_torch_and_numpy_only(torch_lm, footage, tmp_path):
    """What a GPU machine without tflite, mediapipe or cv2 runs: the cached .pt, torch and numpy."""
    _, frame, dets = footage[0]
    np.save(tmp_path / "frame.npy", frame)
    np.save(tmp_path / "boxes.npy", dets.boxes)
    ref = TorchFaceLandmarker(Settings(), device="cpu", warps="torch").analyze(frame, dets)
    code = f"""
import sys
for m in ("tflite", "mediapipe", "cv2", "dlib"):
    sys.modules[m] = None  # importing any of them now fails
import numpy as np
from affectline.types import Detections
from recognition.face.mesh.landmarker import TorchFaceLandmarker
frame, boxes = np.load({str(tmp_path / "frame.npy")!r}), np.load({str(tmp_path / "boxes.npy")!r})
lm = TorchFaceLandmarker(device="cpu")
assert lm.warps == "torch"  # no cv2 here: grid_sample makes the crops
r = lm.analyze(frame, Detections(boxes, np.ones(len(boxes))))
np.save({str(tmp_path / "bs.npy")!r}, r.blendshapes)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "bs.npy"), ref.blendshapes, atol=1e-5)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    """CUDA against CPU on the hand-annotated faces of the group photo and crowd frame 0 (read
    with pillow and the JSON of boxes: no cv2, dlib or mediapipe needed on the GPU machine)."""
    import torch
    from PIL import Image

    assert isinstance(load_landmarker(Settings(landmarker="auto"), "cuda"), TorchFaceLandmarker)
    gt = json.loads((ROOT / "tests" / "fixtures" / "faces_gt.json").read_text())["media"]
    frame = np.asarray(Image.open(MEDIA / "group_multiface.jpg").convert("RGB"))
    boxes = np.array(gt["group_multiface.jpg"]["0"]["faces"], np.float32)
    frames, dets = [frame, frame[::2, ::2].copy()], [Detections(boxes, np.ones(len(boxes))), Detections(boxes / 2, np.ones(len(boxes)))]
    cpu = TorchFaceLandmarker(Settings(), device="cpu", warps="torch").analyze_many(frames, dets)
    gpu = TorchFaceLandmarker(Settings(), device="cuda").analyze_many(frames, dets)
    assert torch.cuda.is_available()
    for c, g in zip(cpu, gpu):
        assert c.found.sum() >= 5 and c.found.tolist() == g.found.tolist()
        m = c.found
        lm = np.abs(c.landmarks[m, :, :2] - g.landmarks[m, :, :2])
        bs = np.abs(c.blendshapes[m] - g.blendshapes[m])
        print(f"\ncuda vs cpu: landmarks {lm.mean():.4f}/{lm.max():.4f} frame px, blendshapes {bs.mean():.5f}/{bs.max():.4f}, "
              f"pose {np.abs(c.pose[m] - g.pose[m]).max():.3f} deg")
        assert lm.max() < 0.5 and bs.max() < 0.03
        assert np.abs(c.pose[m] - g.pose[m]).max() < 0.5
