"""Tag vocabularies per group: the behaviour labels a coder picks from, each with its keyboard key in the
review player and its kind (a *state* has a start and an end, pressed with the same key; a *point* is
an instantaneous behaviour), one of them the calm/none label.

A group that never edited its vocabulary uses its kind's default (``DEFAULTS``: behaviours for
therapy, classroom conduct for classes; never the 7 expressions, which are the model's output, not
what a coder watches for). The first edit stores the default and the change (``VocabularyLabel``
rows), so later changes to the defaults never move a group's keys under its coders. Editing needs
the ``tag`` permission on a visible group (clinicians on their caseloads, administrators anywhere)
and is audited with what was there before. Tags whose label is not (or no longer) in the
vocabulary keep their label and still display.

Used by the CLI (``affectline groups vocabulary``), the dashboard's review page and the therapy
exports (``vocabulary_for_group``).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, object_session

from services.actor import Actor, require
from services.db import scope
from storage import repo
from storage.labels import clean_label
from storage.models import Group, Recording, SessionKind, VocabularyLabel
from storage.tags import RESERVED_LABELS, TagError, add_label

# Keys the player keeps for itself: play/pause, frame and second steps, speed, undo.
RESERVED_KEYS = frozenset(" ,.<>[]-=+/?\\")
MAX_LABELS = 36  # one per letter and digit


class EventKind(str, enum.Enum):
    state = "state"  # the key starts the event, the same key ends it
    point = "point"  # one press: an instantaneous behaviour


@dataclass(frozen=True)
class VocabItem:
    label: str
    key: str
    kind: EventKind
    calm: bool = False  # the calm / none label: "nothing of note", a class of its own for personalisation

    def to_json(self) -> dict:
        return {**asdict(self), "kind": self.kind.value}


def _items(*rows: tuple[str, str, str, bool]) -> tuple[VocabItem, ...]:
    return tuple(VocabItem(label, key, EventKind(kind), calm) for label, key, kind, calm in rows)


DEFAULTS: dict[SessionKind, tuple[VocabItem, ...]] = {
    SessionKind.therapy: _items(
        ("calm", "c", "state", True),
        ("engaged", "e", "state", False),
        ("anxious", "a", "state", False),
        ("distressed", "d", "state", False),
        ("avoidance", "v", "state", False),
        ("stimming", "s", "state", False),
        ("vocal outburst", "o", "point", False),
        ("self-injury", "i", "point", False),
    ),
    SessionKind.classroom: _items(
        ("none", "n", "state", True),
        ("on task", "t", "state", False),
        ("off task", "f", "state", False),
        ("talking", "k", "state", False),
        ("hand raised", "h", "point", False),
    ),
}


# --- reading ------------------------------------------------------------------------------------


def items_of(s: Session, group_id: int | None, kind: SessionKind | str = SessionKind.therapy) -> tuple[VocabItem, ...]:
    """The vocabulary of ``group_id`` inside a transaction (None: a session in no group, by ``kind``)."""
    if group_id is not None:
        g = s.get(Group, group_id)
        if g is None:
            raise LookupError(f"group {group_id} does not exist")
        kind = g.kind
        rows = list(s.scalars(select(VocabularyLabel).where(VocabularyLabel.group_id == group_id)
                              .order_by(VocabularyLabel.position, VocabularyLabel.id)))  # fmt: skip
        if rows:
            return tuple(VocabItem(r.label, r.key, EventKind(r.kind), bool(r.calm)) for r in rows)
    return DEFAULTS[SessionKind(kind)]


def vocabulary_for_group(session_or_group: Recording | Group | int, url: str | None = None) -> tuple[VocabItem, ...]:
    """The tag vocabulary (label, key, kind, calm) of a recording's group or of a group.

    ``session_or_group``: a ``Recording`` or ``Group`` read in an open transaction (its own is used), or
    a session id with ``url`` (read in a transaction of its own). No rights are checked here: callers
    have already shown the session; front ends use ``group_vocabulary`` / ``session_vocabulary``."""
    if isinstance(session_or_group, (Recording, Group)):
        s = object_session(session_or_group)
        if s is None:
            raise ValueError("vocabulary_for_group needs a recording or group read in an open transaction")
        if isinstance(session_or_group, Group):
            return items_of(s, session_or_group.id)
        return items_of(s, session_or_group.group_id, session_or_group.kind)
    if url is None:
        raise ValueError("vocabulary_for_group(session id) needs the database url")
    with scope(url) as s:
        rec = s.get(Recording, int(session_or_group))
        if rec is None:
            raise LookupError(f"session {session_or_group} does not exist")
        return items_of(s, rec.group_id, rec.kind)


def _group(s: Session, actor: Actor, group: int | str) -> Group:
    g = s.get(Group, group) if isinstance(group, int) else s.scalar(select(Group).where(Group.name == group))
    if g is None and isinstance(group, str) and group.isdigit():
        g = s.get(Group, int(group))
    if g is None or not actor.sees(g.id):
        names = ", ".join(n for i, n in s.execute(select(Group.id, Group.name).order_by(Group.name)) if actor.sees(i))
        raise LookupError(f"group {group!r} does not exist or is not visible to you; groups: {names or 'none'}")
    return g


def group_vocabulary(url: str, actor: Actor, group: int | str) -> tuple[VocabItem, ...]:
    """A visible group's vocabulary (by id or name)."""
    require(actor, "view_sessions")
    with scope(url) as s:
        return items_of(s, _group(s, actor, group).id)


