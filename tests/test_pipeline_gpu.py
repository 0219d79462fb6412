"""The pipeline on CUDA: every model on the GPU, and the same persons and scores as on the CPU.

Skipped without a CUDA device (``gpu`` marker, see conftest). Tolerances: the GPU runs
the same float32 networks (CLIP-CAER under autocast), so detections may differ by a few
tenths of a pixel and per-bin scores by little; a bin's engagement within 0.1, its
expression and academic probabilities within 0.05, on bins both runs score.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.paths import MEDIA

pytestmark = pytest.mark.gpu


def _device_of(model) -> str:
    """Where a model's tensors live: its ``device`` attribute, or its first torch parameter's."""
    import torch

    for obj in (model, getattr(model, "net", None), getattr(model, "model", None)):
        if obj is None:
            continue
        if isinstance(obj, torch.nn.Module):
            p = next(obj.parameters(), None)
            if p is not None:
                return p.device.type
        dev = getattr(obj, "device", None)
        if dev is not None:
            return torch.device(dev).type
    return "unknown"


@pytest.fixture(scope="module")
def runs():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    out = {}
    for device in ("cpu", "cuda"):
        # Both runs on the torch face stack (MediaPipe and dlib have no CUDA path).
        with Pipeline(Settings(academic_model="cues", landmarker="torch", embedder="torch"), device=device) as p:
            if device == "cuda":
                for name in ("detector", "landmarker", "embedder", "expression"):
                    assert _device_of(getattr(p, name)) == "cuda", f"{name} is not on the GPU"
                assert p.batch_across_frames
            p.batch_across_frames = True  # the CPU reference follows the GPU's rule: only the numbers may differ
            out[device] = {v: p.apply(MEDIA / v, fps=4) for v in ("crowd_walk_1080p.mp4", "two_people_head_turns_270p.mp4")}
    return out


def _pairs(a, b):
    from recognition.tracking.geometry import iou

    for pa in a.tracks:
        best, score = None, 0
        for pb in b.tracks:
            _, ia, ib = np.intersect1d(np.round(pa.times * 1000), np.round(pb.times * 1000), return_indices=True)
            n = int((np.diag(iou(pa.face_boxes[ia], pb.face_boxes[ib])) >= 0.5).sum())
            if n > score:
                best, score = pb, n
        yield pa, best, score


@pytest.mark.parametrize("video", ["crowd_walk_1080p.mp4", "two_people_head_turns_270p.mp4"])
def test_cuda_run_gives_the_persons_and_scores_of_the_cpu_run(runs, video):
    cpu, gpu = runs["cpu"][video], runs["cuda"][video]
    assert len(gpu.tracks) == len(cpu.tracks) >= 2
    for pa, pb, score in _pairs(cpu, gpu):
        assert pb is not None and score >= 0.9 * len(pa.times), (pa.key, score, len(pa.times))
        assert pb.bins.t_start.tolist() == pa.bins.t_start.tolist()
        for cols, tol in ((["engagement"], 0.1), (["angry", "happy", "sad", "neutral", "surprise"], 0.05),
                          (["neutrality", "enjoyment", "confusion", "fatigue", "distraction"], 0.05)):  # fmt: skip
            x, y = pa.bins[cols].to_numpy(float), pb.bins[cols].to_numpy(float)
            both = np.isfinite(x) & np.isfinite(y)
            assert (np.isfinite(x) == np.isfinite(y)).mean() >= 0.9
            assert np.abs(x[both] - y[both]).max(initial=0) <= tol, (video, pa.key, cols)


def test_cuda_batches_across_faces_and_frames():
    """One landmarker and one embedder call take the faces of several frames at once on the GPU."""
    from affectline.settings import Settings
    from affectline.types import Detections
    from pipeline.analyse import _load_embedder, _load_landmarker
    from tests.realseq import classroom_of

    seq = classroom_of(n_faces=12, n_frames=4, size=(540, 960))
    dets = [Detections(b, np.ones(len(b))) for b in seq.gt_boxes]
    s = Settings(landmarker="torch", embedder="torch")
    lm, emb = _load_landmarker(s, "cuda"), _load_embedder(s, "cuda")
    assert hasattr(lm, "analyze_many") and hasattr(emb, "embed_many")
    res = lm.analyze_many(seq.frames, dets)
    assert [len(r) for r in res] == [12] * 4 and np.mean([r.found.mean() for r in res]) > 0.8
    e = emb.embed_many(seq.frames, dets)
    assert [x.shape for x in e] == [(12, 128)] * 4 and all(np.isfinite(x).all() for x in e)
