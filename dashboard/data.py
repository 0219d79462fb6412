"""Data access for the dashboard: cached reads and audited writes over ``storage``.

Every read takes the viewer's ``group_ids`` (``storage.access.visible_group_ids``;
``None`` = all) and filters by it, so a page cannot show what its user may not
see. Reads are ``st.cache_data`` with a short TTL; writes clear those caches.
The functions work outside a Streamlit run too (tests call them directly).

Work is started by task name (``send_task``) after the Job row is committed: the
dashboard never imports the worker code, torch, ``recognition`` or ``ingest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Sequence

import pandas as pd
import streamlit as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from affectline.settings import Settings
from services import analyses, exports
from services.actor import Actor, GroupIds, actor_for_user, require
from services.analyses import VIDEO_TYPES, safe_filename  # noqa: F401  (pages and tests use them from here)
from services.db import scope as services_scope
from services.db import visible_session
from services.exports import Export, ExportFormat, frame_bytes  # noqa: F401
from storage import access, people, repo, tags
from storage.models import (
    AuditEntry,
    Group,
    Job,
    JobStatus,
    Person,
    Recording,
    Role,
    SessionKind,
    TimeBin,
    Track,
    UserGroup,
)



# --- engine and transactions ----------------------------------------------------------------


def scope(url: str):
    """A transaction on the dashboard's database (migrated on first use): committed on success."""
    return services_scope(url)


def invalidate() -> None:
    """Forget cached query results (after any write)."""
    st.cache_data.clear()
    _class_bins.clear()  # the cached resources of query results (defined below)
    _class_figure.clear()


# --- who is looking -------------------------------------------------------------------------


Viewer = Actor  # the logged-in user, as the shared services know them


def viewer_for(url: str, user_id: int) -> Viewer | None:
    """Re-read the user and their grants (never cached: a revoked grant takes effect at once)."""
    with scope(url) as s:
        return actor_for_user(s, user_id)


def _require(viewer: Viewer, action: str) -> None:
    require(viewer, action)


def _visible_session(s: Session, viewer_groups: GroupIds, session_id: int) -> Recording:
    return visible_session(s, viewer_groups, session_id)


# --- jobs in plain words --------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    id: int
    session_id: int | None
    status: JobStatus
    progress: float
    message: str
    error: str | None
    created_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.queued, JobStatus.running)


def job_phrase(job: JobState | None, now: datetime | None = None) -> str:
    """What a job is doing, for a teacher: no tracebacks, no status codes."""
    if job is None:
        return "Not analysed yet."
    if job.status is JobStatus.queued:
        waited = ""
        if job.created_at is not None:
            created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=timezone.utc)
            secs = ((now or datetime.now(timezone.utc)) - created).total_seconds()
            if secs > 120:
                waited = f" It has waited {secs / 60:.0f} minutes: check that the analysis worker is running."
        return "Waiting for the analysis worker to pick it up." + waited
    if job.status is JobStatus.running:
        return f"Analysing: {job.message or 'working'} ({job.progress:.0%} done)."
    if job.status is JobStatus.done:
        return "Analysis finished."
    reason = (job.error or job.message or "no reason was recorded").strip().splitlines()
    return f"Analysis failed: {reason[-1] if reason else 'no reason was recorded'}"


def _job_state(job: Job) -> JobState:
    return JobState(job.id, job.session_id, JobStatus(job.status), float(job.progress or 0.0), job.message or "",
                    job.error, job.created_at)  # fmt: skip


def job_state(url: str, group_ids: GroupIds, job_id: int) -> JobState | None:
    """A job's current row (not cached: the progress fragment polls it)."""
    with scope(url) as s:
        job = s.get(Job, job_id)
        if job is None or job.session_id is None:
            return None
        _visible_session(s, group_ids, job.session_id)
        return _job_state(job)


