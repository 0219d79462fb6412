"""Persons and rosters: enrol, rename, merge, split and delete, so that corrections stick.

Re-analysing a session replaces its tracks, bins, features and the 'Unknown N' persons
it created (``storage.repo.replace_analysis``). A human's word must outlive that, so:

- an *enrolled* person belongs to the group (``origin_session_id`` is None) and carries
  face embeddings (``PersonEmbedding``); every later analysis of the group matches tracks
  against them (``tasks.store.store``);
- a correction that moves a track (or part of one) to another person is also recorded as
  an ``IdentityOverride`` keyed by appearance: session, time range and the track's
  embedding. The next analysis of that session gives the matching new track (or its
  samples inside the range) to that person before any embedding match runs
  (:func:`apply_overrides`).

Every function takes an open SQLAlchemy ``Session``; callers own the transaction. Missing
ids raise ``LookupError``, impossible requests ``ValueError``, each with one line naming
the id or value that is wrong. Changes are written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from affectline.ownership import bin_owners as _bin_owners
from affectline.ownership import fold_edges as _fold_edges
from affectline.ownership import runs as _runs
from storage import consent
from storage.db import from_blob, to_blob
from storage.labels import clean_label
from storage.models import (
    FeatureSeries,
    IdentityOverride,
    Job,
    Person,
    PersonEmbedding,
    PersonModel,
    Recording,
    Tag,
    TimeBin,
    Track,
)
from storage.repo import audit

EMBEDDING_DIM = 128


@dataclass(frozen=True)
class PersonSummary:
    """One roster line: a person and how much of them is stored."""

    id: int
    label: str
    group_id: int | None
    enrolled: bool
    origin_session_id: int | None
    n_embeddings: int
    n_tracks: int
    n_sessions: int


@dataclass(frozen=True)
class OverrideSpec:
    """An identity override detached from the database: who, when, and what the face looked like."""

    person_id: int
    t_start: float
    t_end: float
    vector: np.ndarray  # (128,)


# --- lookups -------------------------------------------------------------------------------


def _person(s: Session, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None:
        raise LookupError(f"person {person_id} does not exist")
    return p


def _recording(s: Session, session_id: int) -> Recording:
    rec = s.get(Recording, session_id)
    if rec is None:
        raise LookupError(f"session {session_id} does not exist")
    return rec


def get_track(s: Session, session_id: int, track_key: int) -> Track:
    """The track ``track_key`` of a session; the error lists the keys that exist."""
    _recording(s, session_id)
    tr = s.scalar(select(Track).where(Track.session_id == session_id, Track.track_key == track_key))
    if tr is None:
        keys = list(s.scalars(select(Track.track_key).where(Track.session_id == session_id).order_by(Track.track_key)))
        have = f"tracks: {', '.join(map(str, keys))}" if keys else "it has no tracks (not analysed yet?)"
        raise LookupError(f"session {session_id} has no track {track_key}; {have}")
    return tr


def _same_group(group_id: int | None) -> ColumnElement[bool]:
    return Person.group_id.is_(None) if group_id is None else Person.group_id == group_id


def find_enrolled(s: Session, group_id: int | None, name: str) -> Person | None:
    """The enrolled person of a group with this name (case-insensitive), if any."""
    q = select(Person).where(Person.enrolled.is_(True), _same_group(group_id), func.lower(Person.label) == name.lower())
    return s.scalars(q.order_by(Person.id).limit(1)).first()


def _clean_name(name: str) -> str:
    # One line of visible text (no tabs, newlines or other control characters), at most 200 long.
    return clean_label(name, "a person's name", max_len=200)


def _track_embedding(tr: Track, why: str) -> np.ndarray:
    if tr.embedding is None:
        raise ValueError(
            f"track {tr.track_key} of session {tr.session_id} has no face embedding, so it cannot be {why}"
        )
    return from_blob(tr.embedding)


def _source(tr: Track) -> str:
    return f"session:{tr.session_id}/track:{tr.track_key}"


def _add_embedding(s: Session, person_id: int, vector: np.ndarray, source: str) -> bool:
    """Add an embedding unless the person already has this exact vector. True if added."""
    blob = to_blob(vector)
    q = select(PersonEmbedding.id).where(PersonEmbedding.person_id == person_id, PersonEmbedding.vector == blob)
    if s.scalar(q):
        return False
    s.add(PersonEmbedding(person_id=person_id, vector=blob, source=source))
    return True


def _n_tracks(s: Session, person_id: int) -> int:
    return s.scalar(select(func.count(Track.id)).where(Track.person_id == person_id)) or 0


# --- moving data between persons ------------------------------------------------------------


def _move_track(s: Session, tr: Track, old_id: int, new_id: int) -> int:
    """Give a whole track, its bins and features to another person; tags of the old person
    in the same session lying within the track's time span go along. Returns tags moved."""
    tr.person_id = new_id
    s.execute(update(TimeBin).where(TimeBin.track_id == tr.id).values(person_id=new_id))
    s.execute(update(FeatureSeries).where(FeatureSeries.track_id == tr.id).values(person_id=new_id))
    return _move_tags(s, tr.session_id, old_id, new_id, tr.t_start, tr.t_end)


