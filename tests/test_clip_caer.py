"""CLIP-CAER model: parity with the official fixture, checkpoint layout, safe loading, weight lookup."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from recognition.academic import caer_checkpoint as ckpt
from recognition.academic.caer_data import context_crop, face_crop, letterbox
from recognition.academic.clip_caer import CLIP_ARCHS, ClipCaer, build_clip, clip_from_weights
from recognition.academic.descriptors import class_descriptors

from tests.paths import caer_fixture

FIXTURE = caer_fixture(module=True)


@pytest.fixture(scope="module")
def config() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())


@pytest.fixture(scope="module")
def fixture_model(config) -> ClipCaer:
    return ClipCaer.from_official_checkpoint(
        FIXTURE / "checkpoint.pth", text_heads=config["small_clip"]["transformer_heads"]
    )


@pytest.fixture(scope="module")
def inputs() -> dict:
    with np.load(FIXTURE / "inputs_a.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def expected() -> dict:
    with np.load(FIXTURE / "expected_a.npz") as f:
        return {k: f[k] for k in f.files}


# ----------------------------------------------------------------------------- parity with the official model


def test_logits_match_official_fixture(fixture_model, inputs, expected):
    logits = fixture_model.logits(inputs["face"], inputs["context"])
    assert logits.shape == (2, 5) and logits.dtype == np.float32
    assert np.abs(logits - expected["logits"]).max() < 5e-5
    assert (logits.argmax(1) == expected["pred"]).all()
    assert np.allclose(fixture_model.probabilities(inputs["face"], inputs["context"]), expected["probs"], atol=1e-5)


def test_intermediates_match_official_fixture(fixture_model, inputs, expected):
    m = fixture_model
    with torch.no_grad():
        face, ctx = m.to_input(inputs["face"], "face"), m.to_input(inputs["context"], "context")
        assert torch.equal(face, torch.from_numpy(inputs["face"]).permute(0, 1, 4, 2, 3).float() / 255)
        frames_f, frames_c = m.encode_frames(face), m.encode_frames(ctx)
        vid_f, vid_c = m.temporal_net(frames_f), m.temporal_net_body(frames_c)
        fused = m.project_fc(torch.cat([vid_f, vid_c], -1))
        prompts = m.prompt_learner()
        text_raw = m.text_encoder(prompts, m.eot_index)
        got = {
            "frame_face_features": frames_f,
            "frame_context_features": frames_c,
            "video_face_features": vid_f,
            "video_context_features": vid_c,
            "fused_unnormalised": fused,
            "video_features": m.video_features(face, ctx),
            "prompt_embeddings": prompts,
            "text_features_unnormalised": text_raw,
            "text_features": m.text_features(),
        }
    for name, value in got.items():
        assert np.abs(value.numpy() - expected[name]).max() < 1e-4, name
    assert m.eot_index.tolist() == expected["eot_index"].tolist() == [33, 32, 36, 36, 37]


def test_eot_and_descriptor_tokens_recovered_from_checkpoint_alone(fixture_model, expected):
    """The prompt buffers decode back to token ids; open_clip's bundled BPE re-tokenises the text to the same ids."""
    from open_clip.tokenizer import SimpleTokenizer

    text = fixture_model.recovered_descriptors()
    ids = SimpleTokenizer()([" ".join(["X"] * 8) + " " + t for t in text])
    assert np.array_equal(ids.numpy(), expected["tokenized_prompts"])


def test_text_heads_default_rule_and_override(config, inputs, expected):
    """Heads are invisible in the weights: width//64 (=1 here) is the default, the fixture needs the override (2)."""
    default = ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth")
    assert default.dims.clip.text_heads == 64 // 64
    assert np.abs(default.logits(inputs["face"], inputs["context"]) - expected["logits"]).max() > 1e-2
    with pytest.raises(ckpt.CheckpointError, match="not divisible"):
        ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth", text_heads=3)


def test_state_dict_layout_is_official(fixture_model):
    keys = json.loads((FIXTURE / "state_dict_keys.json").read_text())["keys"]
    sd = fixture_model.official_state_dict()
    assert list(sd) == [k["key"] for k in keys]
    assert all(list(sd[k["key"]].shape) == k["shape"] for k in keys)
    buffers = {k["key"] for k in keys if k["kind"] == "buffer"}
    assert buffers == {n for n, _ in fixture_model.named_buffers() if n in sd}