def active_jobs(url: str, group_ids: GroupIds) -> list[tuple[str, JobState]]:
    """(session title, job) for queued or running jobs on visible sessions, newest first (not cached)."""
    with scope(url) as s:
        q = (
            select(Job, Recording.title)
            .join(Recording, Recording.id == Job.session_id)
            .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
            .order_by(Job.id.desc())
        )
        if group_ids is not None:
            q = q.where(Recording.group_id.in_(group_ids))
        return [(title, _job_state(job)) for job, title in s.execute(q)]


# --- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionInfo:
    id: int
    title: str
    kind: SessionKind
    group_id: int | None
    group: str
    duration: float | None
    bin_seconds: float
    academic_model: str | None
    expression_model: str | None
    analysed: bool


SESSION_COLUMNS = ["id", "title", "kind", "group", "created", "duration_s", "persons", "job_id", "status", "progress",
                   "state"]  # fmt: skip


@st.cache_data(ttl=5, max_entries=64, show_spinner=False)
def sessions_frame(url: str, group_ids: GroupIds, kind: str | None = None) -> pd.DataFrame:
    """Visible sessions, newest first, with group name, person count and their latest job."""
    with scope(url) as s:
        recs = repo.list_sessions(s, group_ids)
        if kind is not None:
            recs = [r for r in recs if SessionKind(r.kind).value == kind]
        ids = [r.id for r in recs]
        groups = dict(s.execute(select(Group.id, Group.name)).all())
        persons = dict(
            s.execute(
                select(TimeBin.session_id, func.count(func.distinct(TimeBin.person_id)))
                .where(TimeBin.session_id.in_(ids))
                .group_by(TimeBin.session_id)
            ).all()
        )
        last_job_id = (
            select(Job.session_id, func.max(Job.id).label("jid")).where(Job.session_id.in_(ids)).group_by(Job.session_id)
        ).subquery()
        jobs = {j.session_id: _job_state(j) for j in s.scalars(select(Job).join(last_job_id, Job.id == last_job_id.c.jid))}
        rows = []
        for r in recs:
            job = jobs.get(r.id)
            rows.append({
                "id": r.id, "title": r.title, "kind": SessionKind(r.kind).value, "group": groups.get(r.group_id, "-"),
                "created": r.created_at, "duration_s": r.duration, "persons": int(persons.get(r.id, 0)),
                "job_id": job.id if job else None, "status": job.status.value if job else "not analysed",
                "progress": job.progress if job else 0.0, "state": job_phrase(job),
            })  # fmt: skip
        return pd.DataFrame(rows, columns=SESSION_COLUMNS)


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def session_info(url: str, group_ids: GroupIds, session_id: int) -> SessionInfo:
    """One visible session's metadata; LookupError if it is missing or not visible."""
    with scope(url) as s:
        r = _visible_session(s, group_ids, session_id)
        g = s.get(Group, r.group_id) if r.group_id is not None else None
        return SessionInfo(r.id, r.title, SessionKind(r.kind), r.group_id, g.name if g else "-", r.duration,
                           float(r.bin_seconds or 1.0), r.academic_model, r.expression_model,
                           r.analysed_at is not None)  # fmt: skip


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def session_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """All time bins of a visible session (``storage.repo.session_bins``)."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return repo.session_bins(s, session_id)


def class_engagement(bins: pd.DataFrame) -> pd.DataFrame:
    return repo.class_engagement(bins)


# --- upload and enqueue ---------------------------------------------------------------------


def send_analysis(settings: Settings, job_id: int) -> None:
    analyses.send_analysis(settings, job_id)


def enqueue_analysis(
    url: str, settings: Settings, viewer: Viewer, filename: str, video: bytes | BinaryIO, kind: SessionKind | str,
    group_id: int, title: str | None = None, analysis_fps: float | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Save an uploaded video under ``data_dir/uploads``, commit a session and a queued job, then enqueue it.

    Returns (session id, job id). If the broker refuses, the job is marked failed with the reason and the
    error is raised.
    """
    _require(viewer, "upload")
    with scope(url) as s:  # refuse before writing gigabytes to disk
        group = s.get(Group, group_id)
        if group is None or not viewer.sees(group_id):
            raise LookupError(f"group {group_id} does not exist or is not visible to you")
        if SessionKind(group.kind) is not SessionKind(kind):
            raise ValueError(f"group {group.name!r} is a {SessionKind(group.kind).value} group, not {SessionKind(kind).value}")
    fps = analyses.check_fps(analysis_fps or settings.analysis_fps, settings.bin_seconds)  # before the file is written
    dest = analyses.save_upload(settings, filename, video)
    sid, jid = analyses.create_analysis(
        url, viewer, dest, kind, group_id, fps, title=title or Path(filename).stem,
        audit_action="upload", file=analyses.safe_filename(filename), bytes=dest.stat().st_size,
    )  # fmt: skip
    invalidate()
    analyses.enqueue(url, settings, sid, jid)
    return sid, jid


