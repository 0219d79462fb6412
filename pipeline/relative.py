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

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from affectline.types import ACADEMIC_CLASSES, TimeGrid
from pipeline.bins import bin_mean
from recognition.academic.cues import CUE_INPUTS, CueBaseline, CueModel

_ACAD = [c.lower() for c in ACADEMIC_CLASSES]


def sample_scores(model: CueModel, part, baseline: CueBaseline) -> tuple[np.ndarray, np.ndarray]:
    """(academic (n, 5), engagement (n,)) of a chunk track's samples read against ``baseline``,
    withheld as the readability gate decided in the chunk (``ChunkTrack.readable``: no
    academic emotion for an unreadable face; ``pose_ok``: no engagement where the head pose
    does not hold up), exactly as the chunk's own bins withheld them."""
    acad, eng = model.predict_inputs(part.cue_inputs, np.ones(part.n_samples, bool), baseline)
    acad[~np.asarray(part.readable, bool)] = np.nan
    eng[~np.asarray(part.pose_ok, bool)] = np.nan
    return acad, eng


def _has_inputs(p) -> bool:
    n = p.n_samples
    return n > 0 and len(p.cue_inputs) == n and len(p.readable) == n and len(p.pose_ok) == n


def person_baseline(model: CueModel, parts: list, grid: TimeGrid) -> CueBaseline:
    """The person's session baseline from the readable samples of all their chunk tracks
    (the readability gate's judgement, ``recognition.face.readability``: a face too small,
    turned or blurred teaches nothing about the resting face)."""
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


@dataclass
class CueSamples:
    """One person's samples as the person-relative pass reads them (concatenated chunk tracks)."""

    times: np.ndarray  # (n,) seconds
    cue_inputs: np.ndarray  # (n, len(CUE_INPUTS))
    readable: np.ndarray  # (n,) bool
    pose_ok: np.ndarray  # (n,) bool
    bins: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def n_samples(self) -> int:
        return len(self.times)

    @classmethod
    def of(cls, parts: list) -> CueSamples:
        parts = [p for p in parts if _has_inputs(p)]
        if not parts:
            return cls(np.zeros(0), np.zeros((0, len(CUE_INPUTS)), np.float32), np.zeros(0, bool), np.zeros(0, bool))
        cat = lambda k: np.concatenate([np.asarray(getattr(p, k)) for p in parts])  # noqa: E731
        return cls(cat("times").astype(np.float64), cat("cue_inputs"), cat("readable").astype(bool),
                   cat("pose_ok").astype(bool))  # fmt: skip


def reread_bins(bins: pd.DataFrame, samples: CueSamples, model: CueModel, baseline: CueBaseline,
                grid: TimeGrid) -> pd.DataFrame:  # fmt: skip
    """A stored track's bins (e.g. a part of a person cut by a human correction) re-read
    against another baseline (a clinician's, ``clinician_baseline``) from the person's samples
    inside those bins' span."""
    if not len(bins) or not samples.n_samples:
        return bins
    t0, t1 = float(bins["t_start"].min()), float(bins["t_end"].max())
    m = (samples.times >= t0 - 1e-6) & (samples.times < t1)
    if not m.any():
        return bins
    part = CueSamples(samples.times[m], np.asarray(samples.cue_inputs)[m], samples.readable[m], samples.pose_ok[m], bins)
    return rescore_bins(part, model, baseline, grid)


def clinician_baseline(model: CueModel, baseline) -> CueBaseline | None:
    """The cue model's baseline from a child's calibration baseline (``recognition.personal.
    calibration.Baseline``: medians of the clinician-tagged baseline bins, or of all their bins):
    its centre's blendshapes, head pose and FER probabilities, worth its number of bins. None for
    the identity (no calibration)."""
    from affectline.features import BLENDSHAPE_NAMES, POSE_NAMES
    from recognition.personal.population import TAU

    _NB, _NP = len(BLENDSHAPE_NAMES), len(POSE_NAMES)

    if baseline is None or baseline.is_identity:
        return None
    c = np.asarray(baseline.center, np.float64)
    probs = np.clip(np.exp(c[_NB + _NP :]) - TAU, 0.0, 1.0)  # the centre is a median of log(p + TAU)
    b = model.baseline_from_center(c[:_NB], c[_NB : _NB + _NP], probs, baseline.n_bins, source="clinician")
    return b