def test_provenance(fixture_model):
    assert fixture_model.name == "clip-caer"
    assert fixture_model.sha256 == ckpt.sha256_of(FIXTURE / "checkpoint.pth")


def test_resized_inputs_follow_official_crops(fixture_model, inputs):
    """Frames that are not the model size: faces resized ignoring aspect, contexts letterboxed."""
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (1, 16, 150, 120, 3), dtype=np.uint8)
    ctx = rng.integers(0, 256, (1, 16, 100, 260, 3), dtype=np.uint8)
    manual_f = np.stack([face_crop(f, None, 224) for f in face[0]])[None]
    manual_c = np.stack([letterbox(f, 224) for f in ctx[0]])[None]
    assert np.array_equal(fixture_model.logits(face, ctx), fixture_model.logits(manual_f, manual_c))
    with pytest.raises(ValueError, match="uint8"):
        fixture_model.logits(face.astype(np.float32), ctx)


def test_crop_geometry():
    frame = np.zeros((50, 100, 3), np.uint8)
    frame[:, :50] = 200
    lb = letterbox(frame, 224)  # r = 2.24 -> 224 x 112, 56 black rows above and below
    assert lb.shape == (224, 224, 3)
    assert lb[:56].max() == 0 and lb[-56:].max() == 0 and lb[60:160, 5, 0].min() == 200
    img = np.arange(80 * 90 * 3, dtype=np.uint8).reshape(80, 90, 3)
    crop = face_crop(img, (30.7, 25.2, 50.9, 45.0), 41, margin=20)  # -> [10, 5, 70, 65), resized 60x60 -> 41x41
    from PIL import Image

    ref = np.asarray(Image.fromarray(img[5:65, 10:70]).resize((41, 41), Image.BILINEAR))
    assert np.array_equal(crop, ref)
    assert face_crop(img, (np.nan,) * 4, 16).shape == (16, 16, 3)
    assert np.array_equal(context_crop(img, (0, 0, 45, 40), 40)[:, :, 0], letterbox(img[:40, :45], 40)[:, :, 0])


# ----------------------------------------------------------------------------- any checkpoint of the layout


def _random_model(seed: int, dims: ckpt.ClipDims, n_ctx: int = 8, depth: int = 1) -> ClipCaer:
    torch.manual_seed(seed)
    return ClipCaer.for_training(build_clip(dims), class_descriptors(), n_ctx=n_ctx, temporal_depth=depth).eval()


def test_other_dims_round_trip_through_official_layout(tmp_path):
    """Different widths, depths, patch, grid, context count and a head count that is not width//64."""
    dims = ckpt.ClipDims(512, 192, 3, 16, 4, 192, 1, 2, 77, 49408)
    model = _random_model(7, dims, n_ctx=6, depth=2)
    expected_eot = model.eot_index.tolist()
    path = model.save_checkpoint(tmp_path / "other.pth", epoch=3, best_acc=41.5, with_meta=False)
    raw = torch.load(path, weights_only=False)
    assert sorted(raw) == ["best_acc", "epoch", "optimizer", "recorder", "state_dict"]
    assert len(raw["optimizer"]["param_groups"]) == 5
    sd = raw["state_dict"]
    assert (
        sd["image_encoder.proj"].untyped_storage().data_ptr()
        == sd["clip_model_.visual.proj"].untyped_storage().data_ptr()
    )

    loaded = ClipCaer.from_official_checkpoint(path, text_heads=2)
    assert loaded.dims == model.dims
    assert loaded.eot_index.tolist() == expected_eot
    assert [t.replace(" ", "") for t in loaded.recovered_descriptors()] == [
        d.lower().replace(" ", "") for d in class_descriptors()
    ]
    rng = np.random.default_rng(1)
    face, ctx = (rng.integers(0, 256, (2, 16, 64, 64, 3), dtype=np.uint8) for _ in range(2))
    assert np.allclose(loaded.logits(face, ctx), model.logits(face, ctx), atol=1e-6)


def test_our_checkpoints_record_text_heads(tmp_path):
    dims = ckpt.ClipDims(512, 64, 1, 16, 2, 192, 1, 2, 77, 49408)
    model = _random_model(3, dims)
    loaded = ClipCaer.from_official_checkpoint(model.save_checkpoint(tmp_path / "m.pth"))
    assert loaded.dims.clip.text_heads == 2 and loaded.descriptors == tuple(class_descriptors())


