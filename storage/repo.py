"""Plain query and write functions over the ORM models.

Every function takes an open SQLAlchemy ``Session`` (a transaction) as its first
argument: callers decide the transaction boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from affectline.task_names import ANALYZE_TASK
from affectline.types import ACADEMIC_CLASSES, EXPRESSION_CLASSES
from storage import consent
from storage.audit import write as _write_audit
from storage.db import from_blob, to_blob
from storage.labels import clean_label
from storage.models import (
    AuditEntry,
    FeatureSeries,
    Group,
    Job,
    JobStatus,
    Person,
    Recording,
    SessionKind,
    Tag,
    TimeBin,
    Track,
)

ACADEMIC_COLUMNS = tuple(c.lower() for c in ACADEMIC_CLASSES)
EXPRESSION_COLUMNS = EXPRESSION_CLASSES
EXPORT_COLUMNS: tuple[str, ...] = (
    ("session_id", "person_id", "person_label", "t_start", "t_end", "face_visible", "engagement")
    + ACADEMIC_COLUMNS
    + EXPRESSION_COLUMNS
    + ("readable", "unreadable_reason", "pose_reliable")
    + ("academic_model", "expression_model")
)


def now() -> datetime:
    return datetime.now(timezone.utc)


# --- groups, sessions, jobs ---------------------------------------------------------------


def get_or_create_group(s: Session, name: str, kind: SessionKind | str) -> Group:
    name = clean_label(name, "group name", max_len=200)
    g = s.scalar(select(Group).where(Group.name == name))
    if g is not None:
        return g
    try:
        with s.begin_nested():  # two uploads may create the same group at once
            g = Group(name=name, kind=SessionKind(kind))
            s.add(g)
    except IntegrityError:
        g = s.scalar(select(Group).where(Group.name == name))
    return g


def create_recording(
    s: Session, video_path: str, kind: SessionKind | str, title: str | None = None, group_id: int | None = None
) -> Recording:
    rec = Recording(video_path=video_path, kind=SessionKind(kind), title=title or video_path.rsplit("/", 1)[-1], group_id=group_id)
    s.add(rec)
    s.flush()
    return rec


def create_job(s: Session, task: str, session_id: int | None = None, person_id: int | None = None, params: dict | None = None) -> Job:
    if person_id is not None:  # a person's job is a per-person row (withdrawal deletes it)
        consent.guard(s, f"a {task} job for person {person_id}", [person_id])
    job = Job(task=task, session_id=session_id, person_id=person_id, params=params or {}, status=JobStatus.queued)
    s.add(job)
    s.flush()
    return job


def update_job(s: Session, job_id: int, **fields: Any) -> None:
    status = fields.get("status")
    if status == JobStatus.running and "started_at" not in fields:
        fields["started_at"] = now()
    if status in (JobStatus.done, JobStatus.failed) and "finished_at" not in fields:
        fields["finished_at"] = now()
    s.execute(update(Job).where(Job.id == job_id).values(**fields))


def latest_job(s: Session, session_id: int) -> Job | None:
    """The session's newest analysis job (re-scoring jobs of the session are not analyses)."""
    q = select(Job).where(Job.session_id == session_id, Job.task == ANALYZE_TASK)
    return s.scalar(q.order_by(Job.id.desc()).limit(1))


