"""Face detectors on real footage, scored against hand-checked boxes (tests/fixtures/faces_gt.json)."""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import pytest

from affectline.settings import Settings
from affectline.types import Detections
from recognition.detection import DETECTORS, load_detector
from recognition.detection.evaluate import Score, score_frame
from tests.realseq import annotated, read_frames, read_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@cache
def detector(name: str, min_face_px: int = 12):
    return load_detector(name, Settings(min_face_px=min_face_px))


@lru_cache(maxsize=1)
def group() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    faces, hard = annotated("group_multiface.jpg")[0]
    return read_image("group_multiface.jpg"), faces, hard


@lru_cache(maxsize=1)
def classroom() -> tuple[list[np.ndarray], list]:
    gt = annotated("classroom_4students_270p.mp4")
    idx = [0, 20, 40]
    frames, _ = read_frames("classroom_4students_270p.mp4", idx)
    return frames, [gt[i] for i in idx]


def test_mtcnn_finds_all_six_faces_of_the_group_photo():
    img, faces, hard = group()
    d = detector("mtcnn").detect([img])[0]
    s = score_frame(d.boxes, faces, hard)
    assert s.tp == 6 and s.fp == 0, s
    # Five landmarks per face, inside the face, eyes above the mouth corners.
    lm = d.data["landmarks5"]
    assert lm.shape == (len(d), 5, 2)
    assert np.all((lm[..., 0] >= d.boxes[:, None, 0]) & (lm[..., 0] <= d.boxes[:, None, 2]))
    assert np.all(lm[:, :2, 1].max(1) < lm[:, 3:, 1].min(1))
    assert np.all((d.scores > 0.9) & (d.scores <= 1.0))


def test_mtcnn_finds_the_small_back_row_faces_of_the_classroom():
    frames, gts = classroom()
    dets = detector("mtcnn").detect(frames)
    total = sum((score_frame(d.boxes, f, h) for d, (f, h) in zip(dets, gts)), Score())
    assert total.recall >= 0.9 and total.fp <= 1, total
    assert min(float(d.widths.min()) for d in dets) < 14  # faces really are that small


def test_mtcnn_recall_on_the_crowd_downscaled_to_20_40_px_faces():
    gt = annotated("crowd_walk_1080p.mp4")
    idx = sorted(gt)
    scale = 0.4  # 1080p -> 768x432: faces of 50-95 px become 20-38 px
    frames, _ = read_frames("crowd_walk_1080p.mp4", idx, scale=scale)
    dets = detector("mtcnn").detect(frames)
    total = Score()
    for d, i in zip(dets, idx):
        faces, hard = gt[i][0] * scale, gt[i][1] * scale
        big = (faces[:, 2] - faces[:, 0]) >= 20
        # Faces that end up under 20 px are optional: neither a miss nor a false positive.
        total += score_frame(d.boxes, faces[big], np.concatenate([hard, faces[~big]]))
    assert total.recall >= 0.9 and total.fp <= 2, total


def test_batching_frames_changes_nothing():
    frames, _ = classroom()
    det = detector("mtcnn")
    together = det.detect(frames[:2])
    alone = [det.detect([f])[0] for f in frames[:2]]
    for a, b in zip(together, alone):
        assert len(a) == len(b)
        np.testing.assert_allclose(np.sort(a.boxes, 0), np.sort(b.boxes, 0), atol=1e-3)


def test_frames_of_different_sizes_in_one_batch():
    img, _faces, _ = group()
    frames, _ = classroom()
    out = detector("mtcnn").detect([frames[0], img, frames[1]])
    assert [len(d) for d in out] == [4, 6, 4]


def test_min_face_px_is_honoured():
    frames, _ = classroom()
    # The pyramid starts at min_face_px; box regression may still catch a face a little smaller.
    assert len(detector("mtcnn", min_face_px=40).detect(frames[:1])[0]) < 4
    assert len(detector("mtcnn", min_face_px=60).detect(frames[:1])[0]) == 0
    assert len(detector("mtcnn").detect(frames[:1])[0]) == 4


def test_dlib_hog_on_the_group_photo():
    img, faces, hard = group()
    s = score_frame(detector("dlib_hog").detect([img])[0].boxes, faces, hard)
    assert s.tp >= 5 and s.fp == 0, s


def test_dlib_mmod_on_part_of_the_group_photo():
    img, faces, hard = group()
    x0, y0, x1, y1 = 380, 20, 720, 320  # three faces; MMOD takes seconds per megapixel here
    inside = (faces[:, 0] >= x0) & (faces[:, 2] <= x1) & (faces[:, 1] >= y0) & (faces[:, 3] <= y1)
    assert inside.sum() == 3
    d = detector("dlib_mmod", min_face_px=80).detect([np.ascontiguousarray(img[y0:y1, x0:x1])])[0]
    s = score_frame(d.boxes, faces[inside] - [x0, y0, x0, y0], hard)
    assert s.tp == 3 and s.fp == 0, s


