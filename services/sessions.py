"""Sessions and groups as the front ends list and change them.

Reads take the viewer's ``group_ids`` (``None`` = all) and return only what those groups hold;
writes check the actor's permission and are audited under ``Actor.audit_name``. ``job_phrase``
is the one wording of a job's state for teachers (no tracebacks, no status codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select

from affectline.task_names import ANALYZE_TASK
from services.actor import Actor, GroupIds, require
from services.db import scope, visible_session
from storage import repo
from storage.models import AuditEntry, Group, Job, JobStatus, Recording, SessionKind, TimeBin, Track

SessionBusy = repo.SessionBusy
SESSION_COLUMNS = ["id", "title", "kind", "group", "created", "duration_s", "persons", "job_id", "status", "progress",
                   "state"]  # fmt: skip


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


@dataclass(frozen=True)
class SessionLine:
    """One line of ``affectline sessions list``."""

    id: int
    kind: str
    state: str  # storage.repo.SESSION_STATES, with the progress while under way
    title: str


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
            select(Job.session_id, func.max(Job.id).label("jid")).where(Job.session_id.in_(ids), Job.task == ANALYZE_TASK)
            .group_by(Job.session_id)
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


def session_lines(url: str, actor: Actor) -> list[SessionLine]:
    """Visible sessions, newest first, each with its state (and progress while analysed)."""
    require(actor, "view_sessions")
    with scope(url) as s:
        recs = repo.list_sessions(s, actor.group_ids)
        states = repo.session_states(s, [r.id for r in recs])
        out = []
        for r in recs:
            state = states.get(r.id, "new")
            j = repo.latest_job(s, r.id)
            if state in ("analysing", "queued") and j is not None:
                state += f" {min(j.progress, 1.0):.0%}"
            out.append(SessionLine(r.id, r.kind.value, state, r.title))
        return out


def session_info(url: str, group_ids: GroupIds, session_id: int) -> SessionInfo:
    """One visible session's metadata; LookupError if it is missing or not visible."""
    with scope(url) as s:
        r = visible_session(s, group_ids, session_id)
        g = s.get(Group, r.group_id) if r.group_id is not None else None
        return SessionInfo(r.id, r.title, SessionKind(r.kind), r.group_id, g.name if g else "-", r.duration,
                           float(r.bin_seconds or 1.0), r.academic_model, r.expression_model,
                           r.analysed_at is not None)  # fmt: skip


def session_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """All time bins of a visible session (``storage.repo.session_bins``)."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return repo.session_bins(s, session_id)


def session_persons(url: str, group_ids: GroupIds, session_id: int) -> list[tuple[int, str]]:
    """(person id, label) of the persons with bins in a visible session, in label order (cheap: no bins read)."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return [(p.id, p.label) for p, _ in repo.session_persons(s, session_id)]


def track_thumbnail(url: str, group_ids: GroupIds, session_id: int, track_id: int) -> bytes | None:
    """A track's stored face thumbnail (JPEG), or None (none stored: the setting is off by default)."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        t = s.get(Track, track_id)
        return t.thumbnail if t is not None and t.session_id == session_id else None


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


def group_for_upload(url: str, actor: Actor, name: str, kind: SessionKind | str) -> int:
    """The group of that name, created when the operator names a new one; returns its id."""
    require(actor, "upload")
    with scope(url) as s:
        return repo.get_or_create_group(s, name, kind).id


def create_group(url: str, actor: Actor, name: str, kind: SessionKind | str) -> int:
    """An administrator's new group (audited); returns its id."""
    require(actor, "manage_users")
    if not name.strip():
        raise ValueError("a group needs a name")
    with scope(url) as s:
        gid = repo.get_or_create_group(s, name.strip(), kind).id
        repo.audit(s, actor.audit_name, "create_group", f"group:{gid}", name=name.strip(), kind=SessionKind(kind).value)
    return gid


def delete_session(url: str, actor: Actor, session_id: int, data_dir: Path | None = None) -> None:
    """Delete a session with everything analysed from it (audited); refused while it is analysed. With
    ``data_dir``, its review copy and any parts under it go too, after the commit."""
    require(actor, "delete_session")
    with scope(url) as s:
        if s.get(Recording, session_id) is not None:
            visible_session(s, actor.group_ids, session_id)
        repo.delete_session(s, session_id, actor.audit_name)
    if data_dir is not None:
        from storage.review import remove_session_files

        remove_session_files(data_dir, session_id)


def count_audit(url: str, action: str, target: str | None = None) -> int:
    """How many audit entries of ``action`` (and ``target``) exist; used to show and test audited paths."""
    with scope(url) as s:
        q = select(func.count(AuditEntry.id)).where(AuditEntry.action == action)
        if target is not None:
            q = q.where(AuditEntry.target == target)
        return int(s.scalar(q) or 0)
