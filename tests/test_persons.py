"""Persons and rosters on rows made directly through SQLAlchemy: enrol, rename, merge,
split, delete, audit, and the identity overrides a re-analysis applies."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from storage import people
from storage.db import from_blob, get_engine, session_scope, to_blob
from storage.models import (
    AuditEntry,
    FeatureSeries,
    Group,
    IdentityOverride,
    Job,
    Person,
    PersonEmbedding,
    PersonModel,
    Recording,
    SessionKind,
    Tag,
    TimeBin,
    Track,
)
from affectline.ownership import slack
from identity.overrides import apply_overrides
from storage.people import OverrideSpec
from storage.repo import AnalysisResult, TrackRecord, replace_analysis

ALL_TABLES = (Person, PersonEmbedding, Track, TimeBin, FeatureSeries, Tag, IdentityOverride, PersonModel, Job)


def face(seed: int, noise: float = 0.0) -> np.ndarray:
    """A unit 128-d 'face embedding'; the same seed with a little noise is the same face.
    Random unit vectors in 128-d lie ~1.4 apart, far beyond the 0.5 match threshold."""
    v = np.random.default_rng(seed).normal(size=128)
    v = v / np.linalg.norm(v)
    if noise:
        v = v + np.random.default_rng(seed + 1000).normal(scale=noise / np.sqrt(128), size=128)
    return v.astype(np.float32)


class World:
    """Makes groups, sessions and analysed tracks (person, samples, 1 s bins, features) directly."""

    def __init__(self, s):
        self.s = s

    def group(self, name: str = "Class A") -> Group:
        g = Group(name=name, kind=SessionKind.classroom)
        self.s.add(g)
        self.s.flush()
        return g

    def session(self, group: Group | None) -> Recording:
        gid = group.id if group else None
        rec = Recording(group_id=gid, kind=SessionKind.classroom, title="t", video_path="/v.mp4")
        self.s.add(rec)
        self.s.flush()
        return rec

    def person(self, rec_or_group, label: str, enrolled: bool, embs: list[np.ndarray] = ()) -> Person:
        if isinstance(rec_or_group, Recording):
            gid, origin = rec_or_group.group_id, rec_or_group.id
        else:
            gid, origin = rec_or_group.id, None
        p = Person(label=label, group_id=gid, enrolled=enrolled, origin_session_id=origin)
        self.s.add(p)
        self.s.flush()
        for e in embs:
            self.s.add(PersonEmbedding(person_id=p.id, vector=to_blob(e), source="test"))
        self.s.flush()
        return p

    def track(self, rec: Recording, key: int, emb: np.ndarray | None, t0: float = 0.0, t1: float = 3.5,
              person: Person | None = None) -> Track:  # fmt: skip
        """Samples every 0.5 s from t0 to t1, bins of 1 s, a 3-column feature series whose
        first column is the bin's start time (so moved rows can be checked)."""
        if person is None:
            person = self.person(rec, f"Unknown {key + 1}", enrolled=False)
        times = np.arange(t0, t1 + 1e-6, 0.5, dtype=np.float32)
        boxes = np.tile(np.array([[10, 10, 40, 40]], np.float32), (len(times), 1)) + times[:, None]
        tr = Track(session_id=rec.id, track_key=key, person_id=person.id, t_start=float(times[0]),
                   t_end=float(times[-1]), n_samples=len(times), times=to_blob(times), face_boxes=to_blob(boxes),
                   context_boxes=to_blob(boxes * 2), embedding=None if emb is None else to_blob(emb))  # fmt: skip
        self.s.add(tr)
        self.s.flush()
        starts = np.arange(np.floor(t0), np.floor(t1) + 1)
        for b in starts:
            self.s.add(TimeBin(session_id=rec.id, person_id=person.id, track_id=tr.id, t_start=float(b),
                               t_end=float(b + 1), face_visible=True, engagement=0.5, academic_model="m",
                               expression_model="m"))  # fmt: skip
        feats = np.stack([starts, np.full_like(starts, key), np.ones_like(starts)], 1)
        self.s.add(FeatureSeries(session_id=rec.id, track_id=tr.id, person_id=person.id,
                                 grid_start=float(starts[0]), grid_step=1.0, n=len(starts), names=["t", "key", "one"],
                                 data=to_blob(feats)))  # fmt: skip
        self.s.flush()
        return tr

    def tag(self, rec: Recording, person: Person, t0: float, t1: float, label: str = "happy") -> Tag:
        t = Tag(uid=str(uuid.uuid4()), session_id=rec.id, person_id=person.id, t_start=t0, t_end=t1, label=label,
                author="test")  # fmt: skip
        self.s.add(t)
        self.s.flush()
        return t


