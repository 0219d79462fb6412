"""Reading a session's timelines fast enough for a 90-minute, 30-student class (dashboard and reports).

``storage.repo.session_bins`` builds an ORM object per bin (6 s for 162,000 bins); these read only
the columns a view needs as plain rows, optionally one time range or one person, and return the
frame ``services.summaries`` works on. Cues (blendshapes, head pose) come from the stored
feature series, so the clinician can see what each estimate was made from.

Functions (stable):

``fingerprint(s, session_id) -> str`` (changes when the stored timelines do: a cache key)
``class_bins(s, session_id, t0=None, t1=None, columns=CLASS_COLUMNS) -> pd.DataFrame``
``person_bins(s, session_id, person_id) -> pd.DataFrame`` (every score column, personal label too)
``person_cues(s, session_id, person_id, names=CUE_INPUTS) -> pd.DataFrame`` (t_start + the named features)
``group_sessions(s, group_id, kind=None, since=None, until=None, limit=30) -> list[SessionKey]``
``group_session_bins(s, group_id, kind=None, since=None, until=None, limit=30) -> list[(SessionKey, bins, bin_seconds)]``
    for ``services.summaries.trends``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from affectline.features import FEATURE_NAMES
from services.summaries import ACADEMIC, SessionKey
from storage.db import from_blob
from storage.models import FeatureSeries, Person, Recording, SessionKind, TimeBin
from storage.repo import ACADEMIC_COLUMNS, EXPRESSION_COLUMNS  # noqa: F401  (the charts' column names)

CLASS_COLUMNS: tuple[str, ...] = ("person_id", "t_start", "face_visible", "engagement", *ACADEMIC, "readable")
PERSON_COLUMNS: tuple[str, ...] = (
    "person_id", "track_id", "t_start", "t_end", "face_visible", "engagement", *ACADEMIC, *EXPRESSION_COLUMNS,
    "readable", "unreadable_reason", "personal_label", "personal_confidence",
)  # fmt: skip
# The inputs of the interpretable cue model (recognition.academic.cues), shown on hover.
CUE_INPUTS: tuple[str, ...] = (
    "mouthSmileLeft", "mouthSmileRight", "browDownLeft", "browDownRight", "browInnerUp", "eyeBlinkLeft",
    "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight", "jawOpen", "yaw", "pitch", "roll",
)  # fmt: skip


def fingerprint(s: Session, session_id: int) -> str:
    """Changes whenever the session's stored timelines do: re-analysis (analysis time), a merge or a deleted
    or withdrawn person (bin count and person ids), faces folded into the class aggregates. One covering-
    index scan (~0.1 s for 162,000 bins), so caches keyed by it can live long."""
    from sqlalchemy import func

    from storage.models import ClassBin

    n, ids, last = s.execute(select(func.count(), func.coalesce(func.sum(TimeBin.person_id), 0), func.max(TimeBin.t_start))
                             .where(TimeBin.session_id == session_id)).one()  # fmt: skip
    n_class = s.scalar(select(func.count()).select_from(ClassBin).where(ClassBin.session_id == session_id))
    rec = s.get(Recording, session_id)
    at = rec.analysed_at.isoformat() if rec is not None and rec.analysed_at else "-"
    return f"{at}|{n}|{ids}|{last}|{n_class}"


def _labels(s: Session, session_id: int) -> dict[int, str]:
    q = select(Person.id, Person.label).join(TimeBin, TimeBin.person_id == Person.id).where(
        TimeBin.session_id == session_id).distinct()  # fmt: skip
    return {int(i): str(lab) for i, lab in s.execute(q)}


def _fetch(s: Session, q) -> list[tuple]:
    """Rows of ``q`` straight from the DB-API cursor: SQLAlchemy's per-row result processing costs ~5x
    the query itself on 162,000 bins. Binds are literal numbers (ids, times), so inlining them is safe."""
    conn = s.connection()
    sql = str(q.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(sql)
        return cur.fetchall()
    finally:
        cur.close()


def _frame(rows: list, columns: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(columns))
    for c in columns:
        if c in ("person_id", "track_id", "personal_label", "unreadable_reason"):
            continue
        if c == "face_visible":
            df[c] = df[c].fillna(False).astype(bool)
        else:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def class_bins(
    s: Session, session_id: int, t0: float | None = None, t1: float | None = None,
    columns: Sequence[str] = CLASS_COLUMNS,
) -> pd.DataFrame:  # fmt: skip
    """Bins of every person in [t0, t1) with ``columns`` and person_label, ordered by person then time."""
    cols = list(dict.fromkeys(["person_id", "t_start", *columns]))
    q = select(*[getattr(TimeBin, c) for c in cols]).where(TimeBin.session_id == session_id)
    if t0 is not None:
        q = q.where(TimeBin.t_start >= t0)
    if t1 is not None:
        q = q.where(TimeBin.t_start < t1)
    df = _frame(_fetch(s, q.order_by(TimeBin.person_id, TimeBin.t_start)), cols)
    df["person_id"] = df["person_id"].astype(int)
    df["person_label"] = df["person_id"].map(_labels(s, session_id)).astype(object)
    return df


def person_bins(s: Session, session_id: int, person_id: int) -> pd.DataFrame:
    """One person's bins in a session, every score column, with person_label, in time order."""
    q = (select(*[getattr(TimeBin, c) for c in PERSON_COLUMNS])
         .where(TimeBin.session_id == session_id, TimeBin.person_id == person_id).order_by(TimeBin.t_start))  # fmt: skip
    df = _frame(_fetch(s, q), PERSON_COLUMNS)
    p = s.get(Person, person_id)
    df["person_label"] = p.label if p is not None else str(person_id)
    return df


