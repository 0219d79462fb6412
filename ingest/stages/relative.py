"""The person-relative pass: each linked person's academic emotions and engagement re-read against their own baseline.

The cue model (``recognition.academic.cues``) reads a cue against a person's resting
face: a resting frown is not Confusion, a naturally narrow eye not Fatigue, a student
facing the board rather than the camera not Distraction. The resting face is the
median of the person's readable samples over the *whole session*, so it can only be
known after linking (a chunk sees a few seconds of a person; a person spans chunks).
Chunk results therefore keep, per sample, the cue model's raw inputs
(``ChunkTrack.cue_inputs``), and this pass, run by ``link_chunk_results`` on every
person, fits the baseline over all their chunk tracks and re-bins the scores of each
chunk track's own bins. A chunked job and a single-pass run link the same chunk
results, so they give the same timelines.

A person seen briefly falls back on the population: the baseline's weight is
n / (n + ``CueParams.baseline_prior_n``), n the distinct seconds (bins) they were read in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from affectline.types import ACADEMIC_CLASSES, TimeGrid
from ingest.stages.bins import bin_mean
from recognition.academic.cues import CUE_INPUTS, CueBaseline, CueModel

_YAW, _PITCH = CUE_INPUTS.index("yaw"), CUE_INPUTS.index("pitch")
_ACAD = [c.lower() for c in ACADEMIC_CLASSES]


def _gate():
    """The readability gate's ``judge`` (``recognition.face.readability``), None where it is not installed."""
    try:
        from recognition.face.readability import judge
    except ImportError:
        return None
    return judge


def readable_samples(face_boxes: np.ndarray, cue_inputs: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    """(n,) bool: may this face-frame be read against the person (and count towards their baseline)?

    The one place that decides it for the cue model. With the readability gate
    (``recognition.face.readability``) its judgement (size, landmarks, pose, blur);
    without it, whether the landmarker read the face (a face too small to landmark has
    only FER's reading of a few pixels: no resting face can be learnt from it).
    """
    n = len(cue_inputs)
    x = np.asarray(cue_inputs, np.float64).reshape(n, len(CUE_INPUTS))
    found = np.isfinite(x).all(1)  # every landmark input present (the expression ones too)
    judge = _gate()
    if judge is None:
        return found
    pose = np.stack([x[:, _YAW], x[:, _PITCH], np.zeros(n)], axis=1)
    return np.asarray(judge(face_boxes, found, pose, sharp).readable, bool)


def sample_scores(model: CueModel, part, baseline: CueBaseline) -> tuple[np.ndarray, np.ndarray]:
    """(academic (n, 5), engagement (n,)) of a chunk track's samples: readable ones against
    ``baseline``; the others as the population reads them, or, where the readability gate
    is installed, with no academic emotion at all (it stores none for an unreadable face)."""
    ok = np.asarray(part.readable, bool)
    vis = np.ones(part.n_samples, bool)
    acad, eng = model.predict_inputs(part.cue_inputs, vis)
    if ok.any():
        a, e = model.predict_inputs(np.asarray(part.cue_inputs)[ok], vis[ok], baseline)
        acad[ok], eng[ok] = a, e
    if _gate() is not None:
        acad[~ok] = np.nan
    return acad, eng


def _has_inputs(p) -> bool:
    return len(p.cue_inputs) == p.n_samples and len(p.readable) == p.n_samples and p.n_samples > 0


def person_baseline(model: CueModel, parts: list, grid: TimeGrid) -> CueBaseline:
    """The person's session baseline from the readable samples of all their chunk tracks."""
    parts = [p for p in parts if _has_inputs(p)]
    if not parts:
        return CueBaseline.population()
    x = np.concatenate([np.asarray(p.cue_inputs, np.float64)[p.readable] for p in parts])
    t = np.concatenate([np.asarray(p.times, np.float64)[p.readable] for p in parts])
    return model.fit_baseline(x, np.asarray(grid.index(t), np.int64))


def rescore_bins(part, model: CueModel, baseline: CueBaseline, grid: TimeGrid, academic: bool = True) -> pd.DataFrame:
    """The chunk track's bins with engagement (and, with ``academic``, the five academic
    columns) re-read against ``baseline``: each bin the mean of its samples' scores, as
    ``bin_samples`` made it. Bins without samples (no face) keep their verdict; so does
    everything else in the row (``sample_scores`` says how unreadable samples are scored)."""
    bins = part.bins
    if not _has_inputs(part) or not len(bins):
        return bins
    acad, eng = sample_scores(model, part, baseline)
    k = np.asarray(grid.index(np.asarray(part.times, np.float64)), np.int64)
    rows = np.asarray(grid.index(bins["t_start"].to_numpy() + 1e-9 * grid.step), np.int64)
    first = int(min(k.min(), rows.min()))
    nb = int(max(k.max(), rows.max())) - first + 1
    a_mean, e_mean = bin_mean(acad, k - first, nb), bin_mean(eng, k - first, nb)[:, 0]
    has = np.bincount(k - first, minlength=nb) > 0
    r = rows - first
    sel = has[r]
    out = bins.copy()
    out.loc[sel, "engagement"] = e_mean[r[sel]].astype(out["engagement"].dtype)
    if academic:
        for j, c in enumerate(_ACAD):
            out.loc[sel, c] = a_mean[r[sel], j].astype(out[c].dtype)
    return out


def relative_parts(parts: list, model: CueModel, grid: TimeGrid, academic: bool = True,
                   baseline: CueBaseline | None = None) -> tuple[list, CueBaseline]:  # fmt: skip
    """A person's chunk tracks with their bins re-read against ``baseline`` (default: the
    person's session baseline, ``person_baseline``); returns (new parts, the baseline used)."""
    from dataclasses import replace

    b = baseline if baseline is not None else person_baseline(model, parts, grid)
    return [replace(p, bins=rescore_bins(p, model, b, grid, academic)) for p in parts], b
