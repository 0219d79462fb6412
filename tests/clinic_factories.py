"""Rows for the clinicians' tests, written straight to the database (no video, no pipeline)."""

from __future__ import annotations

import numpy as np
from sqlalchemy import insert

from affectline.features import FEATURE_NAMES
from affectline.types import EXPRESSION_CLASSES
from recognition.personal.population import COL
from recognition.personal.simulate import SimSession
from storage.db import session_scope, to_blob
from storage.models import FeatureSeries, Person, Recording, SessionKind, TimeBin, Track
from storage.tags import BUILTIN_LABELS, add_label, add_tag


def make_person(s, label: str = "Child A", enrolled: bool = True) -> Person:
    p = Person(label=label, enrolled=enrolled)
    s.add(p)
    s.flush()
    return p


def make_recording(s, n_bins: int, bin_seconds: float = 1.0, title: str = "therapy") -> Recording:
    rec = Recording(kind=SessionKind.therapy, title=title, video_path=f"/videos/{title}.mp4", fps=25.0,
                    n_frames=int(n_bins * bin_seconds * 25), duration=n_bins * bin_seconds, width=640, height=480,
                    analysis_fps=4.0, bin_seconds=bin_seconds)  # fmt: skip
    s.add(rec)
    s.flush()
    return rec


def add_track_with_features(
    s,
    session_id: int,
    person_id: int,
    X: np.ndarray,
    *,
    track_key: int = 0,
    grid_start: float = 0.0,
    bin_seconds: float = 1.0,
) -> Track:
    """A track whose bins and stored features are the rows of ``X`` (``FEATURE_NAMES`` order)."""
    n = len(X)
    times = grid_start + (np.arange(n) + 0.5) * bin_seconds
    tr = Track(session_id=session_id, track_key=track_key, person_id=person_id, t_start=float(times[0]),
               t_end=float(times[-1]), n_samples=n, times=to_blob(times), face_boxes=to_blob(np.zeros((n, 4))),
               context_boxes=to_blob(np.zeros((n, 4))))  # fmt: skip
    s.add(tr)
    s.flush()
    s.add(FeatureSeries(session_id=session_id, track_id=tr.id, person_id=person_id, grid_start=grid_start,
                        grid_step=bin_seconds, n=n, names=list(FEATURE_NAMES), data=to_blob(X)))  # fmt: skip
    rows = []
    for i in range(n):
        seen = bool(np.nan_to_num(X[i, COL["face_visible"]]) > 0)
        row = {"session_id": session_id, "person_id": person_id, "track_id": tr.id,
               "t_start": grid_start + i * bin_seconds, "t_end": grid_start + (i + 1) * bin_seconds,
               "face_visible": seen, "academic_model": "test", "expression_model": "test"}  # fmt: skip
        for c in EXPRESSION_CLASSES:
            v = X[i, COL[f"p_{c}"]]
            row[c] = float(v) if seen and np.isfinite(v) else None
        rows.append(row)
    s.execute(insert(TimeBin), rows)
    return tr


def store_child(
    url: str, sessions: list[SimSession], label: str = "Child A", author: str = "dr_lee"
) -> tuple[int, list[int]]:
    """A person with one track per simulated session, their features, bins and tags; returns (person_id, session_ids)."""
    with session_scope(url) as s:
        for lab in sorted({t.label for ss in sessions for t in ss.tags} - set(BUILTIN_LABELS)):
            add_label(s, lab, author)
        p = make_person(s, label)
        sids = []
        for k, ss in enumerate(sessions):
            rec = make_recording(s, len(ss.X), ss.bin_seconds, title=f"{label} session {k + 1}")
            add_track_with_features(s, rec.id, p.id, ss.X, bin_seconds=ss.bin_seconds)
            for t in ss.tags:
                add_tag(s, session_id=rec.id, person_id=p.id, t_start=t.t_start, t_end=t.t_end, label=t.label,
                        author=author, is_baseline=t.is_baseline)  # fmt: skip
            sids.append(rec.id)
        return p.id, sids
