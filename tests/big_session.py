"""A class session with known events, any length and size (the 90-minute, 30-student one of issue 11).

``planted_bins`` makes per-person bins (no database) where the truth is known: each student has
their own usual level, and ``Event``s push chosen students' academic emotions for a span (a
class-wide dip = distraction up, a confusion rise, ...). ``add_class_session`` stores them through
``storage.repo.replace_analysis`` like a real analysis; tests and ``bench/dashboard.py`` share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from affectline.queue import ANALYZE_TASK
from storage import repo
from storage.db import session_scope
from storage.models import JobStatus, Person, SessionKind

ACADEMIC = repo.ACADEMIC_COLUMNS  # neutrality, enjoyment, confusion, fatigue, distraction
ACADEMIC_MODEL = "cues@0123456789ab"
EXPRESSION_MODEL = "fer_mini_xception@ba9876543210"


@dataclass(frozen=True)
class Event:
    """Between t0 and t1 (seconds) the ``students`` (indices) lean strongly to academic emotion ``emotion``."""

    emotion: str
    t0: float
    t1: float
    students: tuple[int, ...]
    strength: float = 3.0


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def engagement_of(acad: np.ndarray) -> np.ndarray:
    """Engagement from academic probabilities: enjoyment and neutrality up, fatigue and distraction down."""
    return np.clip(0.55 + 0.6 * (acad[..., 0] + acad[..., 1] - acad[..., 3] - acad[..., 4]) / 2, 0, 1)


def planted_bins(
    n_persons: int, n_bins: int, events: tuple[Event, ...] = (), seed: int = 0, step: float = 1.0,
    hidden: dict[int, tuple[float, float]] | None = None, noise: float = 0.25,
) -> list[pd.DataFrame]:  # fmt: skip
    """One bins frame per person (columns of ``storage.repo.TrackRecord.bins``) with the events planted.

    ``hidden``: person index -> (t0, t1) where their face is not visible (no scores there).
    """
    rng = np.random.default_rng(seed)
    t = step * np.arange(n_bins)
    base = np.array([1.2, 0.6, -0.4, -0.6, -0.6])
    logits = base + rng.normal(0, 0.25, (n_persons, 1, 5)) + rng.normal(0, noise, (n_persons, n_bins, 5))
    for ev in events:
        k = ACADEMIC.index(ev.emotion)
        span = (t >= ev.t0) & (t < ev.t1)
        for p in ev.students:
            logits[p, span, k] += ev.strength
    acad = _softmax(logits)
    expr = _softmax(rng.normal(0, 0.4, (n_persons, n_bins, 7)) + np.array([-0.5, -1.5, -1.0, 0.5, -0.3, -0.6, 1.2]))
    out = []
    for p in range(n_persons):
        df = pd.DataFrame({"t_start": t, "t_end": t + step, "face_visible": True, "engagement": engagement_of(acad[p])})
        for i, c in enumerate(ACADEMIC):
            df[c] = acad[p, :, i]
        for i, c in enumerate(repo.EXPRESSION_COLUMNS):
            df[c] = expr[p, :, i]
        if hidden and p in hidden:
            h0, h1 = hidden[p]
            m = (t >= h0) & (t < h1)
            df.loc[m, [c for c in df.columns if c not in ("t_start", "t_end", "face_visible")]] = np.nan
            df.loc[m, "face_visible"] = False
        out.append(df)
    return out


def with_person_columns(frames: list[pd.DataFrame], labels: list[str] | None = None) -> pd.DataFrame:
    """The per-person frames as one ``storage.repo.session_bins``-like frame (person ids 1..n)."""
    parts = []
    for i, f in enumerate(frames):
        parts.append(f.assign(person_id=i + 1, person_label=labels[i] if labels else f"Student {i + 1:02d}"))
    return pd.concat(parts, ignore_index=True)


# The 90-minute session: a dip at 30:00 (most of the class distracted for 3 minutes), a confusion
# rise at 50:00 (a third of the class, 2 minutes), fatigue over the last 10 minutes (half), and
# one student's face hidden for 5 minutes.
def class_events(minutes: float, n_persons: int) -> tuple[Event, ...]:
    scale = minutes / 90.0
    return (
        Event("distraction", 1800 * scale, (1800 + 180) * scale, tuple(range(0, max(2, 2 * n_persons // 3)))),
        Event("confusion", 3000 * scale, (3000 + 120) * scale, tuple(range(max(1, n_persons // 3)))),
        Event("fatigue", 4800 * scale, 5400 * scale, tuple(range(n_persons // 2, n_persons)), strength=2.5),
    )


def add_class_session(
    url: str, group_id: int, minutes: float = 90.0, n_persons: int = 30, title: str | None = None, seed: int = 0,
    kind: SessionKind = SessionKind.classroom, events: tuple[Event, ...] | None = None,
) -> tuple[int, list[int]]:  # fmt: skip
    """Store a ``minutes`` x ``n_persons`` session (1 s bins) through storage.repo; returns (session id, person ids).

    ``events``: what is planted (default ``class_events``)."""
    n_bins = int(round(minutes * 60))
    events = class_events(minutes, n_persons) if events is None else events
    frames = planted_bins(n_persons, n_bins, events, seed=seed,
                          hidden={n_persons - 1: (0.2 * n_bins, 0.2 * n_bins + 300)})  # fmt: skip
    rng = np.random.default_rng(seed + 1)
    with session_scope(url) as s:
        rec = repo.create_recording(s, f"/videos/class-{minutes:g}min.mp4", kind,
                                    title=title or f"Class {minutes:g} min, {n_persons} students", group_id=group_id)  # fmt: skip
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"fps": 4.0})
        tracks = []
        for k, bins in enumerate(frames):
            times = np.arange(0, n_bins, 1.0, dtype=np.float32)  # one sample a second is enough for a bench
            boxes = np.tile(np.array([[10 + 20 * k, 10, 30 + 20 * k, 30]], np.float32), (len(times), 1))
            tracks.append(repo.TrackRecord(
                track_key=k, times=times, face_boxes=boxes, context_boxes=boxes, embedding=rng.normal(size=128),
                bins=bins, features=np.zeros((n_bins, 1), np.float32), feature_names=("none",),
            ))  # fmt: skip
        person_of = repo.replace_analysis(s, repo.AnalysisResult(
            recording_id=rec.id, fps=25.0, n_frames=25 * n_bins, width=1920, height=1080, analysis_fps=4.0,
            bin_seconds=1.0, academic_model=ACADEMIC_MODEL, expression_model=EXPRESSION_MODEL, tracks=tracks,
        ))  # fmt: skip
        repo.update_job(s, job.id, status=JobStatus.done, progress=1.0, message="analysed")
        pids = [person_of[k] for k in range(n_persons)]
        for i, pid in enumerate(pids):  # named, enrolled students (a real class after enrolment)
            p = s.get(Person, pid)
            p.label, p.enrolled = f"Student {i + 1:02d}", True
        return rec.id, pids


# What an analysis writes on the session row: a copied lesson takes these from the lesson it repeats.
ANALYSIS_FIELDS = ("fps", "n_frames", "width", "height", "duration", "analysis_fps", "bin_seconds", "academic_model",
                   "expression_model", "analysed_at")  # fmt: skip


def add_term(url: str, group_id: int, n_sessions: int = 40, minutes: float = 45.0, n_persons: int = 30,
             distinct: int = 4, seed: int = 100) -> list[int]:  # fmt: skip
    """A term of ``n_sessions`` lessons of the same ``n_persons`` students, one a day (for the group report).

    ``distinct`` lessons are stored as ``add_class_session`` does (the later ones' new persons folded into
    the first's, as enrolment would have recognised them); the others repeat their bins in turn, copied
    in SQL (storing every lesson through the analysis path took ~20 s each on the loaded build machine)."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import delete, insert, select, update

    from storage.models import Base, Recording, TimeBin

    person_tables = [t for t in Base.metadata.sorted_tables if "person_id" in t.c]
    start = datetime(2026, 9, 1, 9, tzinfo=timezone.utc)
    bins = TimeBin.__table__
    copied = [c for c in bins.c if c.name not in ("id", "session_id", "track_id")]
    sids: list[int] = []
    first: list[int] = []
    for i in range(n_sessions):
        title = f"Lesson {i + 1:02d}"
        if i < distinct:
            sid, pids = add_class_session(url, group_id, minutes=minutes, n_persons=n_persons, seed=seed + i,
                                          title=title)  # fmt: skip
        with session_scope(url) as s:
            if i < distinct:
                if not first:
                    first = pids
                else:
                    for old, new in zip(pids, first):
                        for t in person_tables:
                            s.execute(update(t).where(t.c.person_id == old).values(person_id=new))
                    s.execute(delete(Person).where(Person.id.in_(pids)))
            else:
                src = s.get(Recording, sids[i % distinct])
                rec = repo.create_recording(s, src.video_path, SessionKind.classroom, title=title, group_id=group_id)
                for k in ANALYSIS_FIELDS:
                    setattr(rec, k, getattr(src, k))
                s.flush()
                sid = rec.id
                s.execute(insert(bins).from_select(["session_id", *[c.name for c in copied]],
                                                   select(sid, *copied).where(bins.c.session_id == src.id)))  # fmt: skip
            s.get(Recording, sid).created_at = start + timedelta(days=i)
        sids.append(sid)
    return sids
