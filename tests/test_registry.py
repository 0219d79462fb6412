"""Model registry: pinned files resolved from a local dir, the official URL, or the PyPI wheel."""

from pathlib import Path

import pytest

from affectline.settings import Settings
from recognition.registry import ModelNotFound, resolve, sha256_of, specs


def test_every_model_is_pinned_with_a_package_fallback():
    for spec in specs().values():
        assert len(spec.sha256) == 64
        if spec.npm:  # an npm package at an exact version, with its registry tarball
            name, _, version = spec.npm.rpartition("@")
            assert name and version[:1].isdigit() and spec.member and spec.tarball.endswith(f"-{version}.tgz")
        elif spec.path:  # committed in the repository: the file there is the pinned one
            assert sha256_of(Path(__file__).resolve().parents[1] / spec.path) == spec.sha256
        else:
            assert spec.wheel and "==" in spec.wheel and spec.member


def _npm_spec(tmp_path: Path, payload: bytes, **kw):
    """A pinned file inside a local npm-style tarball (package/...), its URL a file:// one."""
    import hashlib
    import io
    import tarfile

    from recognition import registry

    tgz = tmp_path / "pkg-1.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        info = tarfile.TarInfo("package/models/m.bin")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    fields = dict(name="npm_x", filename="m.bin", sha256=hashlib.sha256(payload).hexdigest(), npm="pkg@1.0.0",
                  tarball=tgz.as_uri(), member="package/models/m.bin")  # fmt: skip
    fields.update(kw)
    return registry.ModelSpec(**fields)


def test_npm_source_extracts_verifies_and_caches(tmp_path: Path, monkeypatch):
    from recognition import registry

    monkeypatch.setattr(registry.shutil, "which", lambda _name: None)  # no npm client: the tarball URL
    spec = _npm_spec(tmp_path, b"weights" * 100)
    registry.specs()["npm_x"] = spec
    try:
        s = Settings(model_dir=tmp_path / "cache", model_sources=("dir", "npm"))
        path = resolve("npm_x", s)
        assert path == tmp_path / "cache" / "m.bin" and path.read_bytes() == b"weights" * 100
        (tmp_path / "pkg-1.0.0.tgz").unlink()  # cached: the next run is local
        assert resolve("npm_x", s) == path
        registry.specs()["npm_x"] = _npm_spec(tmp_path, b"other bytes", sha256="0" * 64, filename="n.bin")
        with pytest.raises(ModelNotFound, match="npm pkg@1.0.0:package/models/m.bin.*does not match"):
            resolve("npm_x", s)
    finally:
        del registry.specs()["npm_x"]


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
