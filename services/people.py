"""Persons as both front ends correct them: roster, enrol, rename, merge, split, delete.

The rules (and the consent guard every one of these writes goes through) live in
``storage.people``; here the actor's permission and visibility are checked and the audit rows
name ``Actor.audit_name``. Results are plain values: nothing of a closed transaction leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select

from services.actor import Actor, GroupIds, require
from services.db import scope, visible_session
from storage import people
from storage.models import Group, Person, TimeBin, Track

PERSON_COLUMNS = ["id", "label", "enrolled", "group", "group_id", "sessions", "bins"]
TRACK_COLUMNS = ["id", "track_key", "person_id", "person", "enrolled", "t_start", "t_end", "samples", "match"]


@dataclass(frozen=True)
class PersonRef:
    id: int
    label: str


@dataclass(frozen=True)
class RosterLine:
    """One line of ``affectline persons list``."""

    id: int
    group: str
    label: str
    enrolled: bool
    origin_session_id: int | None
    n_tracks: int
    n_sessions: int
    n_embeddings: int


def visible_person(s, actor: Actor, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not actor.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def _group_id(s, actor: Actor, group: str) -> int:
    g = s.scalar(select(Group).where(Group.name == group))
    if g is None and group.isdigit():
        g = s.get(Group, int(group))
    if g is None or not actor.sees(g.id):
        names = ", ".join(s.scalars(select(Group.name).order_by(Group.name))) or "none yet"
        raise LookupError(f"group {group!r} does not exist; groups: {names}")
    return g.id


def roster(url: str, actor: Actor, group: str | None = None) -> list[RosterLine]:
    """Persons (all visible, or one group's by name or id), enrolled first, then by name."""
    require(actor, "view_sessions")
    with scope(url) as s:
        gid = _group_id(s, actor, group) if group is not None else None
        names = {g.id: g.name for g in s.scalars(select(Group))}
        return [RosterLine(p.id, names.get(p.group_id, "-"), p.label, p.enrolled, p.origin_session_id, p.n_tracks,
                           p.n_sessions, p.n_embeddings)
                for p in people.list_persons(s, gid) if actor.sees(p.group_id)]  # fmt: skip


def persons_frame(url: str, group_ids: GroupIds) -> pd.DataFrame:
    """Persons of visible groups: id, label, enrolled, group, group_id, sessions (seen in), bins."""
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
        return pd.DataFrame([dict(zip(PERSON_COLUMNS, r)) for r in s.execute(q)], columns=PERSON_COLUMNS)


def session_tracks(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """Tracks of a visible session: id, track_key, person_id, person, enrolled, t_start, t_end, samples, match."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        q = (
            select(Track.id, Track.track_key, Track.person_id, Person.label, Person.enrolled, Track.t_start, Track.t_end,
                   Track.n_samples, Track.match_score)  # fmt: skip
            .outerjoin(Person, Person.id == Track.person_id)
            .where(Track.session_id == session_id)
            .order_by(Track.t_start)
        )
        return pd.DataFrame([dict(zip(TRACK_COLUMNS, r)) for r in s.execute(q)], columns=TRACK_COLUMNS)


def person_label(url: str, actor: Actor, person_id: int) -> str:
    with scope(url) as s:
        return visible_person(s, actor, person_id).label


def enroll(url: str, actor: Actor, session_id: int, track_key: int, name: str) -> PersonRef:
    """Enrol the person of a visible session's track ``track_key`` under ``name`` (audited by storage.people)."""
    require(actor, "manage_people")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        p = people.enroll(s, session_id, track_key, name, actor.audit_name)
        return PersonRef(p.id, p.label)


def enroll_track(url: str, actor: Actor, session_id: int, track_id: int, name: str) -> PersonRef:
    """``enroll`` by the track's row id (what the dashboard's table holds)."""
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        track = s.get(Track, track_id)
        if track is None or track.session_id != session_id:
            raise LookupError(f"track {track_id} is not part of session {session_id}")
        key = track.track_key
    return enroll(url, actor, session_id, key, name)


def rename(url: str, actor: Actor, person_id: int, name: str) -> PersonRef:
    """Rename a visible person (an 'Unknown N' is enrolled by it)."""
    require(actor, "manage_people")
    with scope(url) as s:
        visible_person(s, actor, person_id)
        p = people.rename(s, person_id, name, actor.audit_name)
        return PersonRef(p.id, p.label)


def merge(url: str, actor: Actor, keep_id: int, other_id: int) -> PersonRef:
    """Make ``other`` part of ``keep``; both must be visible."""
    require(actor, "merge_people")
    with scope(url) as s:
        visible_person(s, actor, keep_id)
        visible_person(s, actor, other_id)
        p = people.merge(s, keep_id, other_id, actor.audit_name)
        return PersonRef(p.id, p.label)


def split(url: str, actor: Actor, session_id: int, track_key: int, name: str | None = None,
          t_start: float | None = None, t_end: float | None = None) -> PersonRef:  # fmt: skip
    """Give a visible session's track (or its part ``t_start``-``t_end``) to a new or named person."""
    require(actor, "manage_people")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        p = people.split(s, session_id, track_key, actor.audit_name, name=name, t_start=t_start, t_end=t_end)
        return PersonRef(p.id, p.label)


def delete(url: str, actor: Actor, person_id: int) -> dict[str, int]:
    """Delete a visible person with everything stored about them; rows deleted by table (audited by id only)."""
    require(actor, "delete_person")
    with scope(url) as s:
        visible_person(s, actor, person_id)
        return people.delete_person(s, person_id, actor.audit_name)
