"""dlib's face descriptors computed in torch (recognition.reid.TorchFaceEmbedder) against dlib itself.

Every comparison is on real faces: the group photo, crowd frames (1080p) and the head-turn
clip (270p). Figures reached here (CPU): the network on dlib's own chips and the whole
torch pipeline both give dlib's descriptors to cosine > 0.9999999 (euclidean < 1e-5);
numpy landmarks equal dlib's integer landmarks; torch chips equal dlib's bit for bit,
also for faces big enough to go through dlib's image pyramid.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from affectline.settings import Settings
from affectline.types import Detections
from recognition.reid import FaceEmbedder, TorchFaceEmbedder, load_embedder
from recognition.reid.chips import chip_geometry, extract_chips
from recognition.reid.dlib_format import DlibFormatError
from recognition.reid.embedder import _dlib_box, square_boxes
from recognition.reid.landmarks import ShapePredictor, load_shape_predictor, parse_shape_predictor
from recognition.reid.resnet import BLOCKS, load_face_resnet, parse_face_resnet
from tests.paths import MEDIA, ROOT

# The GPU machine may lack dlib and cv2: there only the torch-only CUDA test runs.
try:
    import dlib
    import face_recognition_models as frm

    from tests import realseq
    from tests.realseq import annotated, read_frames, read_image
except ImportError:
    dlib = frm = realseq = None
needs_dlib = pytest.mark.skipif(dlib is None, reason="dlib, face_recognition_models or cv2 not installed")


@lru_cache(maxsize=1)
def model_dir() -> str:
    """A fresh folder per test process, so the conversion path is exercised too."""
    import tempfile

    return tempfile.mkdtemp(prefix="reid_torch_")


@lru_cache(maxsize=1)
def torch_embedder() -> TorchFaceEmbedder:
    return TorchFaceEmbedder(model_dir())


@lru_cache(maxsize=1)
def dlib_models():
    return (
        dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


@lru_cache(maxsize=1)
def real_faces() -> tuple[list[np.ndarray], list[Detections]]:
    """Frames and face boxes: group photo, four annotated crowd frames, four head-turn frames."""
    frames, dets = [read_image("group_multiface.jpg")], []
    dets.append(Detections(annotated("group_multiface.jpg")[0][0], np.ones(6)))
    crowd = annotated("crowd_walk_1080p.mp4")
    imgs, _ = read_frames("crowd_walk_1080p.mp4", sorted(crowd))
    for i, img in zip(sorted(crowd), imgs):
        boxes = np.concatenate(crowd[i])  # clear and hard faces alike
        frames.append(img), dets.append(Detections(boxes, np.ones(len(boxes))))
    turns, _ = read_frames("two_people_head_turns_270p.mp4", [0, 20, 40, 55])
    for img, d in zip(turns, realseq.mtcnn().detect(turns)):
        frames.append(img), dets.append(Detections(d.boxes, d.scores))
    assert sum(len(d) for d in dets[-4:]) >= 5, "MTCNN found too few faces in the head-turn clip"
    return frames, dets


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_dlib
def test_parser_reads_the_whole_network():
    data = open(frm.face_recognition_model_location(), "rb").read()
    w = parse_face_resnet(data)
    assert len(w.convs) == 1 + 2 * len(BLOCKS) and len(w.affines) == len(w.convs)
    assert w.convs[0].weight.shape == (32, 3, 7, 7) and (w.convs[0].stride, w.convs[0].padding) == (2, 0)
    assert [c.stride for c in w.convs].count(2) == 5  # the stem and four down blocks
    assert w.fc.shape == (256, 128)
    np.testing.assert_allclose(w.channel_means, (122.782, 117.001, 104.298), atol=1e-3)
    with pytest.raises(DlibFormatError, match="face.dat: .* at byte"):
        parse_face_resnet(data[: len(data) // 2], "face.dat")


@needs_dlib
def test_torch_network_gives_dlibs_descriptors_on_dlibs_chips():
    sp, net = dlib_models()
    frames, dets = real_faces()
    chips = []
    for img, d in zip(frames, dets):
        for box in d.boxes:
            chips.append(dlib.get_face_chip(img, sp(img, _dlib_box(box)), 150, 0.25))
    ref = np.array([np.asarray(net.compute_face_descriptor(c)) for c in chips], np.float32)
    import torch

    ours = torch_embedder().embed_chips(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float())
    cos, euc = _cos(ours, ref), np.linalg.norm(ours - ref, axis=1)
    print(f"\n{len(chips)} chips: min cosine {cos.min():.9f}, max euclidean {euc.max():.2e}")
    assert len(chips) >= 40
    assert cos.min() >= 0.999 and euc.max() < 1e-3


@needs_dlib
def test_numpy_landmarks_are_dlibs():
    sp, _ = dlib_models()
    frames, dets = real_faces()
    rects = square_boxes(np.concatenate([d.boxes for d in dets]))
    idx = np.repeat(np.arange(len(frames)), [len(d) for d in dets])
    ref = np.array([[(p.x, p.y) for p in sp(frames[u], dlib.rectangle(*map(int, r))).parts()] for u, r in zip(idx, rects)])
    ours = load_shape_predictor(model_dir())(frames, idx, rects)
    err = np.abs(ours - ref).max(-1)
    print(f"\n{len(ref)} faces: landmark error max {err.max()} px, {np.mean(err == 0):.1%} of points exact")
    assert ours.shape == ref.shape and err.max() <= 1 and np.mean(err == 0) >= 0.98


@needs_dlib
def test_shape_predictor_parser_rejects_a_truncated_file():
    data = open(frm.pose_predictor_five_point_model_location(), "rb").read()
    with pytest.raises(DlibFormatError, match="sp.dat: "):
        parse_shape_predictor(data[:100_000], "sp.dat")
    # Faces with no box pixels inside the image still come out (dlib reads them as black).
    sp = load_shape_predictor(model_dir())
    out = sp([np.zeros((50, 50, 3), np.uint8)], np.zeros(1, int), np.array([[100, 100, 140, 140]]))
    assert out.shape == (1, 5, 2) and isinstance(sp, ShapePredictor)


@needs_dlib
def test_torch_chips_are_dlibs_chips():
    sp, _ = dlib_models()
    frames, dets = real_faces()
    n_same, n_all = 0, 0
    for img, d in zip(frames, dets):
        shapes = [sp(img, _dlib_box(b)) for b in d.boxes]
        if not shapes:
            continue
        ref = np.stack([dlib.get_face_chip(img, s, 150, 0.25) for s in shapes]).astype(int)
        lm = np.array([[(p.x, p.y) for p in s.parts()] for s in shapes])
        geom = chip_geometry(lm)
        assert (geom.level == -1).all()  # no face here is big enough for dlib's pyramid
        ours = extract_chips([img], np.zeros(len(lm), int), geom).permute(0, 2, 3, 1).numpy().astype(int)
        assert np.abs(ours - ref).max() <= 1
        n_same, n_all = n_same + (ours == ref).sum(), n_all + ref.size
    assert n_same / n_all >= 0.999


@needs_dlib
def test_torch_embedder_matches_dlib_end_to_end_and_batches():
    frames, dets = real_faces()
    ref = np.concatenate([FaceEmbedder().embed(f, d) for f, d in zip(frames, dets)])
    te = torch_embedder()
    many = te.embed_many(frames, dets)
    assert [m.shape for m in many] == [(len(d), 128) for d in dets] and all(m.dtype == np.float32 for m in many)
    ours = np.concatenate(many)
    cos, euc = _cos(ours, ref), np.linalg.norm(ours - ref, axis=1)
    print(f"\n{len(ref)} faces end to end: min cosine {cos.min():.9f}, max euclidean {euc.max():.2e}")
    assert cos.min() >= 0.999 and euc.max() < 0.01
    # One frame at a time and small forward batches give the same numbers as one big batch.
    np.testing.assert_allclose(te.embed(frames[1], dets[1]), many[1], atol=1e-5)
    small = TorchFaceEmbedder(model_dir(), batch_size=4)
    np.testing.assert_allclose(np.concatenate(small.embed_many(frames, dets)), ours, atol=1e-5)


@needs_dlib
def test_big_faces_are_cut_from_dlibs_pyramid():
    """Faces over ~250 px: dlib cuts their chips from an image pyramid, reproduced in torch."""
    import cv2

    sp, _ = dlib_models()
    img = read_image("group_multiface.jpg")
    faces = annotated("group_multiface.jpg")[0][0]
    big = cv2.resize(img, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)  # faces 430-580 px
    dets = Detections(faces * 6, np.ones(len(faces)))
    shapes = [sp(big, _dlib_box(b)) for b in dets.boxes]
    lm = np.array([[(p.x, p.y) for p in s.parts()] for s in shapes])
    geom = chip_geometry(lm)
    assert (geom.level == 1).all()  # two pyramid steps down
    for i, s in enumerate(shapes):  # one face per call, as get_face_chip
        ref = dlib.get_face_chip(big, s, 150, 0.25).astype(int)
        one = chip_geometry(lm[i : i + 1])
        ours = extract_chips([big], np.zeros(1, int), one).permute(0, 2, 3, 1).numpy()[0].astype(int)
        assert np.abs(ours - ref).max() <= 1 and (ours == ref).mean() >= 0.999
    ref = FaceEmbedder().embed(big, dets)  # all faces in one call: one pyramid over their union
    ours = torch_embedder().embed(big, dets)
    cos, euc = _cos(ours, ref), np.linalg.norm(ours - ref, axis=1)
    print(f"\npyramid faces: min cosine {cos.min():.9f}, max euclidean {euc.max():.2e}")
    assert cos.min() >= 0.999 and euc.max() < 0.01


@needs_dlib
def test_no_faces_and_bad_frames():
    te, img = torch_embedder(), read_image("group_multiface.jpg")
    assert te.embed(img, Detections.empty()).shape == (0, 128)
    assert [m.shape for m in te.embed_many([img, img], [Detections.empty(), Detections.empty()])] == [(0, 128)] * 2
    with pytest.raises(ValueError, match="frame must be RGB uint8"):
        te.embed(img.astype(np.float32), Detections.empty())
    with pytest.raises(ValueError, match="2 frames but 1 detection sets"):
        te.embed_many([img, img], [Detections.empty()])
    with pytest.raises(ValueError, match="face boxes must be finite"):
        te.embed(img, Detections(np.array([[10, 10, np.nan, 50]]), np.ones(1)))
    # A face box far outside the frame gives a descriptor of a black chip, no error.
    assert np.isfinite(te.embed(img, Detections(np.array([[5000, 5000, 5100, 5100]]), np.ones(1)))).all()


@needs_dlib
def test_converted_weights_load_without_the_dat_files(tmp_path):
    """The GPU machine has torch but no dlib: the cached conversion must be enough."""
    load_face_resnet(tmp_path)  # converts and caches
    load_shape_predictor(tmp_path)
    assert len(list(tmp_path.glob("dlib_face_resnet_*.pt"))) == 1 and len(list(tmp_path.glob("dlib_shape5_*.npz"))) == 1
    missing = tmp_path / "nowhere.dat"
    net = load_face_resnet(tmp_path, dat_path=missing)
    import torch

    x = torch.full((1, 3, 150, 150), 128.0)
    np.testing.assert_allclose(net(x).numpy(), load_face_resnet(tmp_path)(x).numpy())
    with pytest.raises(FileNotFoundError, match="no converted copy"):
        load_face_resnet(tmp_path / "empty", dat_path=missing)


@needs_dlib
def test_embedder_runs_with_torch_and_numpy_alone(tmp_path):
    """What the GPU machine has: no dlib, no cv2, no face_recognition_models, only the cached conversion."""
    import subprocess
    import sys

    frames, dets = real_faces()
    np.save(tmp_path / "frame.npy", frames[0])
    np.save(tmp_path / "boxes.npy", dets[0].boxes)
    load_face_resnet(tmp_path), load_shape_predictor(tmp_path)
    code = f"""
