"""The audit trail: who did what to which target, written once and never changed.

The database enforces what this module promises: migration 0003 installs triggers that
refuse UPDATE and DELETE on ``audit_log`` (SQLite and PostgreSQL), and ids are never
handed out again (AUTOINCREMENT on SQLite, sequences on PostgreSQL), so ``person:49`` in an
old row can never come to name someone else. No foreign key points from the log to what it
names: deleting a session or a person leaves their audit rows in place.

Each row keeps ``target_label``, the target's name when the row was written (a session's
title, a username, a group's name, a job's task and session), so a row still says what it
was about after the target is renamed or deleted. Rows added as bare ``AuditEntry`` objects
get it too: a ``before_flush`` hook fills it in.

Persons are the exception: a child's name is not copied into a table that can never be
changed, or deleting the person (or withdrawing consent) could never remove it. Their rows
carry the id (never reused); readers show the person's current name beside it while the
person exists (``current_names``), and filters by name find them by that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pandas as pd
from sqlalchemy import event, func, or_, select
from sqlalchemy.orm import Session

from storage.models import AuditEntry, Group, Job, Person, Recording, Tag, User

COLUMNS: tuple[str, ...] = ("id", "at", "actor", "action", "target", "target_label", "detail")
_TARGET = re.compile(r"^([a-z_]+):(.+)$")
_SNAPSHOT = {"session": (Recording, Recording.title), "user": (User, User.username), "group": (Group, Group.name)}
_NAMED = {**_SNAPSHOT, "person": (Person, Person.label)}  # current names, looked up when read


def write(s: Session, actor: str, action: str, target: str, *, target_label: str | None = None,
          **detail: Any) -> AuditEntry:  # fmt: skip
    """Add an audit row. ``target_label``: the target's name; by default looked up from ``target``."""
    entry = AuditEntry(actor=actor, action=action, target=target, detail=detail)
    entry.target_label = target_label if target_label is not None else label_of(s, target)
    s.add(entry)
    return entry


def label_of(s: Session, target: str) -> str:
    """The name to keep with a row about ``target`` (``"session:3"`` -> its title), or "" (none, or a person)."""
    m = _TARGET.match(target or "")
    if m is None:
        return ""
    kind, ref = m.groups()
    with s.no_autoflush:
        if kind in _SNAPSHOT and ref.isdigit():
            model, col = _SNAPSHOT[kind]
            return s.scalar(select(col).where(model.id == int(ref))) or ""
        if kind == "job" and ref.isdigit():
            job = s.get(Job, int(ref))
            if job is None:
                return ""
            title = s.scalar(select(Recording.title).where(Recording.id == job.session_id)) if job.session_id else None
            return f"{job.task}" + (f" of {title}" if title else "")
        if kind == "tag":
            row = s.scalar(select(Tag).where(Tag.uid.startswith(ref)).order_by(Tag.version.desc()).limit(1))
            if row is None:
                return ""
            return f"{row.label} on person {row.person_id}"
        if kind in ("tag_label", "login"):
            return ref
    return ""


@event.listens_for(Session, "before_flush")
def _fill_labels(s: Session, _ctx, _instances) -> None:
    for obj in list(s.new):
        if isinstance(obj, AuditEntry) and not obj.target_label:
            obj.target_label = label_of(s, obj.target)


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """Every field optional; text fields match case-insensitively anywhere in the value. ``target``
    matches the target id (``session:12``), its name at the time, or the current name of what it names."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: date | None = None  # inclusive, UTC days
    until: date | None = None  # inclusive
    limit: int = 1000


def _day(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def entries(s: Session, f: Filter = Filter()) -> list[AuditEntry]:
    """Matching rows, newest first."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(f.limit)
    if f.actor:
        q = q.where(func.lower(AuditEntry.actor).contains(f.actor.strip().lower()))
    if f.action:
        q = q.where(func.lower(AuditEntry.action).contains(f.action.strip().lower()))
    if f.target:
        text = f.target.strip().lower()
        now_named = [f"{kind}:{i}" for kind, (model, col) in _NAMED.items()
                     for i in s.scalars(select(model.id).where(func.lower(col).contains(text)))]  # fmt: skip
        conds = [func.lower(AuditEntry.target).contains(text), func.lower(AuditEntry.target_label).contains(text)]
        if now_named:
            conds.append(AuditEntry.target.in_(now_named))
        q = q.where(or_(*conds))
    if f.since:
        q = q.where(AuditEntry.at >= _day(f.since))
    if f.until:
        q = q.where(AuditEntry.at < _day(f.until + timedelta(days=1)))
    return list(s.scalars(q))


def current_names(s: Session, targets: set[str]) -> dict[str, str]:
    """``"person:49"`` -> that person's name now (``"(deleted)"`` once gone), for every named kind."""
    ids: dict[str, set[int]] = {}
    for t in targets:
        m = _TARGET.match(t or "")
        if m and m.group(1) in _NAMED and m.group(2).isdigit():
            ids.setdefault(m.group(1), set()).add(int(m.group(2)))
    out: dict[str, str] = {}
    for kind, wanted in ids.items():
        model, col = _NAMED[kind]
        found = dict(s.execute(select(model.id, col).where(model.id.in_(wanted))).all())
        out.update({f"{kind}:{i}": found.get(i, "(deleted)") for i in wanted})
    return out


def frame(s: Session, f: Filter = Filter()) -> pd.DataFrame:
    """Matching rows as a table (``COLUMNS``), newest first. ``target_label`` is the name kept
    with the row, or for a person their name now (``"(deleted)"`` once they are gone)."""
    found = entries(s, f)
    now = current_names(s, {e.target for e in found if not e.target_label and e.target.startswith("person:")})
    rows = [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target,
             "target_label": e.target_label or now.get(e.target, ""), "detail": e.detail} for e in found]  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS))


def export_rows(df: pd.DataFrame) -> pd.DataFrame:
    """An audit table ready for CSV: times in ISO 8601 UTC, detail as sorted JSON, text fields on one
    line each (``affectline.lines.one_line``); write it with ``affectline.csvsafe``: actors, targets and
    labels are typed by people."""
    import json

    def iso(t: Any) -> str:
        if t is None or (isinstance(t, float) and pd.isna(t)):
            return ""
        t = pd.Timestamp(t)
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).isoformat()

    from affectline.lines import one_line

    # Text fields escaped as in ``audit list`` (a quoted CSV cell may hold a newline, but grep and
    # line-based log tools would read it as a row); detail is JSON, which escapes them itself.
    text = {c: df[c].map(one_line) for c in ("actor", "action", "target", "target_label")}
    return df.assign(at=df["at"].map(iso), detail=df["detail"].map(lambda d: json.dumps(d, sort_keys=True, default=str)),
                     **text)  # fmt: skip
