"""Clinician tags as both front ends write them: add, edit, delete, import, export, the vocabulary.

The rules (versions, validation, the consent guard) live in ``storage.tags``; the audit rows are
written here, once, under ``Actor.audit_name``, and a tag's author is ``Actor.tag_author``. Tags
leave as ``TagView`` values, never as rows of a closed transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

import pandas as pd
from sqlalchemy import select

from services.actor import Actor, require
from services.db import scope, visible_session
from services.people import visible_person
from storage import repo
from storage import tags as tag_rows
from storage.models import Tag

BUILTIN_LABELS = tag_rows.BUILTIN_LABELS
TagError = tag_rows.TagError
ImportResult = tag_rows.ImportResult
TAG_COLUMNS = ["uid", "person_id", "t_start", "t_end", "label", "note", "is_baseline", "author", "created_at"]


@dataclass(frozen=True)
class TagView:
    uid: str
    version: int
    session_id: int
    person_id: int
    t_start: float
    t_end: float
    label: str
    note: str
    is_baseline: bool
    deleted: bool
    author: str
    created_at: datetime | None


def _view(t: Tag) -> TagView:
    return TagView(t.uid, t.version, t.session_id, t.person_id, t.t_start, t.t_end, t.label, t.note or "",
                   bool(t.is_baseline), bool(t.deleted), t.author, t.created_at)  # fmt: skip


def _person_id(s, actor: Actor, person: int | str) -> int:
    pid = tag_rows.resolve_person(s, person).id
    visible_person(s, actor, pid)
    return pid


def _current(s, uid: str, session_id: int | None) -> None:
    if session_id is not None and not any(t.uid == uid for t in tag_rows.latest_tags(s, session_id=session_id)):
        raise LookupError(f"tag {uid} is not a current tag of session {session_id}")


def add(url: str, actor: Actor, session_id: int, person: int | str, t_start: float, t_end: float, label: str,
        note: str = "", is_baseline: bool = False) -> TagView:  # fmt: skip
    """Tag a time range of a visible person (id or label) in a visible session; audited ``add_tag``."""
    require(actor, "tag")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        pid = _person_id(s, actor, person)
        t = tag_rows.add_tag(s, session_id=session_id, person_id=pid, t_start=t_start, t_end=t_end, label=label,
                             note=note, author=actor.tag_author, is_baseline=is_baseline)  # fmt: skip
        repo.audit(s, actor.audit_name, "add_tag", f"tag:{t.uid}", session_id=session_id, person_id=pid,
                   label=t.label, t_start=t.t_start, t_end=t.t_end, baseline=bool(is_baseline))  # fmt: skip
        return _view(t)


def edit(url: str, actor: Actor, uid: str, session_id: int | None = None, **changes) -> TagView:
    """A tag's next version (t_start, t_end, label, note, is_baseline); with ``session_id`` it must be a
    current tag of that session. Audited ``edit_tag`` with what changed."""
    require(actor, "tag")
    with scope(url) as s:
        if session_id is not None:
            visible_session(s, actor.group_ids, session_id)
        _current(s, uid, session_id)
        t = tag_rows.edit_tag(s, uid, actor.tag_author, **changes)
        visible_session(s, actor.group_ids, t.session_id)
        repo.audit(s, actor.audit_name, "edit_tag", f"tag:{t.uid}", version=t.version, session_id=t.session_id,
                   person_id=t.person_id, **{k: v for k, v in changes.items() if v is not None})  # fmt: skip
        return _view(t)


def delete(url: str, actor: Actor, uid: str, reason: str = "", session_id: int | None = None) -> TagView:
    """Soft-delete a tag (a deleted version; history kept); audited ``delete_tag`` by storage.tags."""
    require(actor, "tag")
    with scope(url) as s:
        if session_id is not None:
            visible_session(s, actor.group_ids, session_id)
        _current(s, uid, session_id)
        return _view(tag_rows.delete_tag(s, uid, actor.tag_author, reason, audit_actor=actor.audit_name))


def current(url: str, actor: Actor, session_id: int | None = None, person: int | str | None = None,
            include_deleted: bool = False) -> list[TagView]:  # fmt: skip
    """The newest version of each tag (of a visible session and/or person), by session and time."""
    with scope(url) as s:
        if session_id is not None:
            visible_session(s, actor.group_ids, session_id)
        pid = _person_id(s, actor, person) if person is not None else None
        rows = tag_rows.latest_tags(s, person_id=pid, session_id=session_id, include_deleted=include_deleted)
        return [_view(t) for t in rows if actor.sees(_group_of(s, t))]


def _group_of(s, t: Tag) -> int | None:
    from storage.models import Recording

    rec = s.get(Recording, t.session_id)
    return rec.group_id if rec is not None else None


def history(url: str, actor: Actor, uid: str) -> list[TagView]:
    """Every version of one tag (uid or unique prefix), oldest first."""
    with scope(url) as s:
        full = s.scalars(select(Tag.uid).where(Tag.uid.startswith(uid)).distinct()).all()
        if len(full) != 1:
            raise LookupError(f"tag id {uid!r} matches {len(full)} tags")
        rows = tag_rows.tag_history(s, full[0])
        visible_session(s, actor.group_ids, rows[0].session_id)
        return [_view(t) for t in rows]


def frame(url: str, actor: Actor, session_id: int, person_id: int | None = None) -> pd.DataFrame:
    """Current tags of a visible session as a table (``TAG_COLUMNS``)."""
    rows = current(url, actor, session_id, person_id)
    return pd.DataFrame([{c: getattr(t, c) for c in TAG_COLUMNS} for t in rows], columns=TAG_COLUMNS)


def vocabulary(url: str) -> list[str]:
    """Labels a clinician can pick: the 7 expressions plus the clinic's own."""
    with scope(url) as s:
        return tag_rows.vocabulary(s)


def add_label(url: str, actor: Actor, name: str) -> str:
    """Add a clinic label to the vocabulary (audited by storage.tags); returns its name."""
    require(actor, "tag")
    with scope(url) as s:
        return tag_rows.add_label(s, name, actor.audit_name).name


def import_csv(url: str, actor: Actor, source: str | Path | TextIO) -> ImportResult:
    """Import tags from CSV (``storage.tags.import_csv``): one bad row stores nothing; audited."""
    require(actor, "tag")
    with scope(url) as s:
        return tag_rows.import_csv(s, source, actor.tag_author, audit_actor=actor.audit_name)


def export_csv(url: str, actor: Actor, dest: TextIO, person: int | str | None = None, session_id: int | None = None,
               include_deleted: bool = False) -> int:  # fmt: skip
    """Write the latest version of each tag as spreadsheet-safe CSV; audited. Returns the row count."""
    require(actor, "export")
    with scope(url) as s:
        if session_id is not None:
            visible_session(s, actor.group_ids, session_id)
        pid = _person_id(s, actor, person) if person is not None else None
        return tag_rows.export_csv(s, dest, actor.audit_name, person_id=pid, session_id=session_id,
                                   include_deleted=include_deleted)  # fmt: skip