def count(s, model, **where) -> int:
    q = select(func.count()).select_from(model)
    for k, v in where.items():
        q = q.where(getattr(model, k) == v)
    return s.scalar(q)


def audits(s, action: str) -> list[AuditEntry]:
    return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


@pytest.fixture()
def s(db_url):
    with session_scope(db_url) as sess:
        yield sess


@pytest.fixture()
def w(s) -> World:
    return World(s)


# --- enrol -------------------------------------------------------------------------------------


def test_enroll_moves_track_and_timeline_to_a_new_enrolled_person(s, w):
    g = w.group()
    rec = w.session(g)
    tr = w.track(rec, 0, face(1))
    unknown = s.get(Person, tr.person_id)
    w.tag(rec, unknown, 1.0, 2.0)
    other = w.track(rec, 1, face(2))

    p = people.enroll(s, rec.id, 0, "  Ada   Lovelace ", "teacher1")

    assert (p.label, p.enrolled, p.group_id, p.origin_session_id) == ("Ada Lovelace", True, g.id, None)
    embs = s.scalars(select(PersonEmbedding).where(PersonEmbedding.person_id == p.id)).all()
    assert [from_blob(e.vector).tolist() for e in embs] == [face(1).tolist()]
    assert s.get(Track, tr.id).person_id == p.id
    assert count(s, TimeBin, person_id=p.id) == 4 and count(s, FeatureSeries, person_id=p.id) == 1
    assert count(s, Tag, person_id=p.id) == 1
    assert s.get(Person, unknown.id) is None, "the emptied 'Unknown 1' is removed"
    assert s.get(Track, other.id).person_id != p.id, "other tracks are untouched"
    (a,) = audits(s, "enroll_person")
    assert (a.actor, a.target) == ("teacher1", f"person:{p.id}")
    assert (a.detail["from_person"], a.detail["created"]) == (unknown.id, True)


def test_enroll_same_name_in_another_session_joins_the_enrolled_person(s, w):
    g = w.group()
    r1, r2 = w.session(g), w.session(g)
    w.track(r1, 0, face(1))
    w.track(r2, 0, face(1, noise=0.2))
    p1 = people.enroll(s, r1.id, 0, "Ada", "t")
    p2 = people.enroll(s, r2.id, 0, "ada", "t")  # names match case-insensitively
    assert p2.id == p1.id
    assert count(s, PersonEmbedding, person_id=p1.id) == 2
    assert count(s, Track, person_id=p1.id) == 2
    # Another group's 'Ada' is another child.
    r3 = w.session(w.group("Class B"))
    w.track(r3, 0, face(1))
    assert people.enroll(s, r3.id, 0, "Ada", "t").id != p1.id


def test_enroll_a_track_matched_to_the_wrong_person_records_an_override(s, w):
    g = w.group()
    rec = w.session(g)
    bob = w.person(g, "Bob", True, [face(2)])
    w.track(rec, 0, face(1), t0=0.5, t1=3.0, person=bob)  # wrongly matched
    w.track(rec, 1, face(2), person=bob)
    ada = people.enroll(s, rec.id, 0, "Ada", "t")
    assert s.get(Person, bob.id) is not None, "an enrolled person is never dropped for lack of tracks"
    (o,) = people.overrides_for_session(s, rec.id)
    assert (o.person_id, o.t_start, o.t_end) == (ada.id, 0.5, 3.0)
    assert np.allclose(from_blob(o.vector), face(1))


