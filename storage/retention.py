"""Retention: a group keeps its sessions N days (``GroupPolicy.retention_days``), then they go.

An expired session is deleted with everything derived from it: its jobs (and any table that
hangs off a job or the session, such as chunk rows), time bins, feature series, class
aggregates, tracks (with thumbnails), tags, identity overrides, the 'Unknown N' persons its
analysis created, and the files the product keeps for it: the uploaded video when it lies in
the uploads folder (a video analysed in place from elsewhere is the owner's file, never
touched) and the session's folder of derived files (``session_files``). Exports and reports
are built from these rows, so once they are gone nothing of the session can be exported.

What belongs to the group rather than a session stays: enrolled persons, their embeddings
and personal models (they go with the person: ``persons delete`` or withdrawn consent).

Each session is deleted in its own transaction together with its audit row (ids, title,
rows removed per table, files), so an interrupted run loses nothing and repeats nothing;
files are unlinked only after that commit. A session whose analysis is running right now is
left for the next run (its job would fail half-way otherwise); a merely queued job does not
hold expiry up. A run ends with one ``retention_run`` audit row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from storage.consent import aware, now
from storage.db import session_scope
from storage.models import (
    Base,
    ClassBin,
    FeatureSeries,
    GroupPolicy,
    IdentityOverride,
    Job,
    JobStatus,
    Person,
    Recording,
    Tag,
    TimeBin,
    Track,
)

log = logging.getLogger(__name__)

# Deleted explicitly, children first, so each count is known; anything else that references a
# session, job or track (tables added later) is found from the schema and deleted before these.
_KNOWN = (TimeBin, FeatureSeries, ClassBin, Tag, IdentityOverride, Track)
_PARENTS = ("sessions", "jobs", "tracks")


@dataclass(frozen=True)
class ExpiredSession:
    session_id: int
    group_id: int
    title: str
    created_at: datetime
    video_path: str
    retention_days: int


@dataclass
class Deleted:
    """One deleted session: rows removed per table and the files to remove after the commit."""

    session_id: int
    rows: dict[str, int]
    files: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass
class RetentionReport:
    deleted: list[Deleted] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_failed: list[str] = field(default_factory=list)  # "path: why"
    skipped: list[int] = field(default_factory=list)  # sessions being analysed right now: next run

    @property
    def rows(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.deleted:
            for k, v in d.rows.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def total_rows(self) -> int:
        return sum(d.total for d in self.deleted)


def session_files(data_dir: Path, session_id: int) -> Path:
    """The folder for files the product derives from a session (server-side exports, reports,
    caches): whoever writes such files puts them here, so retention removes them."""
    return Path(data_dir) / "sessions" / str(int(session_id))


def expired(s: Session, at: datetime | None = None, group_id: int | None = None) -> list[ExpiredSession]:
    """Sessions older than their group's retention, oldest first."""
    at = at or now()
    q = select(GroupPolicy).where(GroupPolicy.retention_days.is_not(None))
    if group_id is not None:
        q = q.where(GroupPolicy.group_id == group_id)
    out = []
    for pol in s.scalars(q):
        cutoff = at - timedelta(days=int(pol.retention_days))
        recs = s.scalars(
            select(Recording).where(Recording.group_id == pol.group_id, Recording.created_at < cutoff).order_by(Recording.id)
        )
        out += [ExpiredSession(r.id, pol.group_id, r.title, aware(r.created_at), r.video_path, int(pol.retention_days))
                for r in recs]  # fmt: skip
    return sorted(out, key=lambda e: (e.created_at, e.session_id))


def _others(exclude: set[str]) -> list[tuple[Table, object, str]]:
    """(table, column, parent table) for every schema table referencing a session, job or track
    that is not deleted explicitly; deepest dependants first."""
    out = []
    for t in reversed(Base.metadata.sorted_tables):
        if t.name in exclude or t.name in _PARENTS:
            continue
        for fk in t.foreign_keys:
            if fk.column.table.name in _PARENTS:
                out.append((t, fk.parent, fk.column.table.name))
    return out


