"""Calibration: a child's baseline fitted from their stored features (the clinicians' baseline tags
when there are enough, else all their bins), stored and activated, then their bins re-scored; and an
analysis's cues read against that baseline instead of the session's own median (``reread_bins``)."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from affectline.settings import Settings
from clinic.personalise import training_set
from clinic.rescore import rescore_person
from clinic.series import load_series
from recognition.personal import DEFAULT_WINDOW, Baseline, fit_baseline
from storage import person_models as pm
from storage.db import session_scope
from storage.tags import latest_tags, resolve_person


def calibrate_person(
    url: str, person: str | int, settings: Settings | None = None, *, activate: bool = True, actor: str = "system"
) -> tuple[int, Baseline]:
    """Fit and store a person's baseline (from baseline tags when there are enough); returns (version, baseline).

    The baseline calibrates the population model for a person without an active
    personal model; a personal model carries the baseline it was fitted with.
    """
    with session_scope(url) as s:
        p = resolve_person(s, person)
        series = load_series(s, p.id)
        tags = latest_tags(s, person_id=p.id)
        pid = p.id
    if not series:
        raise LookupError(f"person {pid} has no stored features; analyse a session with them first")
    _, bmask = training_set(series, tags, DEFAULT_WINDOW)
    baseline = fit_baseline(np.vstack([sr.X for sr in series]), bmask)
    with session_scope(url) as s:
        row = pm.save_model(s, pid, "baseline", baseline.to_bytes(),
                            {"n_bins": baseline.n_bins, "source": baseline.source}, activate=activate, actor=actor)  # fmt: skip
        version = row.version
    if activate:
        rescore_person(url, pid, settings)
    return version, baseline


def reread_against_baselines(s: Session, records: list, out) -> None:
    """A child with an active calibration baseline (``affectline calibrate``: a clinician's
    baseline segments, or all their bins) has their academic emotions and engagement read
    against it instead of this session's median (``pipeline.relative``). ``records``: the analysis's
    track records (``storage.repo.TrackRecord``) about to be stored; ``out``: the pipeline's output."""
    from recognition.academic.cues import CueModel
    from recognition.personal.calibration import Baseline
    from storage import person_models as pm
    from affectline.types import TimeGrid
    from pipeline.relative import clinician_baseline, reread_bins

    model = CueModel()
    if out.academic_model != f"{model.name}@{model.sha256[:12]}":
        return  # another academic model (CLIP-CAER): nothing of the cue model's to re-read
    grid, cache = TimeGrid(out.bin_seconds), {}
    for r in records:
        if r.person_id is None or not len(r.times):
            continue
        if r.person_id not in cache:
            row = pm.active_model(s, r.person_id, "baseline")
            cache[r.person_id] = clinician_baseline(model, Baseline.from_bytes(row.params)) if row is not None else None
        b = cache[r.person_id]
        # The linked person this record came from (a human correction may have cut it in parts).
        src = next((t for t in out.tracks if t.cue_samples is not None and t.cue_samples.n_samples
                    and np.isin(np.asarray(r.times, np.float32), np.asarray(t.times, np.float32)).all()
                    and (t.key == r.track_key or t.embedding is r.embedding
                         or (t.embedding is not None and r.embedding is not None
                             and np.array_equal(t.embedding, r.embedding)))), None)  # fmt: skip
        if b is not None and src is not None:
            r.bins = reread_bins(r.bins, src.cue_samples, model, b, grid)
