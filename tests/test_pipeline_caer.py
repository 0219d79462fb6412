"""CLIP-CAER in the pipeline: per-person windows, batched across persons, provenance recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectline.settings import Settings
from affectline.types import ACADEMIC_CLASSES
from recognition.registry import sha256_of


@pytest.fixture(scope="module")
def checkpoint(caer_fixture_dir: Path) -> Path:
    return caer_fixture_dir / "checkpoint.pth"


def test_pipeline_uses_clip_caer_windows_when_a_checkpoint_is_set(checkpoint, media_dir):
    from pipeline.analyse import Pipeline

    s = Settings(academic_model="auto", caer_checkpoint=checkpoint, caer_text_heads=2)  # the fixture's heads
    with Pipeline(s, device="cpu") as p:
        out = p.apply(media_dir / "two_people_head_turns_270p.mp4", fps=4)
    assert out.academic_model == f"clip-caer@{sha256_of(checkpoint)[:12]}"
    assert len(out.tracks) == 2
    firsts, windowed = [], 0
    for tr in out.tracks:
        acad = tr.bins[[c.lower() for c in ACADEMIC_CLASSES]].to_numpy()
        # The readability gate withholds academic emotions where no face-frame of the bin was readable.
        read = tr.bins["face_visible"].to_numpy(bool) & (tr.bins["readable"].to_numpy(float) > 0)
        assert np.isnan(acad[~read]).all()
        assert np.allclose(acad[read].sum(axis=1), 1, atol=1e-4)
        assert len(tr.times) == 18
        if read.any():
            firsts.append(acad[np.flatnonzero(read)[0]])
        # 18 samples at 4 fps: window 1 = samples 0-15 (0-4 s), window 2 = samples 16-17 (padded).
        # Bins 0-2 lie inside window 1, so they carry exactly its probabilities; bin 4 is window 2's.
        if read[:3].all() and read[4]:
            windowed += 1
            assert np.ptp(acad[:3], axis=0).max() < 1e-6
            assert np.abs(acad[4] - acad[0]).max() > 1e-4
    assert windowed >= 1  # not vacuous: one person is readable through both windows
    if len(firsts) == 2:
        assert not np.allclose(*firsts, atol=1e-4)  # the two people's windows were scored on their own crops  # the two people's windows were scored on their own crops


def test_missing_checkpoint_says_what_and_where(tmp_path):
    from pipeline.analyse import Pipeline

    s = Settings(academic_model="clip_caer", model_dir=tmp_path)
    from recognition.academic.caer_checkpoint import WeightsNotFound

    with pytest.raises(WeightsNotFound, match="AFFECTLINE_CAER_CHECKPOINT"):
        Pipeline(s, device="cpu")