def _move_tags(s: Session, session_id: int, old_id: int, new_id: int, t0: float, t1: float) -> int:
    q = (
        update(Tag)
        .where(Tag.session_id == session_id, Tag.person_id == old_id, Tag.t_start >= t0, Tag.t_end <= t1)
        .values(person_id=new_id)
    )
    return s.execute(q).rowcount or 0


def _absorb(s: Session, keep_id: int, other_id: int) -> None:
    """Move every row that belongs to ``other`` onto ``keep`` (``other`` itself is not deleted)."""
    for model in (PersonEmbedding, Track, TimeBin, FeatureSeries, Tag, IdentityOverride, Job):
        s.execute(update(model).where(model.person_id == other_id).values(person_id=keep_id))
    # Model versions are unique per (person, kind): renumber other's after keep's, and keep's
    # active model wins, because it is the one the clinician has been using for this person.
    theirs = select(PersonModel).where(PersonModel.person_id == other_id)
    for m in s.scalars(theirs.order_by(PersonModel.kind, PersonModel.version)):
        mine = (PersonModel.person_id == keep_id, PersonModel.kind == m.kind)
        top = s.scalar(select(func.max(PersonModel.version)).where(*mine))
        has_active = s.scalar(select(PersonModel.id).where(*mine, PersonModel.active.is_(True)))
        m.person_id, m.version = keep_id, (top or 0) + 1
        m.active = m.active and has_active is None
        s.flush()


def _delete_row(s: Session, person_id: int) -> None:
    # A Core delete: the database cascades do the rest, and no stale ORM collection of the
    # person (whose rows may have just moved elsewhere) gets cascaded by the ORM.
    s.flush()
    s.execute(delete(Person).where(Person.id == person_id))


def _drop_if_empty_unknown(s: Session, person_id: int, heir_id: int) -> bool:
    """Delete an unenrolled person left without tracks, handing anything left (tags, models) to the heir."""
    p = s.get(Person, person_id)
    if p is None or p.enrolled or _n_tracks(s, person_id):
        return False
    _absorb(s, heir_id, person_id)
    _delete_row(s, person_id)
    return True


def _promote(s: Session, p: Person, label: str | None = None) -> int:
    """Make an unenrolled person enrolled: its tracks' embeddings become its own, and it stops
    belonging to the analysis that created it (so re-analysis keeps it). Returns embeddings added."""
    added = 0
    if not p.enrolled:
        for tr in s.scalars(select(Track).where(Track.person_id == p.id, Track.embedding.is_not(None))):
            added += _add_embedding(s, p.id, from_blob(tr.embedding), _source(tr))
        p.enrolled, p.origin_session_id = True, None
    if label is not None:
        p.label = label
    return added


def _new_person(s: Session, group_id: int | None, label: str | None, enrolled: bool) -> Person:
    p = Person(group_id=group_id, label=label or "", enrolled=enrolled, origin_session_id=None)
    s.add(p)
    s.flush()
    if not label:
        p.label = f"Person {p.id}"
    return p


def _override(
    s: Session, session_id: int, person_id: int, t0: float, t1: float, vector: np.ndarray, actor: str
) -> IdentityOverride:
    o = IdentityOverride(session_id=session_id, person_id=person_id, t_start=float(t0), t_end=float(t1),
                         vector=to_blob(vector), created_by=actor)  # fmt: skip
    s.add(o)
    return o


# --- public operations ------------------------------------------------------------------------