def test_enrolling_a_second_fragment_in_a_session_records_an_override(s, w):
    # Matching gives a person at most one track of a session, so the second needs an override.
    rec = w.session(w.group())
    w.track(rec, 0, face(1), t0=0.0, t1=1.5)
    w.track(rec, 1, face(1, 0.1), t0=2.5, t1=4.0)
    ada = people.enroll(s, rec.id, 0, "Ada", "t")
    assert people.overrides_for_session(s, rec.id) == []
    assert people.enroll(s, rec.id, 1, "Ada", "t").id == ada.id
    (o,) = people.overrides_for_session(s, rec.id)
    assert (o.person_id, o.t_start, o.t_end) == (ada.id, 2.5, 4.0)
    assert [a.detail["override"] for a in audits(s, "enroll_person")] == [False, True]


def test_enroll_errors_name_the_wrong_id(s, w):
    rec = w.session(w.group())
    w.track(rec, 0, face(1))
    w.track(rec, 2, None)
    with pytest.raises(LookupError, match=f"^session {rec.id} has no track 7; tracks: 0, 2$"):
        people.enroll(s, rec.id, 7, "Ada", "t")
    with pytest.raises(LookupError, match="^session 999 does not exist$"):
        people.enroll(s, 999, 0, "Ada", "t")
    with pytest.raises(ValueError, match="name cannot be empty"):
        people.enroll(s, rec.id, 0, "   ", "t")
    with pytest.raises(ValueError, match=f"track 2 of session {rec.id} has no face embedding"):
        people.enroll(s, rec.id, 2, "Ada", "t")
    empty = w.session(None)
    with pytest.raises(LookupError, match="it has no tracks"):
        people.enroll(s, empty.id, 0, "Ada", "t")


# --- rename ------------------------------------------------------------------------------------


def test_rename_unknown_enrols_it_with_its_track_embeddings(s, w):
    g = w.group()
    rec = w.session(g)
    tr = w.track(rec, 0, face(3))
    p = people.rename(s, tr.person_id, "Grace", "t")
    assert (p.label, p.enrolled, p.origin_session_id) == ("Grace", True, None)
    (e,) = s.scalars(select(PersonEmbedding).where(PersonEmbedding.person_id == p.id))
    assert np.allclose(from_blob(e.vector), face(3)) and e.source == f"session:{rec.id}/track:0"
    (a,) = audits(s, "rename_person")
    assert a.detail == {"enrolled_now": True, "embeddings_added": 1}, "no names in the audit log"
    # Renaming an enrolled person only changes the name.
    people.rename(s, p.id, "Grace H.", "t")
    assert count(s, PersonEmbedding, person_id=p.id) == 1 and s.get(Person, p.id).label == "Grace H."


def test_rename_to_a_name_taken_in_the_group_says_to_merge(s, w):
    g = w.group()
    rec = w.session(g)
    ada = w.person(g, "Ada", True, [face(1)])
    tr = w.track(rec, 0, face(1, 0.1))
    expected = rf"person {ada.id} .* already named 'Ada'.*persons merge {ada.id} {tr.person_id}"
    with pytest.raises(ValueError, match=expected):
        people.rename(s, tr.person_id, "ADA", "t")
    with pytest.raises(LookupError, match="^person 4242 does not exist$"):
        people.rename(s, 4242, "X", "t")


# --- merge -------------------------------------------------------------------------------------