def delete_session_rows(s: Session, session_id: int) -> dict[str, int]:
    """Delete one session and every row derived from it; returns rows removed per table."""
    rows: dict[str, int] = {}

    def count(name: str, n: int | None) -> None:
        rows[name] = rows.get(name, 0) + (n or 0)

    parent_ids = {
        "sessions": select(Recording.id).where(Recording.id == session_id).scalar_subquery(),
        "jobs": select(Job.id).where(Job.session_id == session_id),
        "tracks": select(Track.id).where(Track.session_id == session_id),
    }
    for table, col, parent in _others({m.__tablename__ for m in _KNOWN} | {"persons"}):
        cond = col == session_id if parent == "sessions" else col.in_(parent_ids[parent])
        count(table.name, s.execute(delete(table).where(cond)).rowcount)
    for model in _KNOWN:
        count(model.__tablename__, s.execute(delete(model).where(model.session_id == session_id)).rowcount)
    # The 'Unknown N' persons of this session's analysis (enrolled persons belong to the group).
    q = delete(Person).where(Person.origin_session_id == session_id, Person.enrolled.is_(False))
    count("persons", s.execute(q).rowcount)
    count("jobs", s.execute(delete(Job).where(Job.session_id == session_id)).rowcount)
    count("sessions", s.execute(delete(Recording).where(Recording.id == session_id)).rowcount)
    return {k: v for k, v in rows.items() if v}


def _files(e: ExpiredSession, s: Session, uploads: Path | None, data_dir: Path | None) -> list[Path]:
    out = []
    if uploads is not None and e.video_path:
        video = Path(e.video_path).resolve()
        shared = s.scalar(select(func.count(Recording.id)).where(Recording.video_path == e.video_path,
                                                                  Recording.id != e.session_id))  # fmt: skip
        if video.is_relative_to(uploads.resolve()) and not shared and video.exists():
            out.append(video)
    if data_dir is not None and session_files(data_dir, e.session_id).exists():
        out.append(session_files(data_dir, e.session_id))
    return out


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


def run(url: str, actor: str, data_dir: Path | None = None, at: datetime | None = None,
        group_id: int | None = None, dry_run: bool = False) -> RetentionReport:  # fmt: skip
    """Delete every expired session (of ``group_id``, or all groups), audited; see the module doc.

    ``data_dir``: ``Settings.data_dir`` (uploads under ``data_dir/uploads``); without it no file
    is touched. ``dry_run``: report what would go, change nothing."""
    at = at or now()
    uploads = Path(data_dir) / "uploads" if data_dir is not None else None
    report = RetentionReport()
    with session_scope(url) as s:
        todo = expired(s, at, group_id)
    for e in todo:
        with session_scope(url) as s:
            if s.get(Recording, e.session_id) is None:
                continue  # deleted meanwhile (another run, an administrator)
            running = s.scalar(select(Job.id).where(Job.session_id == e.session_id, Job.status == JobStatus.running))
            if running is not None:  # a queued job does not hold expiry up: it finds its session gone
                report.skipped.append(e.session_id)
                continue
            files = _files(e, s, uploads, data_dir)
            if dry_run:
                report.deleted.append(Deleted(e.session_id, {}, files))
                continue
            rows = delete_session_rows(s, e.session_id)
            from storage.repo import audit

            audit(s, actor, "retention_delete_session", f"session:{e.session_id}", target_label=e.title,
                  group_id=e.group_id,
                  title=e.title, created_at=e.created_at.isoformat(), retention_days=e.retention_days,
                  rows=rows, files=[str(f) for f in files])  # fmt: skip
        report.deleted.append(Deleted(e.session_id, rows, files))
        for f in files:  # after the commit: a failed commit must not leave rows without their video
            try:
                _remove(f)
                report.files_removed.append(str(f))
            except OSError as err:
                log.warning("retention: could not remove %s: %s", f, err)
                report.files_failed.append(f"{f}: {err.strerror or err}")
    if not dry_run:
        with session_scope(url) as s:
            from storage.repo import audit

            audit(s, actor, "retention_run", "retention", at=at.isoformat(), group_id=group_id,
                  sessions=[d.session_id for d in report.deleted], rows=report.rows,
                  files_removed=len(report.files_removed), files_failed=report.files_failed,
                  skipped_running=report.skipped)  # fmt: skip
    return report