def test_mediapipe_needs_tiles_for_faces_a_tenth_of_the_frame():
    img, faces, hard = group()
    det = load_detector("mediapipe")
    whole = det.__class__(Settings(), tiled=False)
    try:
        tiled = score_frame(det.detect([img])[0].boxes, faces, hard)
        plain = score_frame(whole.detect([img])[0].boxes, faces, hard)
    finally:
        det.close()
        whole.close()
    assert tiled.tp >= 5, tiled
    assert plain.tp <= 1, plain  # BlazeFace short range squashes the frame to 128 px


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_detector_returns_one_detections_per_frame(name):
    det = load_detector(name, Settings(min_face_px=80))  # no upsampling for dlib: MMOD would take a minute
    try:
        blank = np.full((120, 160, 3), 127, np.uint8)
        out = det.detect([blank, blank])
        assert det.name == name
        assert len(out) == 2 and all(isinstance(d, Detections) and len(d) == 0 for d in out)
        assert det.detect([]) == []
    finally:
        det.close()


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match="unknown detector 'yolo'.*mtcnn"):
        load_detector("yolo")
    with pytest.raises(ValueError, match="frame 1 must be RGB uint8"):
        detector("mtcnn").detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="sequence of HxWx3"):
        detector("mtcnn").detect(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.gpu
def test_mtcnn_on_cuda_matches_cpu():
    img, _faces, _ = group()
    frames, _ = classroom()
    cpu = detector("mtcnn").detect([img, *frames])
    gpu = load_detector("mtcnn", Settings(), device="cuda").detect([img, *frames])
    for a, b in zip(cpu, gpu):
        assert len(a) == len(b)
        np.testing.assert_allclose(np.sort(a.boxes, 0), np.sort(b.boxes, 0), atol=0.5)


def test_detect_near_follows_the_walking_crowd():
    """The local search between whole searches, fed the faces of the frame before (4 fps):
    it finds the faces the whole search finds, and nothing else."""
    frames, _ = read_frames("crowd_walk_1080p.mp4", list(range(0, 60, 6)))
    det = detector("mtcnn")
    whole = [det.detect([f])[0] for f in frames]
    total = Score()
    for i in range(1, len(frames)):
        near = det.detect_near(frames[i], whole[i - 1].boxes)
        total += score_frame(near.boxes, whole[i].boxes)
    # Faces entering between frames are not near any previous box: the pipeline's next whole search finds them.
    assert total.recall >= 0.8 and total.fp == 0, total
    assert len(det.detect_near(frames[0], np.zeros((0, 4), np.float32))) == 0


def test_detect_near_finds_every_face_of_a_30_face_class():
    from tests.realseq import classroom_of

    seq = classroom_of(n_faces=30, n_frames=3, size=(540, 960))  # faces of 20-35 px, swaying
    det = detector("mtcnn")
    for i in (1, 2):
        near = det.detect_near(seq.frames[i], seq.gt_boxes[i - 1])
        s = score_frame(near.boxes, seq.gt_boxes[i])
        assert s.recall == 1.0 and s.fp == 0, s
        assert near.data["landmarks5"].shape == (len(near), 5, 2)


def test_detectors_without_a_local_search_search_the_whole_frame():
    img, faces, _ = group()
    det = detector("dlib_hog")
    whole = det.detect([img])[0]
    near = det.detect_near(img, faces[:1])
    assert np.array_equal(near.boxes, whole.boxes) and len(near) == len(faces)


def test_mtcnn_nets_take_raw_pixels_once_loaded():
    """The input scaling folded into each net's first convolution gives what the nets gave on
    (x - 127.5) / 128, black (0) pixels of out-of-frame crops included."""
    import torch

    from recognition.detection.mtcnn import ONet, PNet, RNet
    from recognition.registry import resolve

    model = detector("mtcnn").model
    img, _, _ = group()
    x = torch.from_numpy(img[:120, :160]).permute(2, 0, 1)[None].float()
    x[..., :10, :] = 0
    for cls, name, net, size in ((PNet, "mtcnn_pnet", model.pnet, None), (RNet, "mtcnn_rnet", model.rnet, 24),
                                 (ONet, "mtcnn_onet", model.onet, 48)):  # fmt: skip
        plain = cls().eval()
        plain.load_state_dict(torch.load(resolve(name), map_location="cpu", weights_only=True))
        inp = x if size is None else x[..., :size, :size]
        with torch.inference_mode():
            for a, b in zip(net(inp.contiguous(memory_format=torch.channels_last)), plain((inp - 127.5) * 0.0078125)):
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)


def test_refinement_crops_from_pyramid_levels_match_crops_from_the_frame():
    """R/O-Net crops are cut from the pyramid level nearest their size: they must show the same
    face as a crop averaged from the full frame (a misplaced level would shift or blur it)."""
    import torch
    from torchvision.ops import roi_align

    from recognition.detection.mtcnn import _pyramid_level, _Sources

    img, faces, _ = group()
    imgs = torch.from_numpy(img).permute(2, 0, 1)[None].float().contiguous()
    h, w = imgs.shape[2:]
    src, halves = _Sources(imgs), [imgs]
    for s in detector("mtcnn").model.scales(h, w):
        src.add(_pyramid_level(halves, h, w, s))
    c = (faces[:, :2] + faces[:, 2:]) / 2
    side = (faces[:, 2:] - faces[:, :2]).max(1, keepdims=True) * np.array([[0.6], [1.0], [2.5]])[:, None]
    boxes = torch.from_numpy(np.concatenate([np.concatenate([c - s / 2, c + s / 2], 1) for s in side])).float()
    idx = torch.zeros(len(boxes), dtype=torch.long)
    for size in (24, 48):
        got = src.crops(boxes, idx, size)
        rois = torch.cat([idx[:, None].float(), boxes], 1)
        want = roi_align(imgs, rois, (size, size), 1.0, sampling_ratio=-1, aligned=True)
        err = (got - want).abs().mean((1, 2, 3))
        assert float(err.max()) < 6.0, err  # grey levels out of 255
        moved = rois.clone()
        moved[:, [1, 3]] += (2 * (boxes[:, 2] - boxes[:, 0]) / size)[:, None]  # two crop pixels right
        shifted = roi_align(imgs, moved, (size, size), 1.0, sampling_ratio=-1, aligned=True)
        assert float(err.mean()) < float((shifted - want).abs().mean()) / 2  # far closer than a 2-pixel shift