def enroll(s: Session, session_id: int, track_key: int, name: str, actor: str) -> Person:
    """Enrol the person seen in a labelled track under ``name`` in the session's group.

    Joins the group's enrolled person of that name if there is one, otherwise creates it.
    The track's embedding becomes one of the person's embeddings; the track with its
    bins, features and tags moves to the person, and the 'Unknown N' person it leaves
    empty is removed. If the track was matched to another enrolled person, that was a
    mistake: an identity override keeps the correction through re-analysis.
    """
    name = _clean_name(name)
    rec = _recording(s, session_id)
    tr = get_track(s, session_id, track_key)
    vec = _track_embedding(tr, "enrolled")
    old = s.get(Person, tr.person_id) if tr.person_id is not None else None
    target = find_enrolled(s, rec.group_id, name)
    created = target is None
    doing = f"enrolling track {track_key} of session {session_id}"
    consent.guard(s, doing, [target.id] if target is not None else [], new_in_group=rec.group_id if created else False)
    if target is None:
        target = _new_person(s, rec.group_id, name, enrolled=True)
    added = _add_embedding(s, target.id, vec, _source(tr))
    moved_tags, corrected = 0, False
    if old is None or old.id != target.id:
        # A correction of a wrong match, or a second track of the same person in this session
        # (matching is one track per person and session): record it so re-analysis keeps it.
        q = select(Track.id).where(Track.session_id == session_id, Track.person_id == target.id, Track.id != tr.id)
        if (old is not None and old.enrolled) or s.scalar(q.limit(1)) is not None:
            _override(s, session_id, target.id, tr.t_start, tr.t_end, vec, actor)
            corrected = True
        moved_tags = _move_track(s, tr, old.id if old else -1, target.id)
        if old is not None:
            _drop_if_empty_unknown(s, old.id, target.id)
    s.flush()
    audit(s, actor, "enroll_person", f"person:{target.id}", session_id=session_id, track_key=track_key,
          from_person=old.id if old else None, created=created, embedding_added=added, tags_moved=moved_tags,
          override=corrected)  # fmt: skip
    return target


def rename(s: Session, person_id: int, name: str, actor: str) -> Person:
    """Rename a person. An unenrolled ('Unknown N') person is enrolled by it: the embeddings
    of its tracks become its own, so the name survives re-analysis and later sessions."""
    name = _clean_name(name)
    p = _person(s, person_id)
    other = find_enrolled(s, p.group_id, name)
    if other is not None and other.id != p.id:
        raise ValueError(
            f"person {other.id} of the same group is already named {other.label!r}; "
            f"to make them one, merge them (persons merge {other.id} {p.id})"
        )
    was_enrolled = p.enrolled
    if not was_enrolled:  # enrolling stores the tracks' embeddings as the person's own
        consent.guard(s, f"renaming (enrolling) person {person_id}", [person_id])
    added = _promote(s, p, name)
    s.flush()
    # The new name is not put in the detail; the row's target_label keeps the name the person
    # has at the time of writing (storage.audit), so the trail reads without a lookup.
    audit(s, actor, "rename_person", f"person:{p.id}", enrolled_now=not was_enrolled, embeddings_added=added)
    return p


def merge(s: Session, keep_id: int, other_id: int, actor: str) -> Person:
    """Make ``other`` part of ``keep``: embeddings, tracks, bins, features, tags, overrides,
    person models and jobs move to ``keep``; ``other`` is deleted.

    ``keep`` ends up enrolled (a human has vouched for who it is), taking ``other``'s name
    when only ``other`` had one. Each moved track is recorded as an identity override, so a
    re-analysis of its session gives it to ``keep`` even when the tracker splits it off again.
    """
    if keep_id == other_id:
        raise ValueError(f"cannot merge person {keep_id} with itself")
    keep, other = _person(s, keep_id), _person(s, other_id)
    if keep.group_id is not None and other.group_id is not None and keep.group_id != other.group_id:
        raise ValueError(
            f"person {keep_id} is in group {keep.group_id} and person {other_id} in group {other.group_id}; "
            "only persons of one group can be merged"
        )
    consent.guard(s, f"merging person {other_id} into {keep_id}", [keep_id])  # keep receives every row
    label = other.label if (other.enrolled and not keep.enrolled) else None
    moved = list(s.scalars(select(Track).where(Track.person_id == other_id)))
    n_overrides = 0
    for tr in moved:
        if tr.embedding is not None:
            _override(s, tr.session_id, keep_id, tr.t_start, tr.t_end, from_blob(tr.embedding), actor)
            n_overrides += 1
    other_was_enrolled, other_group = other.enrolled, other.group_id
    if not other.enrolled:
        _promote(s, other)  # its track embeddings become embeddings, then move with the rest
    s.flush()
    _absorb(s, keep_id, other_id)
    _delete_row(s, other_id)
    if keep.group_id is None and other_group is not None:
        keep.group_id = other_group
    if not keep.enrolled and keep.label.startswith("Unknown") and label is None:
        label = f"Person {keep.id}"  # 'Unknown N' is a per-session label, not a name for a roster
    _promote(s, keep, label)
    s.flush()
    audit(s, actor, "merge_persons", f"person:{keep_id}", merged=other_id, merged_was_enrolled=other_was_enrolled,
          tracks_moved=len(moved), overrides=n_overrides)  # fmt: skip
    return keep