# --- export ---------------------------------------------------------------------------------


def export_session(url: str, viewer: Viewer, session_id: int, fmt: ExportFormat) -> Export:
    """The session's export (``services.exports``: the same bytes as the CLI's), audited."""
    out = exports.export_session(url, viewer, session_id, fmt)
    invalidate()
    return out


# --- groups, persons, tracks ----------------------------------------------------------------


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def groups_frame(url: str, group_ids: GroupIds, kind: str | None = None) -> pd.DataFrame:
    """Visible groups: id, name, kind."""
    with scope(url) as s:
        q = select(Group.id, Group.name, Group.kind).order_by(Group.name)
        if group_ids is not None:
            q = q.where(Group.id.in_(group_ids))
        if kind is not None:
            q = q.where(Group.kind == SessionKind(kind))
        rows = [{"id": i, "name": n, "kind": SessionKind(k).value} for i, n, k in s.execute(q)]
        return pd.DataFrame(rows, columns=["id", "name", "kind"])


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def persons_frame(url: str, group_ids: GroupIds) -> pd.DataFrame:
    """Persons of visible groups: id, label, enrolled, group, sessions (seen in), bins."""
    with scope(url) as s:
        q = (
            select(Person.id, Person.label, Person.enrolled, Group.name, Person.group_id,
                   func.count(func.distinct(TimeBin.session_id)), func.count(TimeBin.id))  # fmt: skip
            .outerjoin(Group, Group.id == Person.group_id)
            .outerjoin(TimeBin, TimeBin.person_id == Person.id)
            .group_by(Person.id, Group.name)
            .order_by(Group.name, Person.label)
        )
        if group_ids is not None:
            q = q.where(Person.group_id.in_(group_ids))
        cols = ["id", "label", "enrolled", "group", "group_id", "sessions", "bins"]
        return pd.DataFrame([dict(zip(cols, r)) for r in s.execute(q)], columns=cols)


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def session_tracks(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """Tracks of a visible session: id, track_key, person_id, person, enrolled, t_start, t_end, samples, match."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        q = (
            select(Track.id, Track.track_key, Track.person_id, Person.label, Person.enrolled, Track.t_start, Track.t_end,
                   Track.n_samples, Track.match_score)  # fmt: skip
            .outerjoin(Person, Person.id == Track.person_id)
            .where(Track.session_id == session_id)
            .order_by(Track.t_start)
        )
        cols = ["id", "track_key", "person_id", "person", "enrolled", "t_start", "t_end", "samples", "match"]
        return pd.DataFrame([dict(zip(cols, r)) for r in s.execute(q)], columns=cols)


def _visible_person(s: Session, viewer: Viewer, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not viewer.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def enroll_track(url: str, viewer: Viewer, session_id: int, track_id: int, name: str) -> int:
    """Enrol a visible session's track as a named person (``storage.people.enroll``, audited there)."""
    _require(viewer, "manage_people")
    with scope(url) as s:
        _visible_session(s, viewer.group_ids, session_id)
        track = s.get(Track, track_id)
        if track is None or track.session_id != session_id:
            raise LookupError(f"track {track_id} is not part of session {session_id}")
        pid = people.enroll(s, session_id, track.track_key, name, viewer.username).id
    invalidate()
    return pid


def rename_person(url: str, viewer: Viewer, person_id: int, label: str) -> None:
    """Rename a person of a visible group (``storage.people.rename``: this also enrols them)."""
    _require(viewer, "manage_people")
    with scope(url) as s:
        _visible_person(s, viewer, person_id)
        people.rename(s, person_id, label, viewer.username)
    invalidate()


def merge_persons(url: str, viewer: Viewer, keep_id: int, other_id: int) -> None:
    """Make ``other`` part of ``keep`` (``storage.people.merge``); both must be visible."""
    _require(viewer, "merge_people")
    with scope(url) as s:
        _visible_person(s, viewer, keep_id)
        _visible_person(s, viewer, other_id)
        people.merge(s, keep_id, other_id, viewer.username)
    invalidate()


def delete_person(url: str, viewer: Viewer, person_id: int) -> None:
    """Delete a person with embeddings, timelines and tags (``storage.people.delete_person``; audited by id only)."""
    _require(viewer, "delete_person")
    with scope(url) as s:
        _visible_person(s, viewer, person_id)
        people.delete_person(s, person_id, viewer.username)
    invalidate()


# --- tags (clinician review), through storage.tags --------------------------------------------

TAG_COLUMNS = ["uid", "person_id", "t_start", "t_end", "label", "note", "is_baseline", "author", "created_at"]


def list_tags(url: str, viewer: Viewer, session_id: int, person_id: int | None = None) -> pd.DataFrame:
    """Current (latest, not deleted) tags of a visible session (not cached: a clinician edits them)."""
    with scope(url) as s:
        _visible_session(s, viewer.group_ids, session_id)
        rows = [{c: getattr(t, c) for c in TAG_COLUMNS}
                for t in tags.latest_tags(s, session_id=session_id, person_id=person_id)]  # fmt: skip
        return pd.DataFrame(rows, columns=TAG_COLUMNS)


def add_tag(url: str, viewer: Viewer, session_id: int, person_id: int, t_start: float, t_end: float, label: str,
            note: str = "", is_baseline: bool = False) -> str:  # fmt: skip
    """Tag a time range of a person in a visible session (audited as the CLI's ``add_tag``); returns the tag's uid."""
    _require(viewer, "tag")
    with scope(url) as s:
        _visible_session(s, viewer.group_ids, session_id)
        _visible_person(s, viewer, person_id)
        tag = tags.add_tag(s, session_id=session_id, person_id=person_id, t_start=t_start, t_end=t_end,
                           label=label, note=note, author=viewer.username, is_baseline=is_baseline)  # fmt: skip
        repo.audit(s, viewer.audit_name, "add_tag", f"tag:{tag.uid}", session_id=session_id, person_id=person_id,
                   label=tag.label, t_start=tag.t_start, t_end=tag.t_end, baseline=bool(is_baseline))  # fmt: skip
        return tag.uid


def delete_tag(url: str, viewer: Viewer, session_id: int, uid: str) -> None:
    """Delete a tag of a visible session (a new, deleted version; history and audit kept by storage.tags)."""
    _require(viewer, "tag")
    with scope(url) as s:
        _visible_session(s, viewer.group_ids, session_id)
        if not any(t.uid == uid for t in tags.latest_tags(s, session_id=session_id)):
            raise LookupError(f"tag {uid} is not a current tag of session {session_id}")
        tags.delete_tag(s, uid, viewer.username)


def tag_vocabulary(url: str) -> list[str]:
    """Labels a clinician can pick: the 7 expressions plus the clinic's own."""
    with scope(url) as s:
        return tags.vocabulary(s)


def add_tag_label(url: str, viewer: Viewer, name: str) -> str:
    """Add a clinic label to the tag vocabulary (audited by storage.tags)."""
    _require(viewer, "tag")
    with scope(url) as s:
        return tags.add_label(s, name, viewer.username).name


# --- admin ----------------------------------------------------------------------------------


def users_frame(url: str, viewer: Viewer) -> pd.DataFrame:
    """Users with role, whether they can log in, and granted groups (admin only)."""
    _require(viewer, "manage_users")
    with scope(url) as s:
        names = dict(s.execute(select(Group.id, Group.name)).all())
        grants: dict[int, list[str]] = {}
        for uid, gid in s.execute(select(UserGroup.user_id, UserGroup.group_id)):
            grants.setdefault(uid, []).append(names.get(gid, str(gid)))
        rows = [{"id": u.id, "username": u.username, "role": Role(u.role).value, "password": u.password_hash is not None,
                 "groups": ", ".join(sorted(grants.get(u.id, [])))} for u in access.list_users(s)]  # fmt: skip
        return pd.DataFrame(rows, columns=["id", "username", "role", "password", "groups"])


def count_audit(url: str, action: str, target: str | None = None) -> int:
    """How many audit entries of ``action`` (and ``target``) exist; used to show and test audited paths."""
    with scope(url) as s:
        q = select(func.count(AuditEntry.id)).where(AuditEntry.action == action)
        if target is not None:
            q = q.where(AuditEntry.target == target)
        return int(s.scalar(q) or 0)


def persons_in(bins: pd.DataFrame) -> Sequence[tuple[int, str]]:
    """(person id, label) of the persons in a session's bins, in label order."""
    if bins.empty:
        return []
    p = bins[["person_id", "person_label"]].drop_duplicates().sort_values(["person_label", "person_id"])
    return [(int(i), str(lab)) for i, lab in p.itertuples(index=False)]


def admin_create_group(url: str, viewer: Viewer, name: str, kind: SessionKind | str) -> int:
    _require(viewer, "manage_users")
    if not name.strip():
        raise ValueError("a group needs a name")
    with scope(url) as s:
        gid = repo.get_or_create_group(s, name.strip(), kind).id
        repo.audit(s, viewer.username, "create_group", f"group:{gid}", name=name.strip(), kind=SessionKind(kind).value)
    invalidate()
    return gid


def admin_delete_session(url: str, viewer: Viewer, session_id: int) -> None:
    """Delete a session with everything analysed from it (``storage.repo.delete_session``, audited)."""
    _require(viewer, "delete_session")
    with scope(url) as s:
        repo.delete_session(s, session_id, viewer.username)
    from affectline.settings import get_settings
    from storage.review import remove_session_files

    remove_session_files(get_settings().data_dir, session_id)  # the review copy and any parts, after the commit
    invalidate()


# --- issue 11: views aggregated to what the screen shows (services.summaries / services.timelines) ---
#
# The raw class bins (162,000 rows for 90 min x 30 students) are read once per session and kept a
# few minutes; every chart asks for a small, cached reduction of them (a few hundred points, a
# students x 240 heat map), so a rerun or a zoom sends kilobytes, not the session.

from services import checkins as _ck  # noqa: E402
from services import lessons as _lessons  # noqa: E402
from services import summaries as _sm  # noqa: E402  (kept beside the functions that use it)
from services import timelines as _tl  # noqa: E402

MAX_POINTS = 600  # a wide chart is ~1,200 px: two pixels a point
HEAT_COLUMNS = 240


# Each view is cached under the session's fingerprint (``timelines.fingerprint``: analysis time and a
# count of its bins, re-read at most every 10 s), so an hour-long TTL never serves a re-analysed,
# merged or consent-withdrawn session: the fingerprint changes and the views are recomputed. Labels
# are applied fresh on every call (a rename shows at once).
VIEW_TTL = 3600


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def session_fingerprint(url: str, group_ids: GroupIds, session_id: int) -> str:
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return _tl.fingerprint(s, session_id)


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def person_labels(url: str, group_ids: GroupIds, session_id: int, person_ids: tuple[int, ...]) -> dict[int, str]:
    """Current labels of these persons of a visible session."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return dict(s.execute(select(Person.id, Person.label).where(Person.id.in_(list(person_ids)))).all())


@st.cache_resource(ttl=VIEW_TTL, max_entries=4, show_spinner=False)
def _class_bins(url: str, group_ids: GroupIds, session_id: int, fp: str) -> pd.DataFrame:
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return _tl.class_bins(s, session_id)


def class_view_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """Every person's engagement and academic bins of a visible session (``services.timelines.class_bins``).

    A shared cached resource, not a copy per call (cache_data would unpickle 15 MB on every hit):
    callers must not modify it."""
    return _class_bins(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_aggregates(url: str, group_ids: GroupIds, session_id: int, fp: str) -> tuple[pd.DataFrame, str]:
    from storage import consent

    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return consent.class_aggregates(s, session_id), consent.withheld_summary(s, session_id).sentence()


def class_aggregates(url: str, group_ids: GroupIds, session_id: int) -> tuple[pd.DataFrame, str]:
    """Class aggregates of faces with no stored timeline, and the sentence saying so (empty when none)."""
    return _class_aggregates(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@dataclass(frozen=True)
class ClassOverview:
    summary: pd.DataFrame  # services.summaries.roster: by name, never ranked
    moments: list  # services.summaries.Moment
    t0: float
    t1: float
    checkins: list = ()  # services.checkins.CheckIn: students whose own pattern stood out, in time order


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_overview(url: str, group_ids: GroupIds, session_id: int, fp: str) -> ClassOverview:
    info = session_info(url, group_ids, session_id)
    bins = class_view_bins(url, group_ids, session_id)
    agg, _ = class_aggregates(url, group_ids, session_id)
    t0, t1 = 0.0, float(info.duration or 0.0)
    if len(bins):
        t1 = max(t1, float(bins["t_start"].max()) + info.bin_seconds)
    return ClassOverview(_sm.roster(_sm.student_summary(bins, info.bin_seconds, duration=t1 - t0)),
                         _sm.moments(bins, info.bin_seconds, aggregates=agg), t0, t1,
                         _ck.checkins(bins, info.bin_seconds))  # fmt: skip


def class_overview(url: str, group_ids: GroupIds, session_id: int) -> ClassOverview:
    """Per-student summary (by name), the session's moments and check-ins (computed once per analysis and kept)."""
    import dataclasses

    ov = _class_overview(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))
    names = person_labels(url, group_ids, session_id, tuple(int(p) for p in ov.summary["person_id"]))
    summary = ov.summary.assign(person_label=[names.get(int(p), lab) for p, lab in
                                              zip(ov.summary["person_id"], ov.summary["person_label"])])  # fmt: skip
    moments = [dataclasses.replace(m, person_labels=tuple(names.get(p, lab) for p, lab in zip(m.person_ids, m.person_labels)))
               for m in ov.moments]  # fmt: skip
    return ClassOverview(summary, moments, ov.t0, ov.t1, _ck.relabel(ov.checkins, names))


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_series_full(url: str, group_ids: GroupIds, session_id: int, fp: str) -> pd.DataFrame:
    info = session_info(url, group_ids, session_id)
    agg, _ = class_aggregates(url, group_ids, session_id)
    return _sm.class_series(class_view_bins(url, group_ids, session_id), info.bin_seconds, agg)