def session_vocabulary(url: str, actor: Actor, session_id: int) -> tuple[VocabItem, ...]:
    """The vocabulary of a visible session's group (the review page's labels and keys)."""
    from services.db import visible_session

    with scope(url) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        return items_of(s, rec.group_id, rec.kind)


def is_customised(url: str, actor: Actor, group: int | str) -> bool:
    with scope(url) as s:
        g = _group(s, actor, group)
        return s.scalar(select(func.count()).where(VocabularyLabel.group_id == g.id)) > 0


# --- editing ------------------------------------------------------------------------------------


def check_key(key: object) -> str:
    """A label's key as stored (one lower-case letter or digit), or ``ValueError`` saying why not."""
    if not isinstance(key, str) or len(key.strip()) != 1:
        raise ValueError(f"key {key!r} must be exactly one letter or digit")
    k = key.strip().lower()
    if k in RESERVED_KEYS or not k.isalnum() or not k.isascii():
        raise ValueError(f"key {key!r} is not free: use a letter or digit (space , . [ ] - = and arrows are the player's)")
    return k


def _check_label(label: object) -> str:
    try:
        text = clean_label(label, "label", max_len=100)
    except ValueError as e:
        raise ValueError(str(e)) from None
    if text.lower() in RESERVED_LABELS:
        raise ValueError(f"label {text!r} is reserved for the model's own output")
    return text


def _rows(s: Session, g: Group) -> list[VocabularyLabel]:
    """The group's stored rows; the kind's default is stored first if it has none (the first edit)."""
    rows = list(s.scalars(select(VocabularyLabel).where(VocabularyLabel.group_id == g.id)
                          .order_by(VocabularyLabel.position, VocabularyLabel.id)))  # fmt: skip
    if rows:
        return rows
    for i, it in enumerate(DEFAULTS[SessionKind(g.kind)]):
        s.add(VocabularyLabel(group_id=g.id, label=it.label, key=it.key, kind=it.kind.value, calm=it.calm, position=i))
    s.flush()
    return _rows(s, g)


def _as_items(rows: list[VocabularyLabel]) -> list[dict]:
    return [VocabItem(r.label, r.key, EventKind(r.kind), bool(r.calm)).to_json() for r in rows]