def person_cues(s: Session, session_id: int, person_id: int, names: Sequence[str] = CUE_INPUTS) -> pd.DataFrame:
    """The stored per-bin features ``names`` of a person in a session (every track), by bin start time.

    Names not stored by the analysis that made the series are NaN (older analyses, other feature sets).
    """
    parts = []
    q = select(FeatureSeries).where(FeatureSeries.session_id == session_id, FeatureSeries.person_id == person_id)
    for fs in s.scalars(q.order_by(FeatureSeries.grid_start)):
        data = np.asarray(from_blob(fs.data), dtype=float).reshape(fs.n, -1) if fs.n else np.zeros((0, len(fs.names)))
        stored = list(fs.names or [])
        frame = {"t_start": fs.grid_start + fs.grid_step * np.arange(fs.n)}
        for n in names:
            frame[n] = data[:, stored.index(n)] if n in stored and data.shape[1] == len(stored) else np.nan
        parts.append(pd.DataFrame(frame))
    if not parts:
        return pd.DataFrame(columns=["t_start", *names])
    return pd.concat(parts, ignore_index=True).sort_values("t_start").drop_duplicates("t_start").reset_index(drop=True)


def group_sessions(s: Session, group_id: int, kind: SessionKind | str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 30) -> list[SessionKey]:  # fmt: skip
    """The analysed sessions of a group (newest ``limit``) as ``SessionKey``s, newest first."""
    q = select(Recording).where(Recording.group_id == group_id, Recording.analysed_at.is_not(None))
    if kind is not None:
        q = q.where(Recording.kind == SessionKind(kind))
    if since is not None:
        q = q.where(Recording.created_at >= since)
    if until is not None:
        q = q.where(Recording.created_at < until)
    recs = s.scalars(q.order_by(Recording.created_at.desc(), Recording.id.desc()).limit(limit))
    return [SessionKey(r.id, r.title, r.created_at) for r in recs]


def group_session_bins(
    s: Session, group_id: int, kind: SessionKind | str | None = None, since: datetime | None = None,
    until: datetime | None = None, limit: int = 30,
) -> list[tuple[SessionKey, pd.DataFrame, float]]:  # fmt: skip
    """The analysed sessions of a group (newest ``limit``), each as (key, class bins, bin seconds)."""
    out = []
    for key in group_sessions(s, group_id, kind, since, until, limit):
        rec = s.get(Recording, key.id)
        out.append((key, class_bins(s, key.id), float(rec.bin_seconds or 1.0)))
    return out


assert set(CUE_INPUTS) <= set(FEATURE_NAMES)
