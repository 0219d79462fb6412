"""Clinician tags: labelled time ranges of a person in a session, versioned, never lost.

A tag names a session, a person and a time range, never a track or a bin, so
re-analysing the session (which replaces tracks, bins and features) leaves it intact.
Every change adds a row with the same ``uid`` and the next ``version``; deletion is a
new version with ``deleted`` set, recorded in the audit log. The vocabulary is the 7
FER2013 expressions plus the clinic's own labels.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from affectline.csvsafe import header_row, restore, writer_row
from affectline.types import EXPRESSION_CLASSES
from storage import consent
from storage.labels import clean_label
from storage.models import Person, Recording, Tag, TagLabel

BUILTIN_LABELS: tuple[str, ...] = EXPRESSION_CLASSES
RESERVED_LABELS = frozenset({"uncertain"})  # the model's own "no guess" output, never a tag
CSV_COLUMNS: tuple[str, ...] = (
    "uid", "version", "session_id", "person_id", "t_start", "t_end", "label", "note", "is_baseline", "author",
    "created_at",
)  # fmt: skip
_EDITABLE = ("session_id", "person_id", "t_start", "t_end", "label", "note", "is_baseline")


class TagError(ValueError):
    """A tag, label or CSV row that cannot be stored as given."""


def _audit(s: Session, actor: str, action: str, target: str, **detail) -> None:
    from storage.audit import write  # with the target's name as it is now

    write(s, actor, action, target, **detail)


# --- vocabulary ----------------------------------------------------------------------------


def ensure_vocabulary(s: Session) -> None:
    """Insert the built-in expression labels if missing (idempotent)."""
    have = set(s.scalars(select(TagLabel.name)))
    for name in BUILTIN_LABELS:
        if name not in have:
            s.add(TagLabel(name=name, builtin=True))
    s.flush()


def vocabulary(s: Session) -> list[str]:
    """Built-in labels first (FER2013 order), then the clinic's, alphabetically."""
    ensure_vocabulary(s)
    rows = list(s.execute(select(TagLabel.name, TagLabel.builtin)))
    custom = sorted(n for n, b in rows if not b)
    return [n for n in BUILTIN_LABELS] + custom


def add_label(s: Session, name: str, actor: str) -> TagLabel:
    """Add a clinic label to the vocabulary; returns the existing one if already there."""
    try:
        name = clean_label(name, "tag label", max_len=100)
    except ValueError as e:
        raise TagError(str(e)) from None
    if name.lower() in RESERVED_LABELS:
        raise TagError(f"label {name!r} is reserved for the model's own output")
    ensure_vocabulary(s)
    existing = _find_label(s, name)
    if existing is not None:
        return existing
    row = TagLabel(name=name, builtin=False)
    s.add(row)
    _audit(s, actor, "add_tag_label", f"tag_label:{name}")
    s.flush()
    return row


def _find_label(s: Session, name: str) -> TagLabel | None:
    return s.scalar(select(TagLabel).where(func.lower(TagLabel.name) == name.strip().lower()))


def _canonical_label(s: Session, name: str) -> str:
    ensure_vocabulary(s)
    row = _find_label(s, str(name))
    if row is None:
        raise TagError(
            f"label {name!r} is not in the vocabulary {vocabulary(s)}; add it with `affectline tags vocab add`"
        )
    return row.name


# --- persons -------------------------------------------------------------------------------


def resolve_person(s: Session, ref: str | int) -> Person:
    """A person by id (digits) or exact label; one clear error otherwise."""
    text = str(ref).strip()
    if text.isdigit():
        p = s.get(Person, int(text))
        if p is None:
            raise LookupError(f"person {text} does not exist")
        return p
    found = list(s.scalars(select(Person).where(Person.label == text)))
    if not found:
        raise LookupError(f"no person is labelled {text!r}")
    if len(found) > 1:
        raise LookupError(f"{len(found)} persons are labelled {text!r} (ids {[p.id for p in found]}); give the id")
    return found[0]


# --- tags ----------------------------------------------------------------------------------


def _validate(s: Session, session_id: int, person_id: int, t_start: float, t_end: float) -> None:
    rec = s.get(Recording, session_id)
    if rec is None:
        raise TagError(f"session {session_id} does not exist")
    if s.get(Person, person_id) is None:
        raise TagError(f"person {person_id} does not exist")
    if not (0 <= t_start < t_end):
        raise TagError(f"tag time range [{t_start}, {t_end}) must have 0 <= start < end")
    if rec.duration and t_start >= rec.duration:
        raise TagError(f"tag starts at {t_start} s, after the end of session {session_id} ({rec.duration:.1f} s)")
    try:  # a tag is a per-person row: added, edited or imported, only for whom the consent rules allow
        consent.guard(s, f"a tag of person {person_id}", [person_id])
    except consent.ConsentMissing as e:
        raise TagError(str(e)) from None