def test_merge_moves_everything_and_deletes_the_other(s, w):
    g = w.group()
    r1, r2 = w.session(g), w.session(g)
    keep = w.person(g, "Ada", True, [face(1)])
    other = w.person(g, "Ada (2)", True, [face(1, 0.3)])
    w.track(r1, 0, face(1), person=keep)
    t_other = w.track(r2, 0, face(1, 0.3), t0=1.0, t1=2.5, person=other)
    w.tag(r2, other, 1.0, 2.0)
    s.add(IdentityOverride(session_id=r2.id, person_id=other.id, t_start=0, t_end=1, vector=to_blob(face(1))))
    for pid, version, active in [(keep.id, 1, True), (other.id, 1, True), (other.id, 2, False)]:
        s.add(PersonModel(person_id=pid, kind="baseline", version=version, params=b"x", active=active))
    s.add(Job(task="personalize", person_id=other.id))
    s.flush()
    before = {m.__tablename__: count(s, m) for m in ALL_TABLES}

    p = people.merge(s, keep.id, other.id, "t")

    assert p.id == keep.id and s.get(Person, other.id) is None
    assert s.scalars(select(Person).where(Person.id == other.id)).first() is None
    for m in (PersonEmbedding, Track, TimeBin, FeatureSeries, Tag, PersonModel, Job):
        assert count(s, m, person_id=other.id) == 0, m.__tablename__
    assert count(s, PersonEmbedding, person_id=keep.id) == 2
    assert count(s, Track, person_id=keep.id) == 2 and count(s, TimeBin, person_id=keep.id) == 4 + 2
    assert count(s, Tag, person_id=keep.id) == 1
    # Versions renumbered after keep's; keep's active model stays the only active one.
    models = s.scalars(select(PersonModel).where(PersonModel.person_id == keep.id).order_by(PersonModel.version)).all()
    assert [(m.version, m.active) for m in models] == [(1, True), (2, False), (3, False)]
    # The moved track is now claimed for keep in its session, next to the old override.
    ov = people.overrides_for_session(s, r2.id)
    assert [o.person_id for o in ov] == [keep.id, keep.id]
    assert (ov[1].t_start, ov[1].t_end) == (t_other.t_start, t_other.t_end)
    after = {m.__tablename__: count(s, m) for m in ALL_TABLES}
    assert after == {**before, "persons": before["persons"] - 1, "identity_overrides": before["identity_overrides"] + 1}
    (a,) = audits(s, "merge_persons")
    assert a.detail["merged"] == other.id and a.detail["tracks_moved"] == 1


def test_merging_two_unknowns_enrols_the_kept_one(s, w):
    g = w.group()
    rec = w.session(g)
    a, b = w.track(rec, 0, face(5), t1=1.5), w.track(rec, 1, face(5, 0.2), t0=2.0)
    keep = people.merge(s, a.person_id, b.person_id, "t")
    assert keep.enrolled and keep.origin_session_id is None
    assert keep.label == f"Person {keep.id}", "'Unknown N' is a per-session label, not a roster name"
    assert count(s, PersonEmbedding, person_id=keep.id) == 2
    # An unknown merged into a named person takes the name.
    w.track(rec, 2, face(6))
    named = w.person(g, "Lin", True, [face(6)])
    u = s.scalar(select(Track).where(Track.track_key == 2)).person_id
    assert people.merge(s, u, named.id, "t").label == "Lin"


def test_merge_errors(s, w):
    g1, g2 = w.group("A"), w.group("B")
    p1, p2 = w.person(g1, "x", True), w.person(g2, "y", True)
    with pytest.raises(ValueError, match=f"cannot merge person {p1.id} with itself"):
        people.merge(s, p1.id, p1.id, "t")
    with pytest.raises(ValueError, match=f"person {p1.id} is in group {g1.id} and person {p2.id} in group {g2.id}"):
        people.merge(s, p1.id, p2.id, "t")
    with pytest.raises(LookupError, match="^person 555 does not exist$"):
        people.merge(s, p1.id, 555, "t")


# --- split -------------------------------------------------------------------------------------


def test_split_whole_track_with_name(s, w):
    g = w.group()
    rec = w.session(g)
    ada = w.person(g, "Ada", True, [face(1), face(2)])  # face(2) came from the wrongly matched track
    w.track(rec, 0, face(1), person=ada)
    wrong = w.track(rec, 1, face(2), t0=1.0, t1=3.0, person=ada)
    w.tag(rec, ada, 1.5, 2.5)

    bob = people.split(s, rec.id, 1, "t", name="Bob")

    assert bob.enrolled and bob.label == "Bob"
    assert s.get(Track, wrong.id).person_id == bob.id
    assert count(s, TimeBin, person_id=bob.id) == 3 and count(s, FeatureSeries, person_id=bob.id) == 1
    assert count(s, Tag, person_id=bob.id) == 1
    assert [np.allclose(from_blob(e.vector), face(1)) for e in s.scalars(select(PersonEmbedding).where(
        PersonEmbedding.person_id == ada.id))] == [True], "Ada loses the embedding that was Bob's face"  # fmt: skip
    assert count(s, PersonEmbedding, person_id=bob.id) == 1
    (o,) = people.overrides_for_session(s, rec.id)
    assert (o.person_id, o.t_start, o.t_end, o.created_by) == (bob.id, 1.0, 3.0, "t")
    (a,) = audits(s, "split_person")
    assert a.detail["new_person"] == bob.id and a.detail["whole_track"] is True and a.detail["embeddings_dropped"] == 1