def list_jobs(s: Session, limit: int = 50) -> list[Job]:
    return list(s.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


def list_sessions(s: Session, group_ids: Sequence[int] | None = None) -> list[Recording]:
    q = select(Recording).order_by(Recording.id.desc())
    if group_ids is not None:
        q = q.where(Recording.group_id.in_(list(group_ids)))
    return list(s.scalars(q))


SESSION_STATES = ("ready", "empty", "analysing", "queued", "failed", "cancelled", "new")
"""ready: analysed with timelines; empty: analysed, no one found; analysing/queued: its latest
analysis is under way; failed/cancelled: its latest analysis ended so (earlier results, if any,
are kept); new: never analysed."""


def session_states(s: Session, session_ids: Sequence[int] | None = None) -> dict[int, str]:
    """Each session's state (``SESSION_STATES``) from its latest analysis job and its stored bins."""
    q = select(Recording.id)
    if session_ids is not None:
        q = q.where(Recording.id.in_(list(session_ids)))
    ids = list(s.scalars(q))
    if not ids:
        return {}
    last = dict(s.execute(
        select(Job.session_id, func.max(Job.id)).where(Job.session_id.in_(ids), Job.task == ANALYZE_TASK)
        .group_by(Job.session_id)
    ).all())  # fmt: skip
    status = dict(s.execute(select(Job.id, Job.status).where(Job.id.in_(list(last.values())))).all()) if last else {}
    with_bins = set(s.scalars(select(TimeBin.session_id).where(TimeBin.session_id.in_(ids)).distinct()))
    out = {}
    for sid in ids:
        st = status.get(last.get(sid))
        if st in (JobStatus.queued, JobStatus.running):
            out[sid] = "analysing" if st == JobStatus.running else "queued"
        elif st in (JobStatus.failed, JobStatus.cancelled):
            out[sid] = st.value
        elif sid in with_bins:
            out[sid] = "ready"
        else:
            out[sid] = "empty" if st == JobStatus.done else "new"
    return out


def default_session(s: Session, group_ids: Sequence[int] | None = None) -> Recording | None:
    """The session to show first: the newest one that is ready (failed, empty or running ones never are)."""
    recs = list_sessions(s, group_ids)
    states = session_states(s, [r.id for r in recs])
    return next((r for r in recs if states.get(r.id) == "ready"), None)


def active_job(s: Session, session_id: int) -> Job | None:
    """The session's queued or running analysis, if any."""
    q = select(Job).where(Job.session_id == session_id, Job.task == ANALYZE_TASK,
                          Job.status.in_((JobStatus.queued, JobStatus.running)))
    return s.scalar(q.order_by(Job.id.desc()).limit(1))


# --- analysis results ---------------------------------------------------------------------


@dataclass
class TrackRecord:
    """One analysed track, ready to store: boxes and bins on the session's time grid."""

    track_key: int
    times: np.ndarray  # (n,) sample times, seconds
    face_boxes: np.ndarray  # (n, 4)
    context_boxes: np.ndarray  # (n, 4)
    embedding: np.ndarray | None  # (128,)
    bins: pd.DataFrame  # columns: t_start, t_end, face_visible, engagement, academic + expression columns
    features: np.ndarray  # (n_bins, len(feature_names)) per-bin features
    feature_names: tuple[str, ...] = ()
    person_id: int | None = None  # an enrolled person this track was matched to
    match_score: float | None = None
    thumbnail: bytes | None = None


@dataclass
class AnalysisResult:
    recording_id: int
    fps: float
    n_frames: int
    width: int
    height: int
    analysis_fps: float
    bin_seconds: float
    academic_model: str
    expression_model: str
    tracks: list[TrackRecord] = field(default_factory=list)
    duration: float | None = None  # seconds, the end of the last frame's timestamp; None: n_frames / fps


def replace_analysis(s: Session, result: AnalysisResult) -> dict[int, int]:
    """Store an analysis, replacing any earlier one of the same session (idempotent re-runs).

    Tags, enrolled persons and identity overrides are kept; the session's own tracks,
    bins, features and the 'Unknown N' persons it created are replaced. Returns
    track_key -> person_id.
    """
    rid = result.recording_id
    # The 'Unknown N' persons of the previous run go, but a clinician's tags on them must
    # not: remember who they were (embedding, time span) to re-link their tags below.
    old_unknown = set(s.scalars(select(Person.id).where(Person.origin_session_id == rid, Person.enrolled.is_(False))))
    old_tracks = [
        (pid, t0, t1, from_blob(emb) if emb is not None else None)
        for pid, t0, t1, emb in s.execute(
            select(Track.person_id, Track.t_start, Track.t_end, Track.embedding).where(Track.session_id == rid)
        )
        if pid in old_unknown
    ]
    for model in (TimeBin, FeatureSeries, Track):
        s.execute(delete(model).where(model.session_id == rid))
    rec = s.get(Recording, rid)
    # Consent decides what is stored per person; the rest counts only in the class aggregates.
    kept, withheld = consent.withhold(s, rec.group_id, result.tracks)
    consent.replace_class_bins(s, rid, withheld)
    rec.fps, rec.n_frames, rec.width, rec.height = result.fps, result.n_frames, result.width, result.height
    rec.duration = result.duration if result.duration else (result.n_frames / result.fps if result.fps else 0.0)
    rec.analysis_fps, rec.bin_seconds = result.analysis_fps, result.bin_seconds
    rec.academic_model, rec.expression_model = result.academic_model, result.expression_model
    rec.analysed_at = now()

    person_of: dict[int, int] = {}
    unknown = 0
    for tr in sorted(kept, key=lambda t: float(t.times[0]) if len(t.times) else 0.0):
        pid = tr.person_id
        if pid is None:
            unknown += 1
            p = Person(label=f"Unknown {unknown}", group_id=rec.group_id, origin_session_id=rid, enrolled=False)
            s.add(p)
            s.flush()
            pid = p.id
        row = Track(
            session_id=rid, track_key=tr.track_key, person_id=pid, match_score=tr.match_score,
            t_start=float(tr.times[0]) if len(tr.times) else 0.0, t_end=float(tr.times[-1]) if len(tr.times) else 0.0,
            n_samples=len(tr.times), times=to_blob(tr.times), face_boxes=to_blob(tr.face_boxes),
            context_boxes=to_blob(tr.context_boxes),
            embedding=None if tr.embedding is None else to_blob(tr.embedding), thumbnail=tr.thumbnail,
        )  # fmt: skip
        s.add(row)
        s.flush()
        person_of[tr.track_key] = pid
        if len(tr.bins):
            b = tr.bins.assign(session_id=rid, person_id=pid, track_id=row.id,
                               academic_model=result.academic_model, expression_model=result.expression_model)  # fmt: skip
            rows = b.astype(object).where(b.notna(), None).to_dict("records")
            s.execute(insert(TimeBin), rows)  # one executemany, not a row at a time
            s.add(FeatureSeries(
                session_id=rid, track_id=row.id, person_id=pid, grid_start=float(tr.bins["t_start"].iloc[0]),
                grid_step=result.bin_seconds, n=len(tr.features), names=list(tr.feature_names),
                data=to_blob(tr.features),
            ))  # fmt: skip
    tagged = _relink_tags(s, rid, old_unknown, old_tracks, kept, person_of)
    if old_unknown - tagged:
        s.execute(delete(Person).where(Person.id.in_(old_unknown - tagged)))
    return person_of


SAME_FACE_DISTANCE = 0.6  # dlib's 128-d descriptors: same person below ~0.6


def _relink_tags(s: Session, rid: int, old_unknown: set[int], old_tracks: list, new_tracks: list[TrackRecord],
                 person_of: dict[int, int]) -> set[int]:  # fmt: skip
    """Move tags of replaced 'Unknown N' persons to the new person who is the same face at that time.

    The new track must overlap the tag in time; among those, the nearest embedding to the
    old person's wins (largest overlap when embeddings are missing). A tag with no such
    track keeps its old person, who is then not deleted: tags are never lost.
    """
    tags = list(s.scalars(select(Tag).where(Tag.session_id == rid, Tag.person_id.in_(old_unknown)))) if old_unknown else []
    kept: set[int] = set()
    for tag in tags:
        old_embs = [e for pid, _, _, e in old_tracks if pid == tag.person_id and e is not None and len(e)]
        best, best_key = None, None
        for tr in new_tracks:
            if not len(tr.times):
                continue
            overlap = min(tag.t_end, float(tr.times[-1])) - max(tag.t_start, float(tr.times[0]))
            if overlap < 0:
                continue
            if old_embs and tr.embedding is not None:
                key = (0, min(float(np.linalg.norm(e - tr.embedding)) for e in old_embs))
            else:
                key = (1, -overlap)
            if best_key is None or key < best_key:
                best, best_key = tr, key
        if best is None or (best_key[0] == 0 and best_key[1] > SAME_FACE_DISTANCE):
            kept.add(tag.person_id)
        else:
            tag.person_id = person_of[best.track_key]
    s.flush()
    return kept


# --- reading timelines -------------------------------------------------------------------


def session_bins(s: Session, session_id: int) -> pd.DataFrame:
    """All time bins of a session with the person's label, ordered by person then time."""
    q = (
        select(TimeBin, Person.label.label("person_label"))
        .join(Person, Person.id == TimeBin.person_id)
        .where(TimeBin.session_id == session_id)
        .order_by(TimeBin.person_id, TimeBin.t_start)
    )
    cols = [c.name for c in TimeBin.__table__.columns]
    rows = [{**{c: getattr(tb, c) for c in cols}, "person_label": label} for tb, label in s.execute(q)]
    return pd.DataFrame(rows, columns=cols + ["person_label"])


def class_engagement(bins: pd.DataFrame, withheld: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean engagement of the persons whose face is visible, per time bin.

    ``withheld``: the session's class aggregates of faces not stored per person
    (``storage.consent.class_aggregates``), counted in as well."""
    if withheld is not None and len(withheld):
        return _with_withheld(bins, withheld)
    if bins.empty:
        return pd.DataFrame(columns=["t_start", "engagement", "n_visible"])
    vis = bins[bins["face_visible"].astype(bool)]
    g = bins.groupby("t_start")
    return pd.DataFrame({
        "engagement": vis.groupby("t_start")["engagement"].mean(),
        "n_visible": vis.groupby("t_start").size(),
        "n_persons": g.size(),
    }).fillna({"n_visible": 0}).reset_index()  # fmt: skip


def _with_withheld(bins: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    vis = bins[bins["face_visible"].astype(bool)] if len(bins) else bins
    e = vis.groupby("t_start")["engagement"] if len(vis) else None
    own = pd.DataFrame({
        "s": e.sum() if e is not None else pd.Series(dtype=float),
        "k": e.count() if e is not None else pd.Series(dtype=float),
        "v": vis.groupby("t_start").size() if len(vis) else pd.Series(dtype=float),
        "p": bins.groupby("t_start").size() if len(bins) else pd.Series(dtype=float),
    })
    a = agg.set_index("t_start")
    w = a["n_visible"].where(a["engagement"].notna(), 0)
    df = own.join(pd.DataFrame({"as": (a["engagement"] * w).fillna(0), "ak": w, "av": a["n_visible"],
                                "ap": a["n_faces"]}), how="outer").fillna(0)  # fmt: skip
    k = df["k"] + df["ak"]
    return pd.DataFrame({
        "engagement": ((df["s"] + df["as"]) / k).where(k > 0),
        "n_visible": (df["v"] + df["av"]).astype(int),
        "n_persons": (df["p"] + df["ap"]).astype(int),
    }).rename_axis("t_start").reset_index()  # fmt: skip


def class_curve(s: Session, session_id: int) -> pd.DataFrame:
    """The class engagement curve counting every face: per-person bins plus the class aggregates of
    faces not stored per person (``class_engagement`` columns: t_start, engagement, n_visible, n_persons)."""
    return class_engagement(session_bins(s, session_id), consent.class_aggregates(s, session_id))


def export_frame(s: Session, session_id: int) -> pd.DataFrame:
    """One row per person per time bin, in the documented export column order."""
    if s.get(Recording, session_id) is None:
        raise LookupError(f"session {session_id} does not exist")
    return session_bins(s, session_id).reindex(columns=list(EXPORT_COLUMNS))


def session_persons(s: Session, session_id: int) -> list[tuple[Person, int]]:
    """Persons seen in a session with their number of bins."""
    q = (
        select(Person, func.count(TimeBin.id))
        .join(TimeBin, TimeBin.person_id == Person.id)
        .where(TimeBin.session_id == session_id)
        .group_by(Person.id)
        .order_by(Person.label)
    )
    return [(p, n) for p, n in s.execute(q)]


# --- audit -------------------------------------------------------------------------------


def audit(s: Session, actor: str, action: str, target: str, **detail: Any) -> None:
    """An audit row, with the target's name as it is now (``storage.audit.write``)."""
    _write_audit(s, actor, action, target, **detail)


def audit_log(s: Session, limit: int = 200) -> list[AuditEntry]:
    return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))


class SessionBusy(ValueError):
    """The session has an analysis under way."""


def delete_session(s: Session, session_id: int, actor: str, force: bool = False) -> None:
    """Delete a session (audited); refused while it is analysed unless ``force`` (the job then fails)."""
    rec = s.get(Recording, session_id)
    if rec is None:
        raise LookupError(f"session {session_id} does not exist")
    busy = active_job(s, session_id)
    if busy is not None and not force:
        raise SessionBusy(f"session {session_id} is being analysed (job {busy.id}, {busy.status.value}); "
                          f"cancel it first: affectline jobs cancel {busy.id}")  # fmt: skip
    audit(s, actor, "delete_session", f"session:{session_id}", title=rec.title)
    s.delete(rec)