import sys
for name in ("dlib", "cv2", "face_recognition_models"):
    sys.modules[name] = None  # any import of them now fails
import numpy as np
from affectline.types import Detections
from recognition.reid import TorchFaceEmbedder
boxes = np.load({str(tmp_path / "boxes.npy")!r})
e = TorchFaceEmbedder({str(tmp_path)!r}).embed(np.load({str(tmp_path / "frame.npy")!r}), Detections(boxes, np.ones(len(boxes))))
np.save({str(tmp_path / "out.npy")!r}, e)
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), torch_embedder().embed(frames[0], dets[0]), atol=1e-5)


@needs_dlib
def test_load_embedder_follows_settings(tmp_path):
    assert Settings().embedder == "torch"
    assert isinstance(load_embedder(Settings(model_dir=tmp_path), "cpu"), TorchFaceEmbedder)
    assert isinstance(load_embedder(Settings(model_dir=tmp_path, embedder="dlib"), "cpu"), FaceEmbedder)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    """Torch, numpy and pillow only: CUDA gives the CPU path's chips and descriptors."""
    import json

    import torch
    from PIL import Image

    img = Image.open(MEDIA / "group_multiface.jpg").convert("RGB")
    gt = json.loads((ROOT / "tests" / "fixtures" / "faces_gt.json").read_text())
    boxes = np.array(gt["media"]["group_multiface.jpg"]["0"]["faces"], np.float32).reshape(-1, 4)
    big = img.resize((img.width * 6, img.height * 6), Image.BICUBIC)  # faces big enough for the pyramid
    frames = [np.asarray(img), np.asarray(big)]
    dets = [Detections(boxes, np.ones(len(boxes))), Detections(boxes * 6, np.ones(len(boxes)))]
    md = Settings().model_dir  # holds the converted models where face_recognition_models is absent
    cpu_e, gpu_e = TorchFaceEmbedder(md, device="cpu"), TorchFaceEmbedder(md, device="cuda")
    idx = np.repeat([0, 1], len(boxes))
    rects = square_boxes(np.concatenate([d.boxes for d in dets]))
    lm = cpu_e.landmarks(frames, idx, rects)
    chip_diff = (gpu_e.chips(frames, idx, lm).cpu() - cpu_e.chips(frames, idx, lm)).abs()
    cpu = np.concatenate(cpu_e.embed_many(frames, dets))
    gpu = np.concatenate(gpu_e.embed_many(frames, dets))
    cos = _cos(gpu, cpu)
    print(f"\ncuda vs cpu on {torch.cuda.get_device_name()}: chips max diff {chip_diff.max():.0f}, "
          f"{(chip_diff == 0).float().mean():.4%} equal; min cosine {cos.min():.7f}")
    assert chip_diff.max() <= 1 and (chip_diff == 0).float().mean() >= 0.999
    assert cos.min() >= 0.9999