def test_split_time_range_cuts_the_track(s, w):
    g = w.group()
    rec = w.session(g)
    tr = w.track(rec, 0, face(1), t0=0.0, t1=5.5)  # samples 0, 0.5, ..., 5.5; bins 0..5
    w.track(rec, 3, face(9))
    old_pid = tr.person_id

    p = people.split(s, rec.id, 0, "t", t_start=2.0, t_end=3.6)

    assert not p.enrolled and p.label == f"Person {p.id}" and p.origin_session_id is None
    new = s.scalar(select(Track).where(Track.session_id == rec.id, Track.person_id == p.id))
    assert new.track_key == 4, "the next free key of the session"
    assert from_blob(new.times).tolist() == [2.0, 2.5, 3.0, 3.5]
    assert from_blob(new.face_boxes, 4).shape == (4, 4) and (new.t_start, new.t_end, new.n_samples) == (2.0, 3.5, 4)
    old = s.get(Track, tr.id)
    assert from_blob(old.times).tolist() == [0.0, 0.5, 1.0, 1.5, 4.0, 4.5, 5.0, 5.5] and old.person_id == old_pid

    # Bins go with most of their samples: [2,3) and [3,4) move; the old track keeps 0, 1, 4, 5.
    def bins(tid):
        return [b.t_start for b in s.scalars(select(TimeBin).where(TimeBin.track_id == tid).order_by(TimeBin.t_start))]

    assert bins(new.id) == [2.0, 3.0] and bins(tr.id) == [0.0, 1.0, 4.0, 5.0]
    assert count(s, TimeBin, person_id=p.id) == 2
    # Feature series stay contiguous grids whose rows are the bins they describe.
    series = s.scalars(select(FeatureSeries).where(FeatureSeries.track_id.in_([tr.id, new.id])))
    fs = {(f.track_id, f.grid_start): from_blob(f.data, 3)[:, 0].tolist() for f in series}
    assert fs == {(new.id, 2.0): [2.0, 3.0], (tr.id, 0.0): [0.0, 1.0], (tr.id, 4.0): [4.0, 5.0]}
    (o,) = people.overrides_for_session(s, rec.id)
    assert (o.person_id, o.t_start, o.t_end) == (p.id, 2.0, 3.5), "keyed by the samples moved"


def test_split_errors(s, w):
    g = w.group()
    rec = w.session(g)
    tr = w.track(rec, 0, face(1), t0=1.0, t1=2.0)
    only = f"track 0 is the only track of person {tr.person_id} and 1-2 s covers all of it: nothing to split off"
    with pytest.raises(ValueError, match=only):
        people.split(s, rec.id, 0, "t")
    with pytest.raises(ValueError, match="0.9-1.7 s covers all of it"):  # 2.0 is a leftover under half a bin
        people.split(s, rec.id, 0, "t", t_start=0.9, t_end=1.7)
    with pytest.raises(ValueError, match=r"no samples between 5 and 6 s \(it spans 1-2 s\)"):
        people.split(s, rec.id, 0, "t", t_start=5, t_end=6)
    with pytest.raises(ValueError, match="t_start must not exceed t_end"):
        people.split(s, rec.id, 0, "t", t_start=2, t_end=1)
    with pytest.raises(LookupError, match=f"session {rec.id} has no track 5; tracks: 0"):
        people.split(s, rec.id, 5, "t")
    # A whole sole track with a name is just an enrolment: the emptied Unknown goes away.
    old = tr.person_id
    p = people.split(s, rec.id, 0, "t", name="Cy")
    assert p.enrolled and tr.person_id == p.id and s.get(Person, old) is None