def add_tag(
    s: Session,
    *,
    session_id: int,
    person_id: int,
    t_start: float,
    t_end: float,
    label: str,
    author: str,
    note: str = "",
    is_baseline: bool = False,
    uid: str | None = None,
) -> Tag:
    """Store a new tag (version 1). ``uid`` may be given to keep a tag's identity across databases."""
    t_start, t_end = float(t_start), float(t_end)
    _validate(s, int(session_id), int(person_id), t_start, t_end)
    if not author:
        raise TagError("a tag needs an author")
    tag = Tag(
        uid=uid or str(uuid.uuid4()), version=1, session_id=int(session_id), person_id=int(person_id),
        t_start=t_start, t_end=t_end, label=_canonical_label(s, label), note=note or "",
        is_baseline=bool(is_baseline), deleted=False, author=author,
    )  # fmt: skip
    s.add(tag)
    s.flush()
    return tag


def latest_tags(
    s: Session, *, person_id: int | None = None, session_id: int | None = None, include_deleted: bool = False
) -> list[Tag]:
    """The newest version of each tag, ordered by session then time; deleted ones left out by default."""
    newest = select(Tag.uid, func.max(Tag.version).label("v")).group_by(Tag.uid).subquery()
    q = select(Tag).join(newest, (Tag.uid == newest.c.uid) & (Tag.version == newest.c.v))
    if person_id is not None:
        q = q.where(Tag.person_id == person_id)
    if session_id is not None:
        q = q.where(Tag.session_id == session_id)
    if not include_deleted:
        q = q.where(Tag.deleted.is_(False))
    return list(s.scalars(q.order_by(Tag.session_id, Tag.t_start, Tag.id)))


def tag_history(s: Session, uid: str) -> list[Tag]:
    """Every version of one tag, oldest first."""
    rows = list(s.scalars(select(Tag).where(Tag.uid == uid).order_by(Tag.version)))
    if not rows:
        raise LookupError(f"tag {uid} does not exist")
    return rows


def _latest(s: Session, uid: str) -> Tag:
    rows = list(s.scalars(select(Tag).where(Tag.uid.startswith(uid)).order_by(Tag.uid, Tag.version.desc())))
    uids = {r.uid for r in rows}
    if not rows:
        raise LookupError(f"tag {uid} does not exist")
    if len(uids) > 1:
        raise LookupError(f"tag id prefix {uid!r} matches {len(uids)} tags; give more characters")
    return rows[0]


def _new_version(s: Session, prev: Tag, author: str, *, deleted: bool = False, **changes) -> Tag:
    fields = {k: getattr(prev, k) for k in _EDITABLE}
    fields.update({k: v for k, v in changes.items() if v is not None})
    row = Tag(uid=prev.uid, version=prev.version + 1, deleted=deleted, author=author, **fields)
    s.add(row)
    s.flush()
    return row


def edit_tag(
    s: Session,
    uid: str,
    author: str,
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    label: str | None = None,
    note: str | None = None,
    is_baseline: bool | None = None,
) -> Tag:
    """Change a tag by adding its next version (``uid`` may be a unique prefix)."""
    prev = _latest(s, uid)
    if prev.deleted:
        raise TagError(f"tag {prev.uid} is deleted")
    ts = prev.t_start if t_start is None else float(t_start)
    te = prev.t_end if t_end is None else float(t_end)
    _validate(s, prev.session_id, prev.person_id, ts, te)
    return _new_version(
        s, prev, author, t_start=ts, t_end=te, label=None if label is None else _canonical_label(s, label),
        note=note, is_baseline=is_baseline,
    )  # fmt: skip


def delete_tag(s: Session, uid: str, actor: str, reason: str = "", *, audit_actor: str | None = None) -> Tag:
    """Soft-delete: a new version marked deleted, and an audit entry. Earlier versions stay.
    ``audit_actor``: who the audit row names, when not the version's author (the CLI's OS user)."""
    prev = _latest(s, uid)
    if prev.deleted:
        return prev
    row = _new_version(s, prev, actor, deleted=True)
    _audit(s, audit_actor or actor, "delete_tag", f"tag:{prev.uid}", version=row.version, reason=reason,
           session_id=prev.session_id, person_id=prev.person_id, label=prev.label)  # fmt: skip
    return row


# --- CSV -----------------------------------------------------------------------------------


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


def _parse_bool(v: str | None) -> bool:
    text = (v or "").strip().lower()
    if text in ("", "0", "false", "no", "n"):
        return False
    if text in ("1", "true", "yes", "y"):
        return True
    raise ValueError(f"{v!r} is not a yes/no value")


