"""Tagging while watching: the review player's coded actions stored as clinician tags, exactly once.

The player (``dashboard.review_player``) sends every coded action it has not seen acknowledged, each
with an event id of its own: add a tag (a state event's start and end, or a point event), change
one, delete one, undo an earlier action. Streamlit may deliver the same value again on a rerun, so
each event is applied once (``TagEvent``: a second delivery gets the first answer; two at once meet
the primary key and one of them is rolled back whole). A range equal to an existing current tag's
of the same child is refused with a message, from the player and from the typed form alike.

Tags themselves are ``storage.tags``' (versioned, soft-deleted, audited); an undo of an add deletes
the tag, an undo of a change or deletion restores the version before it.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.actor import Actor, require
from services.db import scope, visible_session
from services.summaries import format_clock, parse_clock
from services.vocabulary import EventKind, VocabItem, ensure_tag_labels, items_of
from storage import repo, tags
from storage.models import Person, TagEvent

SAME_RANGE_S = 1e-3  # ranges closer than this at both ends are "the same range"
OPS = ("add", "edit", "delete", "undo")
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{6,64}$")


@dataclass(frozen=True)
class TagMessage:
    """One coded action from the player."""

    id: str
    op: str
    t_start: float | None = None
    t_end: float | None = None
    label: str | None = None
    uid: str | None = None  # the tag an edit or delete names
    target: str | None = None  # the event an undo undoes


@dataclass(frozen=True)
class Applied:
    """What became of one event: stored (with the tag's uid), or refused with a message."""

    id: str
    ok: bool
    message: str
    uid: str | None = None

    def to_json(self) -> dict:
        return {"ok": self.ok, "message": self.message, "uid": self.uid}


def _time(v, what: str) -> float:
    try:
        t = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {v!r} is not a time in seconds") from None
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"{what} {v!r} is not a time in seconds")
    return t


def parse_message(raw: object) -> TagMessage:
    """A player message as a ``TagMessage``, or ``ValueError`` naming what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError(f"a tagging message must be an object, not {type(raw).__name__}")
    eid = raw.get("id")
    if not isinstance(eid, str) or not _EVENT_ID.match(eid):
        raise ValueError(f"tagging message id {eid!r} is not an event id")
    op = raw.get("op")
    if op not in OPS:
        raise ValueError(f"tagging message {eid}: op {op!r} is not one of {', '.join(OPS)}")
    ts = None if raw.get("t_start") is None else _time(raw["t_start"], "start")
    te = None if raw.get("t_end") is None else _time(raw["t_end"], "end")
    label = raw.get("label")
    if op == "add" and (ts is None or te is None or not isinstance(label, str)):
        raise ValueError(f"tagging message {eid}: an added tag needs start, end and label")
    if op in ("edit", "delete") and not isinstance(raw.get("uid"), str):
        raise ValueError(f"tagging message {eid}: {op} needs the tag's uid")
    if op == "undo" and not isinstance(raw.get("target"), str):
        raise ValueError(f"tagging message {eid}: undo needs the event it undoes")
    return TagMessage(eid, op, ts, te, label if isinstance(label, str) else None,
                      raw.get("uid") if isinstance(raw.get("uid"), str) else None,
                      raw.get("target") if isinstance(raw.get("target"), str) else None)  # fmt: skip


def _span(a: float, b: float) -> str:
    """mm:ss-mm:ss with whole seconds cut, not rounded: as the player's timeline and hover text show them."""
    return f"{format_clock(math.floor(a))}-{format_clock(math.floor(b))}"


def check_new_range(s: Session, session_id: int, person_id: int, t_start: float, t_end: float,
                    exclude_uid: str | None = None) -> None:  # fmt: skip
    """``ValueError`` when a current tag of this child in this session has this very range."""
    for t in tags.latest_tags(s, session_id=session_id, person_id=person_id):
        if t.uid != exclude_uid and abs(t.t_start - t_start) < SAME_RANGE_S and abs(t.t_end - t_end) < SAME_RANGE_S:
            raise ValueError(f"{_span(t_start, t_end)} is already tagged {t.label!r} (same start and end): "
                             "pick the range again, or change that tag")  # fmt: skip