# --- delete ------------------------------------------------------------------------------------


def test_delete_person_removes_their_data_and_nothing_else(s, w, db_url):
    with get_engine(db_url).connect() as c:
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1, "cascades need foreign keys on"
    g = w.group()
    r1, r2 = w.session(g), w.session(g)
    ada = w.person(g, "Ada", True, [face(1), face(1, 0.2)])
    bob = w.person(g, "Bob", True, [face(2)])
    for rec in (r1, r2):
        w.track(rec, 0, face(1), person=ada)
        w.track(rec, 1, face(2), person=bob)
        w.tag(rec, ada, 0.0, 1.0)
        w.tag(rec, bob, 0.0, 1.0)
    s.add(IdentityOverride(session_id=r1.id, person_id=ada.id, t_start=0, t_end=1, vector=to_blob(face(1))))
    s.add(PersonModel(person_id=ada.id, kind="baseline", version=1, params=b"x"))
    s.flush()
    before = {m.__tablename__: count(s, m) for m in ALL_TABLES}
    bob_rows = {m.__tablename__: count(s, m, person_id=bob.id) for m in ALL_TABLES if m is not Person}

    counts = people.delete_person(s, ada.id, "admin")
    s.commit()

    assert counts == {"person_embeddings": 2, "tracks": 2, "time_bins": 8, "feature_series": 2, "tags": 2,
                      "identity_overrides": 1, "person_models": 1, "jobs": 0}  # fmt: skip
    for m in ALL_TABLES:
        col = m.id if m is Person else m.person_id
        assert s.scalar(select(func.count()).where(col == ada.id)) == 0, m.__tablename__
    after = {m.__tablename__: count(s, m) for m in ALL_TABLES}
    assert after == {k: v - (counts.get(k, 1) if k != "persons" else 1) for k, v in before.items()}
    assert {m.__tablename__: count(s, m, person_id=bob.id) for m in ALL_TABLES if m is not Person} == bob_rows
    assert count(s, Recording) == 2
    (a,) = audits(s, "delete_person")
    assert (a.actor, a.target, a.detail["time_bins"]) == ("admin", f"person:{ada.id}", 8)
    assert "Ada" not in str(a.detail), "the audit log keeps no name of a deleted person"
    with pytest.raises(LookupError, match=f"person {ada.id} does not exist"):
        people.delete_person(s, ada.id, "admin")


# --- listing -----------------------------------------------------------------------------------


def test_list_persons(s, w):
    g1, g2 = w.group("A"), w.group("B")
    r1, r2 = w.session(g1), w.session(g1)
    ada = w.person(g1, "Ada", True, [face(1)])
    w.track(r1, 0, face(1), person=ada)
    w.track(r2, 0, face(1), person=ada)
    w.track(r2, 1, face(2))
    w.person(g2, "Zed", True)
    rows = people.list_persons(s, g1.id)
    assert [(p.label, p.enrolled, p.n_tracks, p.n_sessions, p.n_embeddings) for p in rows] == [
        ("Ada", True, 2, 2, 1), ("Unknown 2", False, 1, 1, 0)
    ]  # fmt: skip
    assert rows[1].origin_session_id == r2.id
    assert {p.label for p in people.list_persons(s)} == {"Ada", "Unknown 2", "Zed"}


# --- overrides on a fresh analysis -------------------------------------------------------------


def record(key: int, emb: np.ndarray | None, t0: float, t1: float, fps: float = 2.0) -> TrackRecord:
    times = np.arange(t0, t1 + 1e-6, 1 / fps, dtype=np.float32)
    starts = np.arange(np.floor(t0), np.floor(t1) + 1)
    bins = pd.DataFrame({"t_start": starts, "t_end": starts + 1, "face_visible": True, "engagement": 0.5})
    boxes = np.zeros((len(times), 4), np.float32)
    return TrackRecord(track_key=key, times=times, face_boxes=boxes, context_boxes=boxes, embedding=emb, bins=bins,
                       features=starts[:, None].astype(np.float32), feature_names=("t",))  # fmt: skip