def test_alias_disagreement_resolves_to_clip_model(tmp_path):
    model = _random_model(5, CLIP_ARCHS["tiny"])
    sd = {k: v.clone() for k, v in model.official_state_dict().items()}
    sd["image_encoder.proj"] = torch.zeros_like(sd["image_encoder.proj"])
    loaded = ClipCaer.from_state_dict(sd)
    assert torch.equal(loaded.image_encoder.proj, model.clip_model_.visual.proj)


# ----------------------------------------------------------------------------- safe loading


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_disallowed_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "state_dict": {}, "recorder": _Evil(marker)}, path)
    with pytest.raises(ckpt.CheckpointError, match=r"refused to load.*system"):
        ClipCaer.from_official_checkpoint(path)
    assert not marker.exists()


def test_numpy1_checkpoint_names_are_allowed(tmp_path):
    """A file written under numpy 1 names numpy.core.multiarray.*: rewrite the fixture's pickle that way."""
    src, dst = FIXTURE / "checkpoint.pth", tmp_path / "np1.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(dst)
    data = ckpt.load_checkpoint(dst)
    assert float(data["best_acc"]) == 20.0 and data["recorder"].epoch_losses.shape == (20, 2)


def test_missing_file_message(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nope.pth")


# ----------------------------------------------------------------------------- real weights, found locally


def test_missing_weights_say_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    from affectline.settings import Settings

    assert Settings().resolved_hf_hub_cache == tmp_path / "hub"  # HF's own variable, read by Settings
    with pytest.raises(ckpt.WeightsNotFound) as e:
        ckpt.find_clip_weights(model_dir=tmp_path / "models", settings=Settings())
    msg = str(e.value)
    assert (
        "ViT-B-32.pt" in msg
        and str(tmp_path / "models") in msg
        and "--clip-weights" in msg
        and "nothing is downloaded" in msg
    )
    monkeypatch.delenv("AFFECTLINE_CAER_CHECKPOINT", raising=False)
    from affectline.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(ckpt.WeightsNotFound) as e:
            ckpt.find_caer_checkpoint(model_dir=tmp_path / "models")
    finally:
        get_settings.cache_clear()
    assert "AFFECTLINE_CAER_CHECKPOINT" in str(e.value) and str(tmp_path / "models" / "clip_caer.pth") in str(e.value)


@pytest.mark.parametrize("fmt", ["ViT-B-32.pt", "open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_clip_weights_from_local_files(tmp_path, monkeypatch, fmt):
    """OpenAI's TorchScript archive, an open_clip state dict and safetensors are all found and loaded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    clip = build_clip(CLIP_ARCHS["tiny"]).eval()
    path = tmp_path / "models" / fmt
    path.parent.mkdir()
    if fmt.endswith(".pt"):
        torch.jit.script(clip).save(str(path))
    elif fmt.endswith(".bin"):
        torch.save(clip.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    from affectline.settings import Settings

    found = ckpt.find_clip_weights(model_dir=tmp_path / "models", settings=Settings())
    assert found == path
    loaded = clip_from_weights(found)
    assert all(torch.equal(a, b) for a, b in zip(clip.state_dict().values(), loaded.state_dict().values()))


def test_wrong_layouts_fail_with_one_clear_line():
    sd = dict(ClipCaer.from_official_checkpoint(FIXTURE / "checkpoint.pth", text_heads=2).official_state_dict())
    del sd["project_fc.bias"]
    with pytest.raises(ckpt.CheckpointError, match="missing.*project_fc.bias"):
        ClipCaer.from_state_dict(sd, text_heads=2)
    sd["project_fc.bias"] = torch.zeros(7)
    with pytest.raises(ckpt.CheckpointError, match="size mismatch.*project_fc.bias"):
        ClipCaer.from_state_dict(sd, text_heads=2)
    with pytest.raises(ckpt.CheckpointError, match="no 'prompt_learner.ctx'"):
        ClipCaer.from_state_dict({"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="embed dim 256"):
        ClipCaer.for_training(build_clip(ckpt.ClipDims(256, 64, 1, 16, 2, 64, 1, 1, 77, 49408)), class_descriptors())