def split(
    s: Session,
    session_id: int,
    track_key: int,
    actor: str,
    name: str | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
) -> Person:
    """Give a track, or its part between ``t_start`` and ``t_end`` (seconds), to a new person.

    With ``name``, the new person is the group's enrolled person of that name (created if
    needed; a whole track's embedding becomes theirs); without, an unnamed 'Person N' that
    no re-analysis deletes. A part becomes a track of its own (next free key) with its bins
    and features; a leftover at either end of the track shorter than half a bin goes with
    it. An identity override (session, the part's span, the track's embedding) puts the
    matching track of a later re-analysis on the new person again. Embeddings that the old
    person got from this very track are dropped: the face was not theirs.
    """
    rec = _recording(s, session_id)
    tr = get_track(s, session_id, track_key)
    vec = _track_embedding(tr, "split off (its override needs an embedding)")
    name = _clean_name(name) if name is not None else None
    times = from_blob(tr.times)
    lo = tr.t_start if t_start is None else float(t_start)
    hi = tr.t_end if t_end is None else float(t_end)
    if hi < lo:
        raise ValueError(f"time range {lo:g}-{hi:g} s is empty: t_start must not exceed t_end")
    owner = np.where((times >= lo) & (times <= hi), 1, -1)
    if (owner < 0).all():
        raise ValueError(
            f"track {track_key} of session {session_id} has no samples between {lo:g} and {hi:g} s "
            f"(it spans {tr.t_start:g}-{tr.t_end:g} s)"
        )
    owner = _fold_edges(times, owner, rec.bin_seconds or 1.0)
    whole = bool((owner > 0).all())
    old_id = tr.person_id
    if whole and name is None and _n_tracks(s, old_id) == 1:
        raise ValueError(
            f"track {track_key} is the only track of person {old_id} and {lo:g}-{hi:g} s covers all of it: "
            "nothing to split off; give a narrower time range, or a name to enrol it under"
        )
    new = find_enrolled(s, rec.group_id, name) if name else None
    if new is not None and new.id == old_id:
        raise ValueError(
            f"track {track_key} of session {session_id} already belongs to {new.label!r} (person {new.id})"
        )
    consent.guard(s, f"splitting track {track_key} of session {session_id}", [new.id] if new is not None else [],
                  new_in_group=rec.group_id if new is None else False)  # fmt: skip
    if new is None:
        new = _new_person(s, rec.group_id, name, enrolled=name is not None)
    if whole:
        part = tr
        moved_tags = _move_track(s, tr, old_id, new.id)
        if name is not None:
            _add_embedding(s, new.id, vec, _source(tr))
        dropped = s.execute(
            delete(PersonEmbedding).where(PersonEmbedding.person_id == old_id, PersonEmbedding.vector == to_blob(vec))
        ).rowcount
    else:
        part = _cut_track(s, tr, owner > 0, new.id)
        moved_tags = _move_tags(s, session_id, old_id, new.id, lo, hi)
        dropped = 0
    # Keyed by the samples actually moved, so a re-analysis at the same rate claims exactly them.
    _override(s, session_id, new.id, part.t_start, part.t_end, vec, actor)
    _drop_if_empty_unknown(s, old_id, new.id)
    s.flush()
    audit(s, actor, "split_person", f"person:{old_id}", session_id=session_id, track_key=track_key,
          new_person=new.id, new_track_key=part.track_key, t_start=part.t_start, t_end=part.t_end,
          whole_track=whole, tags_moved=moved_tags, embeddings_dropped=dropped)  # fmt: skip
    return new


# --- cutting a track in parts (shared by split and by re-analysis) -----------------------------