def test_apply_overrides_whole_partial_far_and_latest_wins():
    tracks = [record(0, face(1), 0, 5.5), record(1, face(2), 1, 3), record(2, None, 0, 2)]
    specs = [
        OverrideSpec(10, 1.0, 3.0, face(2, 0.1)),  # whole track 1 (a near embedding)
        OverrideSpec(11, 2.0, 3.5, face(1, 0.1)),  # part of track 0
        OverrideSpec(12, 0.0, 9.0, face(3)),  # nobody's face: claims nothing
        OverrideSpec(13, 3.0, 3.5, face(1)),  # later, claims the end of 11's part
    ]
    out = apply_overrides(tracks, specs, threshold=0.5)
    got = {(r.track_key, r.person_id): r.times.tolist() for r in out}
    assert got == {
        (0, None): [0.0, 0.5, 1.0, 1.5, 4.0, 4.5, 5.0, 5.5],
        (3, 11): [2.0, 2.5],
        (4, 13): [3.0, 3.5],
        (1, 10): [1.0, 1.5, 2.0, 2.5, 3.0],
        (2, None): [0.0, 0.5, 1.0, 1.5, 2.0],
    }
    by = {(r.track_key): r for r in out}
    assert by[0].bins["t_start"].tolist() == [0, 1, 4, 5] and by[0].features[:, 0].tolist() == [0, 1, 4, 5]
    assert by[3].bins["t_start"].tolist() == [2] and by[4].bins["t_start"].tolist() == [3]
    assert all(r.match_score is None for r in out)
    assert apply_overrides(tracks, [], 0.5) == tracks


def test_apply_overrides_at_another_frame_rate():
    # Whole track 1.0-3.0 s split at 2 fps; re-analysed at 4 fps it runs 0.75-3.25 s. The ends
    # beyond the override are shorter than half a bin: the whole track is claimed.
    spec = OverrideSpec(7, 1.0, 3.0, face(1))
    (r,) = apply_overrides([record(0, face(1), 0.75, 3.25, fps=4)], [spec], 0.5, tol=slack(4))
    assert r.person_id == 7 and len(r.times) == 11 and r.bins["t_start"].tolist() == [0, 1, 2, 3]
    # A real remainder (0-0.75 s, more than half a bin) stays unclaimed, under the old key.
    parts = apply_overrides([record(0, face(1), 0.0, 3.25, fps=4)], [spec], 0.5, tol=slack(4))
    got = [(p.track_key, p.person_id, p.times.min(), p.times.max()) for p in parts]
    assert got == [(0, None, 0.0, 0.75), (1, 7, 1.0, 3.25)]
    # Bins go with most of their samples; [0,1) has 0, .25, .5, .75 -> unclaimed.
    assert [p.bins["t_start"].tolist() for p in parts] == [[0], [1, 2, 3]]