def class_series_full(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """The class curve at bin resolution (every face, stored timeline or not); zooms resample it."""
    return _class_series_full(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=32, show_spinner=False)
def _class_curve(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, max_points: int,
                 fp: str) -> pd.DataFrame:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    return _sm.resample(class_series_full(url, group_ids, session_id), t0, t1, max_points, info.bin_seconds)


def class_curve_view(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float,
                     max_points: int = MAX_POINTS) -> pd.DataFrame:  # fmt: skip
    """The class engagement curve and visible faces over [t0, t1), at most ``max_points`` buckets."""
    return _class_curve(url, group_ids, session_id, t0, t1, max_points, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=32, show_spinner=False)
def _heatmap(url: str, group_ids: GroupIds, session_id: int, value: str, t0: float, t1: float,
             order: tuple[int, ...], max_columns: int, fp: str) -> _sm.Heatmap:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    return _sm.heatmap(class_view_bins(url, group_ids, session_id), value, t0, t1, max_columns, info.bin_seconds,
                       order=list(order))  # fmt: skip


def heatmap_view(url: str, group_ids: GroupIds, session_id: int, value: str, t0: float, t1: float,
                 order: tuple[int, ...], max_columns: int = HEAT_COLUMNS) -> _sm.Heatmap:  # fmt: skip
    """Students (``order``, top to bottom) x time over [t0, t1), at most ``max_columns`` columns."""
    import dataclasses

    h = _heatmap(url, group_ids, session_id, value, t0, t1, order, max_columns,
                 session_fingerprint(url, group_ids, session_id))  # fmt: skip
    names = person_labels(url, group_ids, session_id, tuple(h.person_ids))
    return dataclasses.replace(h, person_labels=[names.get(p, lab) for p, lab in zip(h.person_ids, h.person_labels)])


@st.cache_data(ttl=VIEW_TTL, max_entries=128, show_spinner=False)
def _student(url: str, group_ids: GroupIds, session_id: int, person_id: int, t0: float, t1: float, max_points: int,
             fp: str) -> pd.DataFrame:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    b = class_view_bins(url, group_ids, session_id)
    b = b[b["person_id"] == person_id]
    vis = b["face_visible"].to_numpy(bool)
    cols = ["engagement", *_sm.ACADEMIC]
    frame = b[["t_start", *cols]].copy()
    frame.loc[~vis, cols] = float("nan")
    frame["not_readable"] = _sm.unreadable(b).astype(float)  # share per bucket: drawn as "not readable"
    return _sm.resample(frame, t0, t1, max_points, info.bin_seconds)


def student_view(url: str, group_ids: GroupIds, session_id: int, person_id: int, t0: float, t1: float,
                 max_points: int = MAX_POINTS // 2) -> pd.DataFrame:  # fmt: skip
    """One student's engagement and academic emotions over [t0, t1), resampled (NaN = not visible)."""
    return _student(url, group_ids, session_id, person_id, t0, t1, max_points,
                    session_fingerprint(url, group_ids, session_id))  # fmt: skip


@st.cache_resource(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_figure(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, value: str,
                  students: tuple[int, ...], labels: tuple[tuple[int, str], ...], title: str, fp: str):  # fmt: skip
    from dashboard import charts

    ov = class_overview(url, group_ids, session_id)
    order = tuple(int(p) for p in ov.summary["person_id"])
    names = dict(labels)
    curve = class_curve_view(url, group_ids, session_id, t0, t1)
    heat = heatmap_view(url, group_ids, session_id, value, t0, t1, order)
    shown = [m for m in ov.moments if m.t_end > t0 and m.t_start < t1]
    rows = [(names[p], student_view(url, group_ids, session_id, p, t0, t1)) for p in students]
    return charts.class_overview_figure(curve, heat, shown, (t0, t1), ov.t1, title=title, value_label=value,
                                        students=rows)  # fmt: skip


def class_figure(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, value: str,
                 students: Sequence[int], title: str):  # fmt: skip
    """The session page's one chart (``charts.class_overview_figure``) for this view, built once and kept.

    Building it (plotly validation of 8 panels and 39 traces) was 0.15-0.5 s of every open; the same view
    opened again, by this user or another with the same groups, is now a lookup. A shared resource: callers
    must not modify it. Keyed by the students' current labels, so a rename shows at once."""
    ov = class_overview(url, group_ids, session_id)
    labels = tuple((int(p), str(lab)) for p, lab in zip(ov.summary["person_id"], ov.summary["person_label"]))
    return _class_figure(url, group_ids, session_id, float(t0), float(t1), value, tuple(int(p) for p in students),
                         labels, title, session_fingerprint(url, group_ids, session_id))  # fmt: skip


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def group_trends(url: str, group_ids: GroupIds, group_id: int, limit: int = 12) -> _sm.Trends:
    """Per-student and class figures across the group's newest ``limit`` analysed sessions."""
    if group_ids is not None and group_id not in group_ids:
        raise LookupError(f"group {group_id} does not exist or is not visible to you")
    import dataclasses

    with scope(url) as s:  # recordings of a few seconds are left out (Settings.trend_min_minutes), with a note
        lessons = _lessons.group_lessons(s, group_id, limit=limit)
    # each session's summary is the one its own page caches: a session already opened costs nothing here
    tr = _sm.trends_from_summaries([(k, class_overview(url, group_ids, k.id).summary) for k in lessons.kept])
    return dataclasses.replace(tr, note=lessons.note)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def child_bins(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    """One person's bins in a visible session, every score and the personalised label (``timelines.person_bins``)."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return _tl.person_bins(s, session_id, person_id)


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def child_cues(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    """The cue model's inputs per bin (blendshapes, head pose) of one person in a visible session."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return _tl.person_cues(s, session_id, person_id)


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def track_thumbnail(url: str, group_ids: GroupIds, session_id: int, track_id: int) -> bytes | None:
    """A track's stored face thumbnail (JPEG), or None (none stored: the setting is off by default)."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        t = s.get(Track, track_id)
        return t.thumbnail if t is not None and t.session_id == session_id else None


def session_persons(url: str, group_ids: GroupIds, session_id: int) -> list[tuple[int, str]]:
    """(person id, label) of the persons with bins in a visible session, in label order (cheap: no bins read)."""
    with scope(url) as s:
        _visible_session(s, group_ids, session_id)
        return [(p.id, p.label) for p, _ in repo.session_persons(s, session_id)]


def edit_tag(url: str, viewer: Viewer, session_id: int, uid: str, **changes) -> None:
    """Change a current tag of a visible session (t_start, t_end, label, note, is_baseline): a new version."""
    _require(viewer, "tag")
    with scope(url) as s:
        _visible_session(s, viewer.group_ids, session_id)
        if not any(t.uid == uid for t in tags.latest_tags(s, session_id=session_id)):
            raise LookupError(f"tag {uid} is not a current tag of session {session_id}")
        tags.edit_tag(s, uid, viewer.username, **changes)
        repo.audit(s, viewer.audit_name, "edit_tag", f"tag:{uid}", session_id=session_id,
                   **{k: v for k, v in changes.items() if v is not None})  # fmt: skip


# --- the session page's first view, for the warm-up at server start (dashboard.warmup) ----------

DEFAULT_STUDENTS = 6  # rows drawn under the heat map before anyone is picked: the first by name
DEFAULT_HEAT_VALUE = _sm.HEATMAP_VALUES[0]


def chart_title(therapy: bool) -> str:
    return "Engagement over time (therapy session)" if therapy else "Class engagement"


def warm_session(url: str, group_ids: GroupIds, session_id: int):
    """Compute what the session page's first view of a session needs, under the page's own cache keys.

    The same calls, with the same arguments, that ``views/session.py`` makes for its default view (whole
    session, engagement heat map, the first six students by name), so the first open after a server start
    finds them cached. Returns the chart, or None when that page draws no per-student chart (not analysed,
    or no stored timelines). Visibility is checked as on any read: ``group_ids`` must see the session."""
    info = session_info(url, group_ids, session_id)
    if not info.analysed:
        return None
    ov = class_overview(url, group_ids, session_id)
    class_aggregates(url, group_ids, session_id)
    if ov.summary.empty:
        return None
    order = tuple(int(p) for p in ov.summary["person_id"])
    class_curve_view(url, group_ids, session_id, ov.t0, ov.t1)
    return class_figure(url, group_ids, session_id, ov.t0, ov.t1, DEFAULT_HEAT_VALUE, order[:DEFAULT_STUDENTS],
                        chart_title(info.kind is SessionKind.therapy))  # fmt: skip
