"""Re-scoring: a person's stored bins read again by their active model (a personal model, else the
population model calibrated by their baseline, else the plain population model), filling
``personal_label`` / ``personal_confidence`` of ``time_bins``. Run by the re-scoring job after every
analysis (``tasks.clinic``) and after a model is activated or rolled back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from affectline.settings import Settings, get_settings
from clinic.series import Series, load_series
from recognition.personal import Baseline, PersonalModel, score_series
from storage import person_models as pm
from storage.db import session_scope
from storage.models import FeatureSeries, TimeBin


@dataclass
class _Scorer:
    model: PersonalModel | None
    baseline: Baseline | None

    @classmethod
    def for_person(cls, s: Session, person_id: int) -> _Scorer:
        m = pm.active_model(s, person_id, "personal")
        if m is not None:
            return cls(PersonalModel.from_bytes(m.params), None)
        b = pm.active_model(s, person_id, "baseline")
        return cls(None, Baseline.from_bytes(b.params) if b is not None else None)


def _rescore(s: Session, person_id: int, series: list[Series], threshold: float) -> int:
    scorer = _Scorer.for_person(s, person_id)
    rows = []
    for sr in series:
        out = score_series(sr.X, threshold, scorer.model, scorer.baseline)
        q = select(TimeBin.id, TimeBin.t_start).where(TimeBin.track_id == sr.track_id, TimeBin.person_id == person_id)
        for bin_id, t_start in s.execute(q):
            i = round((t_start - sr.grid_start) / sr.grid_step)
            if 0 <= i < len(sr.X):
                c = out.confidence[i]
                rows.append({"id": bin_id, "personal_label": out.labels[i],
                             "personal_confidence": None if not np.isfinite(c) else float(c)})  # fmt: skip
    if rows:
        s.execute(update(TimeBin), rows)  # executemany by primary key
    return len(rows)


def rescore_person(url: str, person_id: int, settings: Settings | None = None, session_id: int | None = None) -> int:
    """Re-score a person's bins (all sessions, or one) with their active model; returns bins updated."""
    st = settings or get_settings()
    with session_scope(url) as s:
        return _rescore(s, person_id, load_series(s, person_id, session_id), st.uncertain_threshold)


def population_rescore(url: str, session_id: int, settings: Settings | None = None) -> int:
    """Fill ``personal_label``/``personal_confidence`` for every person of a freshly analysed session.

    Called right after analysis. Each person is scored with their active personal model
    when they have one (so re-analysing a personalised child's session keeps their
    model), else the population model calibrated by their active baseline, else the
    plain population model. Returns the number of bins updated.
    """
    st = settings or get_settings()
    n = 0
    with session_scope(url) as s:
        pids = sorted(set(s.scalars(select(FeatureSeries.person_id).where(FeatureSeries.session_id == session_id))))
        for pid in pids:
            n += _rescore(s, pid, load_series(s, pid, session_id), st.uncertain_threshold)
    return n
