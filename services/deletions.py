"""What a deletion would remove, counted before anyone confirms it (the dashboard's second step).

Each function reads only: it checks the actor may delete and may see the target, and returns an
``Impact`` whose sentence names the target and the counts ("Delete session 'Lesson 3' (#4): 1,200
time bins, 30 tracks, 4 tags, 1 job and its video files. This cannot be undone."). The deletion itself
stays where it was (``storage.repo.delete_session``, ``storage.people.delete_person``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from services.actor import Actor, require
from services.db import scope, visible_session
from storage.models import (
    ConsentPurpose,
    FeatureSeries,
    Job,
    Person,
    PersonEmbedding,
    PersonModel,
    Tag,
    TimeBin,
    Track,
)

WORDS = {"time_bins": "time bin", "tracks": "track", "tags": "tag", "jobs": "job", "persons": "unnamed person",
         "person_embeddings": "face embedding", "feature_series": "feature series", "person_models": "personal model",
         "sessions": "session", "thumbnails": "thumbnail", "rows": "stored row"}  # fmt: skip


def _plural(word: str, n: int) -> str:
    if n == 1 or word.endswith("series"):
        return word
    return word + "s"


def counted(counts: dict[str, int]) -> str:
    """``{"time_bins": 1200, "tags": 0}`` -> "1,200 time bins" (zeros left out; "nothing stored" if all are)."""
    parts = [f"{n:,} {_plural(WORDS.get(k, k.replace('_', ' ')), n)}" for k, n in counts.items() if n]
    return ", ".join(parts) or "nothing stored"


@dataclass(frozen=True)
class Impact:
    what: str  # "session 'Lesson 3' (#4)"
    counts: dict[str, int]
    extra: str = ""  # files, and anything else the counts do not say

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def sentence(self) -> str:
        extra = f"; {self.extra}" if self.extra else ""
        return f"This deletes {self.what}: {counted(self.counts)}{extra}. It cannot be undone."


def _count(s, model, *where) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def session_impact(url: str, actor: Actor, session_id: int) -> Impact:
    require(actor, "delete_session")
    with scope(url) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        counts = {
            "time_bins": _count(s, TimeBin, TimeBin.session_id == session_id),
            "tracks": _count(s, Track, Track.session_id == session_id),
            "tags": _count(s, Tag, Tag.session_id == session_id, Tag.deleted.is_(False)),
            "persons": _count(s, Person, Person.origin_session_id == session_id, Person.enrolled.is_(False)),
            "jobs": _count(s, Job, Job.session_id == session_id),
        }
        return Impact(f"session {rec.title!r} (#{session_id})", counts, "its uploaded video and review copy")


def person_impact(url: str, actor: Actor, person_id: int) -> Impact:
    require(actor, "delete_person")
    with scope(url) as s:
        p = s.get(Person, person_id)
        if p is None or not actor.sees(p.group_id):
            raise LookupError(f"person {person_id} does not exist or is not visible to you")
        where = lambda m: m.person_id == person_id  # noqa: E731
        counts = {"sessions": int(s.scalar(select(func.count(func.distinct(Track.session_id))).where(where(Track))) or 0)}
        for m in (TimeBin, Track, Tag, PersonEmbedding, FeatureSeries, PersonModel):
            counts[m.__tablename__] = _count(s, m, where(m))
        return Impact(f"{p.label} (person #{person_id}) with their name", counts)


def withdrawal_impact(url: str, actor: Actor, person_id: int, purpose: ConsentPurpose | str) -> Impact:
    """What withdrawing consent deletes (``storage.consent.withdraw``): per-person rows, or the thumbnails."""
    require(actor, "manage_privacy")
    with scope(url) as s:
        p = s.get(Person, person_id)
        if p is None or not actor.sees(p.group_id):
            raise LookupError(f"person {person_id} does not exist or is not visible to you")
        if ConsentPurpose(purpose) is ConsentPurpose.thumbnails:
            counts = {"thumbnails": _count(s, Track, Track.person_id == person_id, Track.thumbnail.is_not(None))}
            return Impact(f"the face thumbnails of {p.label} (person #{person_id})", counts)
        counts = {m.__tablename__: _count(s, m, m.person_id == person_id)
                  for m in (TimeBin, Track, Tag, PersonEmbedding, FeatureSeries, PersonModel)}  # fmt: skip
        return Impact(f"what is stored about {p.label} (person #{person_id}); the name and the 'no' stay", counts,
                      "their bins stay counted, without a name, in the class curve")  # fmt: skip


def tag_impact(url: str, actor: Actor, session_id: int, uid: str) -> Impact:
    from services.summaries import format_clock as clock

    require(actor, "tag")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        t = s.scalar(select(Tag).where(Tag.uid == uid, Tag.session_id == session_id).order_by(Tag.version.desc()).limit(1))
        if t is None or t.deleted:
            raise LookupError(f"tag {uid[:8]} of session {session_id} does not exist")
        who = s.scalar(select(Person.label).where(Person.id == t.person_id)) or f"person {t.person_id}"
        return Impact(f"the tag {t.label!r} on {who}, {clock(t.t_start)}-{clock(t.t_end)}", {"tags": 1},
                      "its earlier versions stay in the history")  # fmt: skip


def retention_impact(url: str, actor: Actor, data_dir: Path | None, at: datetime | None = None) -> Impact:
    """The expired sessions a retention run would delete now (its dry run), by title."""
    from services.privacy import run_retention

    rep = run_retention(url, actor, data_dir, dry_run=True, at=at)
    ids = [d.session_id for d in rep.deleted]
    titles = ""
    if ids:
        from storage.models import Recording

        with scope(url) as s:
            names = dict(s.execute(select(Recording.id, Recording.title).where(Recording.id.in_(ids))).all())
        shown = ", ".join(f"{names.get(i, '?')!r} (#{i})" for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        titles = f"expired: {shown}"
    files = sum(len(d.files) for d in rep.deleted)
    extra = ", ".join(x for x in (titles, f"{files} uploaded file(s)" if files else "") if x)
    return Impact("every expired session with its timelines, tags and jobs", {"sessions": len(ids)}, extra)