def set_label(url: str, actor: Actor, group: int | str, label: str, key: str | None = None,
              kind: EventKind | str | None = None, calm: bool | None = None) -> tuple[VocabItem, ...]:  # fmt: skip
    """Add ``label`` to a group's vocabulary or change its key, kind or calm mark (matched without case).

    A new label needs a key (kind defaults to state). ``calm=True`` makes it the calm/none label (the
    previous one loses the mark); the last calm label cannot be unmarked, only replaced. Audited with
    the vocabulary before and after. Returns the vocabulary now."""
    require(actor, "tag")
    text = _check_label(label)
    k = None if key is None else check_key(key)
    try:
        kd = None if kind is None else EventKind(kind)
    except ValueError:
        raise ValueError(f"kind {kind!r} must be 'state' (start and end) or 'point' (one instant)") from None
    with scope(url) as s:
        g = _group(s, actor, group)
        rows = _rows(s, g)
        before = _as_items(rows)
        row = next((r for r in rows if r.label.lower() == text.lower()), None)
        if row is None:
            if k is None:
                raise ValueError(f"new label {text!r} needs a key")
            if len(rows) >= MAX_LABELS:
                raise ValueError(f"group {g.name!r} already has {MAX_LABELS} labels, one per key")
            row = VocabularyLabel(group_id=g.id, label=text, key=k, kind=(kd or EventKind.state).value, calm=False,
                                  position=max(r.position for r in rows) + 1)  # fmt: skip
            s.add(row)
            rows.append(row)
        if k is not None:
            holder = next((r for r in rows if r.key == k and r is not row), None)
            if holder is not None:
                raise ValueError(f"key {k!r} is already {holder.label!r}'s in group {g.name!r}")
            row.key = k
        if kd is not None:
            row.kind = kd.value
        if calm is True:
            for r in rows:
                r.calm = r is row
        elif calm is False and row.calm:
            raise ValueError(f"{row.label!r} is the calm/none label of group {g.name!r}: mark another label calm instead")
        s.flush()
        add_label(s, row.label, actor.audit_name)  # the global tag label (storage.tags accepts only known labels)
        after = _as_items(rows)
        if after != before:
            repo.audit(s, actor.audit_name, "vocabulary_set", f"group:{g.id}", target_label=g.name, label=row.label,
                       before=before, after=after)  # fmt: skip
        return items_of(s, g.id)


def remove_label(url: str, actor: Actor, group: int | str, label: str) -> tuple[VocabItem, ...]:
    """Take ``label`` out of a group's vocabulary (tags already made with it keep it); audited.
    The calm/none label stays: mark another calm first."""
    require(actor, "tag")
    with scope(url) as s:
        g = _group(s, actor, group)
        rows = _rows(s, g)
        row = next((r for r in rows if r.label.lower() == str(label).strip().lower()), None)
        if row is None:
            raise LookupError(f"label {label!r} is not in group {g.name!r}'s vocabulary ({', '.join(r.label for r in rows)})")
        if row.calm:
            raise ValueError(f"{row.label!r} is the calm/none label of group {g.name!r}: mark another label calm first")
        before = _as_items(rows)
        s.delete(row)
        s.flush()
        rows = [r for r in rows if r is not row]
        repo.audit(s, actor.audit_name, "vocabulary_remove", f"group:{g.id}", target_label=g.name, label=row.label,
                   before=before, after=_as_items(rows))  # fmt: skip
        return items_of(s, g.id)


def reset_vocabulary(url: str, actor: Actor, group: int | str) -> tuple[VocabItem, ...]:
    """Back to the kind's default vocabulary (the stored rows removed); audited."""
    require(actor, "tag")
    with scope(url) as s:
        g = _group(s, actor, group)
        before = _as_items(list(s.scalars(select(VocabularyLabel).where(VocabularyLabel.group_id == g.id)
                                          .order_by(VocabularyLabel.position, VocabularyLabel.id))))  # fmt: skip
        s.execute(delete(VocabularyLabel).where(VocabularyLabel.group_id == g.id))
        if before:
            repo.audit(s, actor.audit_name, "vocabulary_reset", f"group:{g.id}", target_label=g.name, before=before,
                       after=[it.to_json() for it in DEFAULTS[SessionKind(g.kind)]])  # fmt: skip
        return items_of(s, g.id)


def ensure_tag_labels(s: Session, items: tuple[VocabItem, ...], actor: str) -> None:
    """Make every vocabulary label a known tag label (a default vocabulary is not stored until edited)."""
    for it in items:
        try:
            add_label(s, it.label, actor)
        except TagError:
            pass  # a reserved name cannot reach a vocabulary (``_check_label``); nothing to add