def _cut_track(s: Session, tr: Track, inside: np.ndarray, person_id: int) -> Track:
    """Move the samples ``inside`` of a track, with the bins and feature rows most of whose
    samples they are, to a new track (the session's next free key) of ``person_id``."""
    times, face, ctx = from_blob(tr.times), from_blob(tr.face_boxes, 4), from_blob(tr.context_boxes, 4)
    owner = np.where(inside, 1, -1)
    key = (s.scalar(select(func.max(Track.track_key)).where(Track.session_id == tr.session_id)) or 0) + 1
    new = Track(
        session_id=tr.session_id, track_key=key, person_id=person_id, match_score=None,
        t_start=float(times[inside].min()), t_end=float(times[inside].max()), n_samples=int(inside.sum()),
        times=to_blob(times[inside]), face_boxes=to_blob(face[inside]), context_boxes=to_blob(ctx[inside]),
        embedding=tr.embedding, thumbnail=tr.thumbnail,
    )  # fmt: skip
    s.add(new)
    s.flush()
    bins = list(s.scalars(select(TimeBin).where(TimeBin.track_id == tr.id)))
    if bins:
        own = _bin_owners(times, owner, np.array([b.t_start for b in bins]), np.array([b.t_end for b in bins]))
        for b, o in zip(bins, own):
            if o > 0:
                b.track_id, b.person_id = new.id, person_id
    # Feature series are contiguous grids: cut each into the part's rows and the remaining runs.
    for fs in list(s.scalars(select(FeatureSeries).where(FeatureSeries.track_id == tr.id))):
        if fs.n == 0:
            continue
        data = from_blob(fs.data).reshape(fs.n, -1)
        starts = fs.grid_start + np.arange(fs.n) * fs.grid_step
        sel = _bin_owners(times, owner, starts, starts + fs.grid_step) > 0
        if not sel.any():
            continue
        for rows, pid, track_id in [(sel, person_id, new.id), (~sel, fs.person_id, tr.id)]:
            for a, b in _runs(rows):
                s.add(FeatureSeries(session_id=fs.session_id, track_id=track_id, person_id=pid,
                                    grid_start=float(fs.grid_start + a * fs.grid_step), grid_step=fs.grid_step,
                                    n=b - a, names=list(fs.names), data=to_blob(data[a:b])))  # fmt: skip
        s.delete(fs)
    rest = ~inside
    tr.times, tr.face_boxes, tr.context_boxes = to_blob(times[rest]), to_blob(face[rest]), to_blob(ctx[rest])
    tr.n_samples, tr.t_start, tr.t_end = int(rest.sum()), float(times[rest].min()), float(times[rest].max())
    return new


def delete_person(s: Session, person_id: int, actor: str) -> dict[str, int]:
    """Delete a person with everything stored about them: embeddings, tracks, time bins,
    feature series, tags, overrides, person models and jobs. Returns what was deleted, by table.

    The audit entry names the person's id and the counts, not the name: the point of the
    deletion is that the name is gone.
    """
    _person(s, person_id)
    counts = {
        m.__tablename__: s.scalar(select(func.count(m.id)).where(m.person_id == person_id)) or 0
        for m in (PersonEmbedding, Track, TimeBin, FeatureSeries, Tag, IdentityOverride, PersonModel, Job)
    }
    audit(s, actor, "delete_person", f"person:{person_id}", **counts)
    _delete_row(s, person_id)
    return counts


def list_persons(s: Session, group_id: int | None = None) -> list[PersonSummary]:
    """Persons (all, or one group's), enrolled first, then by name."""
    n_emb = select(func.count(PersonEmbedding.id)).where(PersonEmbedding.person_id == Person.id).scalar_subquery()
    n_tr = select(func.count(Track.id)).where(Track.person_id == Person.id).scalar_subquery()
    n_ses = select(func.count(func.distinct(Track.session_id))).where(Track.person_id == Person.id).scalar_subquery()
    q = select(Person, n_emb, n_tr, n_ses).order_by(Person.enrolled.desc(), Person.label, Person.id)
    if group_id is not None:
        q = q.where(Person.group_id == group_id)
    return [
        PersonSummary(p.id, p.label, p.group_id, p.enrolled, p.origin_session_id, ne or 0, nt or 0, ns or 0)
        for p, ne, nt, ns in s.execute(q)
    ]


def overrides_for_session(s: Session, session_id: int) -> list[IdentityOverride]:
    """The session's identity overrides, oldest first (later corrections win)."""
    q = select(IdentityOverride).where(IdentityOverride.session_id == session_id)
    return list(s.scalars(q.order_by(IdentityOverride.id)))


def override_specs(s: Session, session_id: int) -> list[OverrideSpec]:
    """The overrides a re-analysis of the session applies: those of persons the re-analysis
    keeps (not the session's own 'Unknown N', which it replaces), oldest first."""
    q = (
        select(IdentityOverride)
        .join(Person, Person.id == IdentityOverride.person_id)
        .where(IdentityOverride.session_id == session_id)
        .where(or_(Person.enrolled, Person.origin_session_id.is_(None), Person.origin_session_id != session_id))
        .order_by(IdentityOverride.id)
    )
    return [OverrideSpec(o.person_id, o.t_start, o.t_end, from_blob(o.vector)) for o in s.scalars(q)]