def test_corrections_survive_a_simulated_reanalysis(s, w):
    """Enrol, merge and split, then store a new analysis of the session the way store() does
    (overrides first, then embedding matching, here by nearest enrolled embedding)."""
    g = w.group()
    rec = w.session(g)
    w.track(rec, 0, face(1), 0, 3.5)
    w.track(rec, 1, face(2), 0, 3.5)
    w.track(rec, 2, face(3), 0, 3.5)
    ada = people.enroll(s, rec.id, 0, "Ada", "t")
    cy_unknown = s.scalar(select(Track).where(Track.session_id == rec.id, Track.track_key == 2)).person_id
    cy = people.merge(s, ada.id, cy_unknown, "t")  # wrongly: track 2 is not Ada
    assert cy.id == ada.id
    bo = people.split(s, rec.id, 2, "t", name="Bo")  # corrected back
    s.commit()

    def reanalyse():
        recs = [record(0, face(1, 0.05), 0, 3.5), record(1, face(2, 0.05), 0, 3.5), record(2, face(3, 0.05), 0, 3.5)]
        recs = apply_overrides(recs, people.override_specs(s, rec.id), 0.5, tol=0.5)
        enrolled = {}
        q = select(PersonEmbedding.person_id, PersonEmbedding.vector).join(Person).where(Person.enrolled)
        for pid, v in s.execute(q):
            enrolled.setdefault(pid, []).append(from_blob(v))
        for r in recs:
            if r.person_id is None:
                d = {pid: min(np.linalg.norm(r.embedding - e) for e in es) for pid, es in enrolled.items()}
                pid = min(d, key=d.get)
                if d[pid] < 0.5:
                    r.person_id, r.match_score = pid, 1 - d[pid]
        res = AnalysisResult(recording_id=rec.id, fps=2, n_frames=8, width=1, height=1, analysis_fps=2, bin_seconds=1,
                             academic_model="m", expression_model="m", tracks=recs)  # fmt: skip
        out = replace_analysis(s, res)
        s.commit()
        return out

    for _ in range(2):
        got = reanalyse()
        assert got[0] == ada.id and got[2] == bo.id
        assert s.get(Person, got[1]).label == "Unknown 1" and not s.get(Person, got[1]).enrolled
    assert count(s, Person, origin_session_id=rec.id) == 1, "old 'Unknown N' persons are replaced, not piled up"


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_persons(settings, db_url, monkeypatch):
    from cli.main import main
    from services.actor import operator

    monkeypatch.setenv("AFFECTLINE_ACTOR", "someone-else")  # no longer read: it would let anyone pose as anyone
    with session_scope(db_url) as s:
        w = World(s)
        g = w.group("Room 5")
        rec = w.session(g)
        for k in range(3):
            w.track(rec, k, face(k))
        rid = rec.id
    run = lambda *a, **kw: CliRunner().invoke(main, ["--as", "ms-k", "persons", *a], catch_exceptions=False, **kw)

    r = run("enroll", str(rid), "3", "--name", "Ada")
    assert r.exit_code == 1 and f"Error: session {rid} has no track 3; tracks: 0, 1, 2" in r.output
    r = run("enroll", str(rid), "0", "--name", "Ada")
    assert r.exit_code == 0, r.output
    with session_scope(db_url) as s:
        ada = people.find_enrolled(s, g.id, "Ada").id
        q = select(Track.person_id).where(Track.session_id == rid)
        u1, u2 = (s.scalar(q.where(Track.track_key == k)) for k in (1, 2))
    assert r.output == f"enrolled track 0 of session {rid} as 'Ada' (person {ada})\n"
    assert run("rename", str(u1), "Bo").output == f"person {u1} is now 'Bo' (enrolled)\n"
    r = run("rename", str(u2), "bo")
    assert r.exit_code == 1 and f"person {u1} of the same group is already named 'Bo'" in r.output
    assert run("merge", str(u1), str(u2)).output == f"merged person {u2} into 'Bo' (person {u1})\n"
    r = run("split", str(rid), "2", "--name", "Cy")
    assert r.exit_code == 0 and r.output.startswith(f"split track 2 of session {rid} off to 'Cy' (person ")
    r = run("split", str(rid), "0", "--from", "1", "--to", "2")
    assert "split track 0 (1 to 2 s) of session" in r.output
    lines = run("list", "--group", "Room 5").output.splitlines()
    assert len(lines) == 4
    assert lines[0] == f"{ada}\tRoom 5\tenrolled\tAda\t1 tracks in 1 sessions\t1 embeddings"
    assert "group 'nope' does not exist; groups: Room 5" in run("list", "--group", "nope").output
    r = run("delete", str(ada), input="n\n")
    assert r.exit_code == 1 and "Aborted" in r.output
    r = run("delete", str(ada), "--yes")
    assert r.output == f"deleted person {ada}: 1 tracks, 3 time bins, 1 embeddings, 0 tags\n"
    assert "person 9999 does not exist" in run("delete", "9999", "--yes").output
    with session_scope(db_url) as s:
        acts = [(a.actor, a.action) for a in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    me = f"os:{operator().username.removeprefix('os:')} (as ms-k)"  # the OS account, with the claim beside it
    assert acts == [(me, a) for a in ("enroll_person", "rename_person", "merge_persons", "split_person",
                                          "split_person", "delete_person")]  # fmt: skip