def _person(s: Session, actor: Actor, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not actor.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def _current(s: Session, session_id: int, person_id: int, uid: str):
    t = next((t for t in tags.latest_tags(s, session_id=session_id, person_id=person_id) if t.uid == uid), None)
    if t is None:
        raise LookupError(f"tag {uid} is not a current tag of this child in session {session_id}")
    return t


def _add(s, actor, session_id, person_id, t_start, t_end, label, note="", is_baseline=False):
    if not t_end > t_start:
        raise ValueError(f"the tag ends ({format_clock(t_end)}) before it starts ({format_clock(t_start)})")
    check_new_range(s, session_id, person_id, t_start, t_end)
    tag = tags.add_tag(s, session_id=session_id, person_id=person_id, t_start=t_start, t_end=t_end, label=label,
                       note=note, author=actor.username, is_baseline=is_baseline)  # fmt: skip
    repo.audit(s, actor.audit_name, "add_tag", f"tag:{tag.uid}", session_id=session_id, person_id=person_id,
               label=tag.label, t_start=tag.t_start, t_end=tag.t_end, baseline=bool(is_baseline))  # fmt: skip
    return tag


def _edit(s, actor, session_id, person_id, uid, **changes):
    prev = _current(s, session_id, person_id, uid)
    ts = prev.t_start if changes.get("t_start") is None else changes["t_start"]
    te = prev.t_end if changes.get("t_end") is None else changes["t_end"]
    if not te > ts:
        raise ValueError(f"the tag ends ({format_clock(te)}) before it starts ({format_clock(ts)})")
    check_new_range(s, session_id, person_id, ts, te, exclude_uid=uid)
    row = tags.edit_tag(s, uid, actor.username, **changes)
    repo.audit(s, actor.audit_name, "edit_tag", f"tag:{uid}", session_id=session_id,
               **{k: v for k, v in changes.items() if v is not None})  # fmt: skip
    return prev.version, row


def _prepare(s: Session, actor: Actor, session_id: int, person_id: int) -> tuple[VocabItem, ...]:
    rec = visible_session(s, actor.group_ids, session_id)
    _person(s, actor, person_id)
    items = items_of(s, rec.group_id, rec.kind)
    ensure_tag_labels(s, items, actor.audit_name)
    return items


def add_range(url: str, actor: Actor, session_id: int, person_id: int, t_start: float, t_end: float, label: str,
              note: str = "", is_baseline: bool = False) -> str:  # fmt: skip
    """Tag a range typed or brushed on the page (audited); refused when it equals a current tag's. Returns the uid."""
    require(actor, "tag")
    with scope(url) as s:
        _prepare(s, actor, session_id, person_id)
        return _add(s, actor, session_id, person_id, float(t_start), float(t_end), label, note, is_baseline).uid


def edit_range(url: str, actor: Actor, session_id: int, person_id: int, uid: str, **changes) -> None:
    """Change a current tag (t_start, t_end, label, note, is_baseline); a range equal to another tag's is refused."""
    require(actor, "tag")
    with scope(url) as s:
        _prepare(s, actor, session_id, person_id)
        _edit(s, actor, session_id, person_id, uid, **changes)


def form_range(start_text: str, end_text: str) -> tuple[float, float]:
    """The range typed in the From/To fields (mm:ss), or ``ValueError`` when a field is empty or the
    range is backwards: an empty field is never filled from an earlier tag."""
    if not (start_text or "").strip() or not (end_text or "").strip():
        raise ValueError("type the range (From and To, mm:ss) or drag across the chart first")
    ts, te = parse_clock(start_text), parse_clock(end_text)
    if te <= ts:
        raise ValueError(f"the tag ends ({format_clock(te)}) before it starts ({format_clock(ts)})")
    return ts, te


def form_edit(start_text: str, end_text: str, current: tuple[float, float]) -> tuple[float, float]:
    """The range of an edited tag: a field still showing the tag's own time (mm:ss, rounded) keeps the
    exact stored time, so changing a note never rounds a range coded to the frame."""
    ts, te = form_range(start_text, end_text)
    if start_text.strip() == format_clock(current[0]):
        ts = current[0]
    if end_text.strip() == format_clock(current[1]):
        te = current[1]
    if te <= ts:
        raise ValueError(f"the tag ends ({format_clock(te)}) before it starts ({format_clock(ts)})")
    return ts, te


# --- the player's events ------------------------------------------------------------------------


def _apply_one(s: Session, actor: Actor, session_id: int, person_id: int, m: TagMessage) -> TagEvent:
    ev = TagEvent(event_id=m.id, session_id=session_id, op=m.op, actor=actor.audit_name, ok=True, message="")
    if m.op == "add":
        tag = _add(s, actor, session_id, person_id, m.t_start, m.t_end, m.label)
        ev.tag_uid, ev.message = tag.uid, f"Tagged {_span(tag.t_start, tag.t_end)} as {tag.label}."
    elif m.op == "edit":
        before, row = _edit(s, actor, session_id, person_id, m.uid, t_start=m.t_start, t_end=m.t_end, label=m.label)
        ev.tag_uid, ev.before_version = row.uid, before
        ev.message = f"Changed the tag to {row.label} {_span(row.t_start, row.t_end)}."
    elif m.op == "delete":
        prev = _current(s, session_id, person_id, m.uid)
        tags.delete_tag(s, prev.uid, actor.username, "deleted in the review player", audit_actor=actor.audit_name)
        ev.tag_uid, ev.before_version = prev.uid, prev.version
        ev.message = f"Deleted {prev.label} {_span(prev.t_start, prev.t_end)}."
    else:
        ev.target, ev.tag_uid, ev.message = m.target, *_undo(s, actor, session_id, m.target)
    return ev


def _undo(s: Session, actor: Actor, session_id: int, target: str) -> tuple[str, str]:
    from sqlalchemy import select

    done = s.get(TagEvent, target)
    if done is None or done.session_id != session_id or not done.ok or done.op == "undo":
        raise LookupError("nothing to undo: that action was not stored")
    if s.scalar(select(TagEvent).where(TagEvent.target == target, TagEvent.ok.is_(True))) is not None:
        raise LookupError("that action is already undone")
    history = tags.tag_history(s, done.tag_uid)
    latest = history[-1]
    if done.op == "add":
        if latest.deleted:
            raise LookupError("the tag is already deleted")
        tags.delete_tag(s, done.tag_uid, actor.username, "undone in the review player", audit_actor=actor.audit_name)
        return done.tag_uid, f"Undone: the {latest.label} tag {_span(latest.t_start, latest.t_end)} is removed."
    old = next(r for r in history if r.version == done.before_version)
    if not old.deleted:
        check_new_range(s, latest.session_id, latest.person_id, old.t_start, old.t_end, exclude_uid=old.uid)
    tags.restore_version(s, done.tag_uid, old.version, actor.audit_name)
    return done.tag_uid, f"Undone: {old.label} {_span(old.t_start, old.t_end)} is back."


def apply_events(url: str, actor: Actor, session_id: int, person_id: int, raw: object) -> dict[str, Applied]:
    """Apply the player's pending events (a list of message objects) to one child's tags in one session.

    Each event is applied once, in its own transaction: one already applied returns its first answer;
    a refused one (a same-range tag, a bad message) is recorded as refused, so a rerun gives the same
    message and nothing is stored twice. Returns every event's answer by id."""
    require(actor, "tag")
    out: dict[str, Applied] = {}
    for item in raw if isinstance(raw, list) else []:
        try:
            m = parse_message(item)
        except ValueError as e:
            eid = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else "?"
            out[eid] = Applied(eid, False, str(e))
            continue
        out[m.id] = _apply(url, actor, session_id, person_id, m)
    return out


def _stored(url: str, event_id: str, session_id: int) -> Applied | None:
    with scope(url) as s:
        ev = s.get(TagEvent, event_id)
        if ev is None:
            return None
        if ev.session_id != session_id:
            return Applied(event_id, False, "that event id belongs to another session")
        return Applied(event_id, ev.ok, ev.message, ev.tag_uid)


def _apply(url: str, actor: Actor, session_id: int, person_id: int, m: TagMessage) -> Applied:
    if (seen := _stored(url, m.id, session_id)) is not None:
        return seen
    try:
        with scope(url) as s:
            _prepare(s, actor, session_id, person_id)
            ev = _apply_one(s, actor, session_id, person_id, m)
            s.add(ev)
            s.flush()
            return Applied(m.id, True, ev.message, ev.tag_uid)
    except IntegrityError:  # the same event applied by a concurrent rerun: theirs stands, ours rolled back
        seen = _stored(url, m.id, session_id)
        if seen is not None:
            return seen
        raise
    except (ValueError, LookupError, PermissionError) as e:
        try:
            visible = True
            with scope(url) as s:
                visible_session(s, actor.group_ids, session_id)
        except LookupError:
            visible = False
        if visible:  # a refusal is remembered (same answer on a rerun); a hidden session leaves no row
            try:
                with scope(url) as s:
                    s.add(TagEvent(event_id=m.id, session_id=session_id, op=m.op, actor=actor.audit_name, ok=False,
                                   message=str(e), target=m.target, tag_uid=m.uid))  # fmt: skip
            except IntegrityError:
                return _stored(url, m.id, session_id) or Applied(m.id, False, str(e))
        return Applied(m.id, False, str(e))


def copy_fps(path) -> float:
    """The frame rate of a review copy (what a frame step and "within one frame" mean in the player)."""
    from pathlib import Path

    p = Path(path)
    return _copy_fps(str(p), p.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _copy_fps(path: str, _mtime: int) -> float:
    import av

    with av.open(path) as c:
        st = c.streams.video[0]
        rate = st.average_rate or st.guessed_rate or st.base_rate
        return float(rate) if rate else 25.0


def player_tags(url: str, actor: Actor, session_id: int, person_id: int) -> list[dict]:
    """The child's current tags in the player's form: uid, start, end, label."""
    require(actor, "review")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        _person(s, actor, person_id)
        return [{"uid": t.uid, "t0": float(t.t_start), "t1": float(t.t_end), "label": t.label}
                for t in tags.latest_tags(s, session_id=session_id, person_id=person_id)]  # fmt: skip


__all__ = ["Applied", "EventKind", "TagMessage", "add_range", "apply_events", "check_new_range", "copy_fps", "edit_range",
           "form_edit", "form_range", "parse_message", "player_tags"]  # fmt: skip


def pick_texts(tags) -> dict[str, str]:
    """Each tag as the "Tag to change" picker lists it: label, range, author and its id, so two tags alike
    (same label and range, e.g. copies made before ranges were checked) are still told apart."""
    out: dict[str, str] = {}
    for r in tags.itertuples():
        text = f"{r.label} {format_clock(r.t_start)}-{format_clock(r.t_end)} ({r.author}, #{str(r.uid)[:6]})"
        n = 6
        while text in out.values() and n < len(str(r.uid)):  # ids alike in their first digits: show more of them
            n += 4
            text = f"{r.label} {format_clock(r.t_start)}-{format_clock(r.t_end)} ({r.author}, #{str(r.uid)[:n]})"
        out[str(r.uid)] = text
    return out
