"""The lessons of a group as trends see them: short recordings left out (with a note), and this lesson's class
curve beside the earlier lessons' on one axis of minutes from the start.

A recording shorter than ``Settings.trend_min_minutes`` (default 5) says nothing about a lesson: a
3-second clip weighed as much as a 90-minute lesson in a trend and topped the group report. Such
recordings are left out of trends, of the overlay and of group reports, and every place that leaves
them out says how many and why (``left_out_note``).

Functions (stable):

``duration_seconds(s, recs) -> dict[int, float | None]``: each recording's length (its stored duration,
    else its bins' span; None when neither is known: kept, since nothing says it is short).
``split_short(s, recs, min_minutes=None) -> (kept, left_out)``: recordings in their order.
``left_out_note(n, min_minutes) -> str``: the sentence ("" when none).
``group_lessons(s, group_id, limit=12, min_minutes=None) -> GroupLessons``: the newest ``limit`` analysed
    lessons long enough for a trend, newest first, and those left out.
``lesson_curves(url, actor, session_id, earlier=4, ...) -> LessonCurves``: this lesson's class engagement
    and up to ``earlier`` earlier lessons' of the same group, in minutes from each lesson's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from services.summaries import SessionKey
from storage.models import ClassBin, Recording, TimeBin


def trend_min_minutes(min_minutes: float | None = None) -> float:
    """``min_minutes``, or the setting (``Settings.trend_min_minutes``) when None."""
    if min_minutes is not None:
        return float(min_minutes)
    from affectline.settings import get_settings

    return float(get_settings().trend_min_minutes)


def duration_seconds(s: Session, recs: Sequence[Recording]) -> dict[int, float | None]:
    """Each recording's length in seconds: the stored duration, else the span of its bins (one query)."""
    out: dict[int, float | None] = {r.id: float(r.duration) if r.duration else None for r in recs}
    missing = [r for r in recs if out[r.id] is None]
    if missing:
        q = (select(TimeBin.session_id, func.min(TimeBin.t_start), func.max(TimeBin.t_end))
             .where(TimeBin.session_id.in_([r.id for r in missing])).group_by(TimeBin.session_id))  # fmt: skip
        for sid, lo, hi in s.execute(q):
            if lo is not None and hi is not None:
                out[int(sid)] = float(hi) - float(lo)
    return out


def split_short(s: Session, recs: Sequence[Recording], min_minutes: float | None = None
                ) -> tuple[list[Recording], list[Recording]]:  # fmt: skip
    """(kept, left out): recordings shorter than ``min_minutes`` are left out; order kept."""
    limit = 60.0 * trend_min_minutes(min_minutes)
    secs = duration_seconds(s, recs)
    kept = [r for r in recs if secs[r.id] is None or secs[r.id] >= limit]
    return kept, [r for r in recs if r not in kept]


def left_out_note(n: int, min_minutes: float) -> str:
    if not n:
        return ""
    return (f"{n} recording{'s' * (n != 1)} shorter than {min_minutes:g} min {'was' if n == 1 else 'were'} left out: "
            "too short to say anything about a lesson (a few seconds would weigh as much as a whole lesson).")  # fmt: skip


@dataclass(frozen=True)
class GroupLessons:
    kept: list[SessionKey]  # newest first
    left_out: list[SessionKey]
    min_minutes: float

    @property
    def note(self) -> str:
        return left_out_note(len(self.left_out), self.min_minutes)


def _key(r: Recording) -> SessionKey:
    return SessionKey(r.id, r.title, r.created_at)


def group_lessons(s: Session, group_id: int, limit: int = 12, min_minutes: float | None = None) -> GroupLessons:
    """The group's newest ``limit`` analysed lessons long enough for a trend (newest first), and the short
    ones left out among those recorded since the oldest kept one (all of them when fewer than ``limit`` are kept)."""
    minutes = trend_min_minutes(min_minutes)
    q = (select(Recording).where(Recording.group_id == group_id, Recording.analysed_at.is_not(None))
         .order_by(Recording.created_at.desc(), Recording.id.desc()))  # fmt: skip
    recs = list(s.scalars(q))
    kept, short = split_short(s, recs, minutes)
    kept = kept[:limit]
    if len(kept) == limit:
        oldest = recs.index(kept[-1])
        short = [r for r in short if recs.index(r) < oldest]
    return GroupLessons([_key(r) for r in kept], [_key(r) for r in short], minutes)


# --- this lesson over the earlier ones -----------------------------------------------------------


@dataclass(frozen=True)
class LessonCurve:
    key: SessionKey
    minutes: np.ndarray  # bucket centres, minutes from the lesson's start
    engagement: np.ndarray  # class engagement (mean over visible faces), NaN where no face was visible
    current: bool = False


