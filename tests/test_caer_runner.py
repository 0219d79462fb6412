"""CLIP-CAER in the pipeline: window crops from a track, batched scoring, bounded consumption, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recognition.academic.caer_data import letterbox
from recognition.academic.caer_runner import CaerScorer, window_crops
from recognition.academic.clip_caer import ClipCaer

from tests.paths import caer_fixture
from tests.paths import MEDIA

FIXTURE = caer_fixture(module=True)


@pytest.fixture(scope="module")
def model() -> ClipCaer:
    heads = json.loads((FIXTURE / "config.json").read_text())["small_clip"]["transformer_heads"]
    return ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth", text_heads=heads)


@pytest.fixture(scope="module")
def windows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(FIXTURE / "inputs_a.npz") as f, np.load(FIXTURE / "expected_a.npz") as e:
        return f["face"], f["context"], e["probs"]


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_scores_match_official_probabilities(model, windows, batch_size):
    face, ctx, probs = windows
    scorer = CaerScorer(model, batch_size=batch_size)
    got = scorer.score(face, ctx)
    assert got.shape == (2, 5) and got.dtype == np.float32
    assert np.abs(got - probs).max() < 1e-5
    assert np.allclose(got.sum(1), 1, atol=1e-6)


def test_iterators_are_consumed_one_batch_at_a_time(model, windows):
    """Memory is bounded by the batch size: the scorer never pulls more than one batch ahead."""
    face, ctx, probs = windows
    n, bs = 5, 2
    pulled = {"face": 0}
    seen_at_forward: list[int] = []

    def faces():
        for i in range(n):
            pulled["face"] += 1
            yield face[i % 2]

    scorer = CaerScorer(model, batch_size=bs)
    original = scorer.model.forward
    scorer.model.forward = lambda *a, **k: (seen_at_forward.append(pulled["face"]), original(*a, **k))[1]
    try:
        got = scorer.score(faces(), (ctx[i % 2] for i in range(n)))
    finally:
        del scorer.model.forward
    assert got.shape == (5, 5)
    assert seen_at_forward == [2, 4, 5]
    assert np.abs(got - probs[[0, 1, 0, 1, 0]]).max() < 1e-5


def test_mismatched_window_counts(model, windows):
    face, ctx, _ = windows
    scorer = CaerScorer(model, batch_size=1)
    with pytest.raises(ValueError, match="fewer context windows"):
        scorer.score(face, ctx[:1])
    with pytest.raises(ValueError, match="more context windows"):
        scorer.score(face[:1], ctx)
    assert scorer.score(face[:0], ctx[:0]).shape == (0, 5)


def test_provenance(model):
    scorer = CaerScorer(model)
    assert scorer.name == "clip-caer" and len(scorer.sha256) == 64
    assert scorer.class_names == ("Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction")


def test_window_crops_on_real_footage():
    """A 16-frame window of a person in real footage: widened face box, letterboxed context, NaN = no face."""
    import decord

    vr = decord.VideoReader(str(MEDIA / "two_people_head_turns_270p.mp4"))
    frames = vr.get_batch(list(range(0, 48, 3))).asnumpy()
    assert frames.shape == (16, 270, 480, 3)
    face_boxes = np.tile(np.array([[100.0, 60.0, 160.0, 130.0]]), (16, 1))
    face_boxes[3] = np.nan
    context = np.array([40.0, 20.0, 240.0, 270.0])
    faces, contexts = window_crops(frames, face_boxes, context, size=224)
    assert faces.shape == contexts.shape == (16, 224, 224, 3) and faces.dtype == np.uint8
    ref = np.asarray(Image.fromarray(frames[0][40:150, 80:180]).resize((224, 224), Image.BILINEAR))
    assert np.array_equal(faces[0], ref)
    assert np.array_equal(faces[3], np.asarray(Image.fromarray(frames[3]).resize((224, 224), Image.BILINEAR)))
    assert np.array_equal(contexts[5], letterbox(frames[5][20:270, 40:240], 224))
    assert contexts[5][:, :10].max() == 0  # 200 x 250 box -> 179 x 224, black side bars
    per_frame, _ = window_crops(frames, face_boxes, np.tile(context, (16, 1)), size=224)
    assert np.array_equal(per_frame, faces)
    with pytest.raises(ValueError, match="16 frames but 15 face boxes"):
        window_crops(frames, face_boxes[:15], context)


def test_scoring_real_crops_runs(model):
    """Crops of any size go in; they are fitted to the model size like the official loader."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (3, 16, 64, 48, 3), dtype=np.uint8)
    ctx = rng.integers(0, 256, (3, 16, 90, 160, 3), dtype=np.uint8)
    probs = CaerScorer(model, batch_size=2).score(face, ctx)
    assert probs.shape == (3, 5) and np.isfinite(probs).all()


@pytest.mark.gpu
def test_gpu_autocast_close_to_cpu(model, windows):
    face, ctx, probs = windows
    gpu = ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth", text_heads=2, device="cuda")
    got = CaerScorer(gpu, batch_size=2, device="cuda").score(face, ctx)
    assert got.shape == (2, 5) and np.abs(got - probs).max() < 0.05
    torch.cuda.empty_cache()