def import_csv(s: Session, source: str | Path | TextIO, author: str, *, audit_actor: str | None = None) -> ImportResult:
    """Import tags from CSV (header required; ``CSV_COLUMNS`` as written by ``export_csv``).

    Required: session_id, person_id (or person: id or label), t_start, t_end, label.
    A row whose uid exists becomes that tag's next version if anything changed, so an
    exported file can be edited and imported back. A bad row raises ``TagError`` naming
    its line; inside ``session_scope`` no row of the file is then stored.
    """
    name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "CSV")
    if isinstance(source, (str, Path)):
        with open(source, newline="", encoding="utf-8") as f:
            return _import_rows(s, list(csv.DictReader(f)), name, author, audit_actor or author)
    return _import_rows(s, list(csv.DictReader(source)), name, author, audit_actor or author)


def _import_rows(s: Session, rows: Iterable[dict], name: str, author: str, audit_actor: str) -> ImportResult:
    res = ImportResult()
    # Raising aborts the caller's transaction (session_scope), so one bad row stores nothing.
    for line, row in enumerate(rows, start=2):
        # restore: a file written by export_csv has formula-like text quoted ('=...); read it back as typed
        row = {(k or "").strip(): restore((v or "").strip()) for k, v in row.items()}
        try:
            if row.get("person_id"):
                pid = int(row["person_id"])
            elif row.get("person"):
                pid = resolve_person(s, row["person"]).id
            else:
                raise TagError("person_id (or person) is missing")
            fields = dict(
                session_id=int(row["session_id"]), person_id=pid, t_start=float(row["t_start"]),
                t_end=float(row["t_end"]), label=row["label"], note=row.get("note", ""),
                is_baseline=_parse_bool(row.get("is_baseline")),
            )  # fmt: skip
            uid = row.get("uid") or None
            prev = s.scalar(select(Tag).where(Tag.uid == uid).order_by(Tag.version.desc()).limit(1)) if uid else None
            if prev is None:
                add_tag(s, author=row.get("author") or author, uid=uid, **fields)
                res.added += 1
                continue
            fields["label"] = _canonical_label(s, fields["label"])
            if not prev.deleted and all(getattr(prev, k) == v for k, v in fields.items()):
                res.unchanged += 1
                continue
            if (prev.session_id, prev.person_id) != (fields["session_id"], fields["person_id"]):
                raise TagError(f"tag {uid} belongs to session {prev.session_id} person {prev.person_id}")
            _validate(s, prev.session_id, prev.person_id, fields["t_start"], fields["t_end"])
            _new_version(s, prev, author, **fields)
            res.updated += 1
        except KeyError as e:
            raise TagError(f"{name} line {line}: column {e.args[0]!r} is missing") from None
        except (ValueError, LookupError) as e:
            raise TagError(f"{name} line {line}: {e}") from None
    _audit(s, audit_actor, "import_tags", name, added=res.added, updated=res.updated, unchanged=res.unchanged)
    return res


def export_csv(
    s: Session,
    dest: TextIO,
    actor: str,
    *,
    person_id: int | None = None,
    session_id: int | None = None,
    include_deleted: bool = False,
) -> int:
    """Write the latest version of each tag as CSV (``CSV_COLUMNS``); audited. Returns the row count."""
    tags = latest_tags(s, person_id=person_id, session_id=session_id, include_deleted=include_deleted)
    cols = CSV_COLUMNS + (("deleted",) if include_deleted else ())
    dest.write(header_row(cols) + "\r\n")
    for t in tags:
        vals = {c: getattr(t, c) for c in cols}
        vals["is_baseline"] = int(t.is_baseline)
        vals["created_at"] = t.created_at.isoformat() if t.created_at else ""
        if include_deleted:
            vals["deleted"] = int(t.deleted)
        dest.write(writer_row([vals[c] for c in cols], float_format=None) + "\r\n")  # text cells neutralised (affectline.csvsafe)
    _audit(s, actor, "export_tags", f"person:{person_id}" if person_id else f"session:{session_id}" if session_id else "all",
           rows=len(tags))  # fmt: skip
    return len(tags)


def restore_version(s: Session, uid: str, version: int, author: str) -> Tag:
    """Bring back what version ``version`` of a tag said (range, label, note, baseline, deleted or not) as
    its next version: how an edit or a deletion is undone. Earlier versions stay."""
    rows = tag_history(s, uid)
    old = next((r for r in rows if r.version == int(version)), None)
    if old is None:
        raise LookupError(f"tag {uid} has no version {version}")
    changes = {k: getattr(old, k) for k in _EDITABLE}
    row = _new_version(s, rows[-1], author, deleted=bool(old.deleted), **changes)
    _audit(s, author, "restore_tag", f"tag:{uid}", version=row.version, restored=int(version),
           session_id=row.session_id, person_id=row.person_id, label=row.label, deleted=bool(old.deleted))  # fmt: skip
    return row