@dataclass(frozen=True)
class LessonCurves:
    curves: list[LessonCurve] = field(default_factory=list)  # earlier lessons oldest first, this lesson last
    note: str = ""  # short recordings left out

    @property
    def current(self) -> LessonCurve | None:
        return next((c for c in self.curves if c.current), None)

    @property
    def earlier(self) -> list[LessonCurve]:
        return [c for c in self.curves if not c.current]


def class_curve(s: Session, session_id: int) -> pd.DataFrame:
    """t_start, engagement: the class curve counting every face (per-person bins and the class aggregates of
    faces not stored per person), summed in SQL (a 90-minute, 30-student lesson is 162,000 bins)."""
    seen = and_(TimeBin.face_visible.is_(True), TimeBin.engagement.is_not(None))
    q = (select(TimeBin.t_start, func.sum(case((seen, TimeBin.engagement), else_=0.0)),
                func.sum(case((seen, 1), else_=0)))
         .where(TimeBin.session_id == session_id).group_by(TimeBin.t_start))  # fmt: skip
    own = pd.DataFrame(s.execute(q).all(), columns=["t_start", "sum", "n"])
    a_seen = and_(ClassBin.engagement.is_not(None), ClassBin.n_visible > 0)
    qa = (select(ClassBin.t_start, case((a_seen, ClassBin.engagement * ClassBin.n_visible), else_=0.0),
                 case((a_seen, ClassBin.n_visible), else_=0))
          .where(ClassBin.session_id == session_id))  # fmt: skip
    agg = pd.DataFrame(s.execute(qa).all(), columns=["t_start", "sum", "n"])
    frame = pd.concat([f for f in (own, agg) if len(f)], ignore_index=True) if len(own) or len(agg) else own
    if frame.empty:
        return pd.DataFrame(columns=["t_start", "engagement"])
    g = frame.astype(float).groupby("t_start", sort=True).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        eng = np.where(g["n"] > 0, g["sum"] / g["n"], np.nan)
    return pd.DataFrame({"t_start": g.index.to_numpy(float), "engagement": eng})


def _buckets(curve: pd.DataFrame, width: float) -> tuple[np.ndarray, np.ndarray]:
    if curve.empty:
        return np.zeros(0), np.zeros(0)
    t = curve["t_start"].to_numpy(float)
    idx = np.floor(t / width + 1e-9).astype(int)
    g = pd.Series(curve["engagement"].to_numpy(float)).groupby(idx).mean()  # NaN bins left out of the mean
    full = np.arange(int(idx.max()) + 1)
    values = g.reindex(full).to_numpy(float)
    return (full + 0.5) * width / 60.0, values


def curves_for(s: Session, rec: Recording, earlier: int = 4, max_points: int = 240, min_minutes: float | None = None
               ) -> LessonCurves:  # fmt: skip
    """``lesson_curves`` inside a transaction, for a session already checked visible."""
    minutes = trend_min_minutes(min_minutes)
    chosen: list[Recording] = []
    note = ""
    if rec.group_id is not None and earlier > 0:
        before = or_(Recording.created_at < rec.created_at, and_(Recording.created_at == rec.created_at,
                                                                 Recording.id < rec.id))  # fmt: skip
        q = (select(Recording).where(Recording.group_id == rec.group_id, Recording.analysed_at.is_not(None),
                                     Recording.id != rec.id, before)
             .order_by(Recording.created_at.desc(), Recording.id.desc()))  # fmt: skip
        kept, short = split_short(s, list(s.scalars(q)), minutes)
        chosen = kept[:earlier][::-1]
        if chosen and len(kept) > earlier:
            short = [r for r in short if (r.created_at, r.id) > (chosen[0].created_at, chosen[0].id)]
        note = left_out_note(len(short), minutes)
    lessons = [*chosen, rec]
    secs = duration_seconds(s, lessons)
    longest = max([v for v in secs.values() if v] or [60.0])
    width = max(float(rec.bin_seconds or 1.0), float(np.ceil(longest / max_points)))
    out = []
    for r in lessons:
        x, y = _buckets(class_curve(s, r.id), width)
        out.append(LessonCurve(_key(r), x, y, current=r.id == rec.id))
    return LessonCurves(out, note)


def lesson_curves(url: str, actor, session_id: int, earlier: int = 4, max_points: int = 240,
                  min_minutes: float | None = None) -> LessonCurves:  # fmt: skip
    """This lesson's class curve over up to ``earlier`` earlier lessons of its group (same axis: minutes)."""
    from services.db import scope, visible_session

    with scope(url) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        return curves_for(s, rec, earlier, max_points, min_minutes)
