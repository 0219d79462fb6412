"""The review player's coded actions stored exactly once (services.tagging): idempotent events, the
same-range refusal, undo of adds, edits and deletes, and the typed form that never reuses a range."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.actor import actor_for_user
from services.tagging import add_range, apply_events, edit_range, form_range, parse_message, player_tags
from storage.db import session_scope
from storage.models import AuditEntry, Tag, TagEvent
from tests.dashboard_factories import seed


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request, settings):
    from storage.db import get_engine, migrate

    if request.param == "sqlite":
        url = settings.resolved_database_url
        migrate(url)
        yield url
        return
    from tests.services import postgres_server

    with postgres_server() as url:
        migrate(url)
        yield url
        get_engine(url).dispose()


@pytest.fixture()
def child(database):
    ids = seed(database)
    with session_scope(database) as s:
        c = actor_for_user(s, ids.users["clinician"])
        t = actor_for_user(s, ids.users["teacher"])
    return database, c, t, ids.sessions["therapy"], ids.persons["therapy"][0], ids


def add(eid, a, b, label="anxious"):
    return {"id": eid, "op": "add", "t_start": a, "t_end": b, "label": label}


def test_a_rerun_delivering_the_same_events_stores_each_tag_once(child):
    url, c, _, sid, pid, _ = child
    batch = [add("ev-000001", 10.0, 14.5), add("ev-000002", 20.25, 20.29, "vocal outburst")]
    first = apply_events(url, c, sid, pid, batch)
    assert all(a.ok for a in first.values()), first
    again = apply_events(url, c, sid, pid, batch + [add("ev-000003", 30.0, 31.0)])  # the player's queue grows
    assert again["ev-000001"] == first["ev-000001"] and again["ev-000003"].ok
    rows = player_tags(url, c, sid, pid)
    assert [(r["t0"], r["t1"], r["label"]) for r in rows] == [(10.0, 14.5, "anxious"), (20.25, 20.29, "vocal outburst"),
                                                                (30.0, 31.0, "anxious")]  # fmt: skip
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Tag)) == 3
        assert s.scalar(select(func.count()).where(AuditEntry.action == "add_tag")) == 3


def test_the_same_event_delivered_twice_at_once_stores_one_tag(child):
    from concurrent.futures import ThreadPoolExecutor

    url, c, _, sid, pid, _ = child
    batch = [add(f"ev-1000{i:02d}", 2.0 + 5 * i, 3.5 + 5 * i) for i in range(6)]
    with ThreadPoolExecutor(4) as pool:  # four reruns delivering the same value at the same moment
        answers = list(pool.map(lambda _: apply_events(url, c, sid, pid, batch), range(4)))
    assert all(a == answers[0] for a in answers) and all(x.ok for x in answers[0].values()), answers
    assert len(player_tags(url, c, sid, pid)) == 6
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Tag)) == 6


def test_a_range_equal_to_an_existing_tags_is_refused_with_a_message_every_time(child):
    url, c, _, sid, pid, _ = child
    assert apply_events(url, c, sid, pid, [add("ev-000010", 5.0, 9.0)])["ev-000010"].ok
    out = apply_events(url, c, sid, pid, [add("ev-000011", 5.0, 9.0, "calm")])["ev-000011"]
    assert not out.ok and "00:05-00:09 is already tagged 'anxious'" in out.message
    assert apply_events(url, c, sid, pid, [add("ev-000011", 5.0, 9.0, "calm")])["ev-000011"] == out  # rerun: same answer
    with pytest.raises(ValueError, match="already tagged"):  # the typed form too
        add_range(url, c, sid, pid, 5.0, 9.0, "calm")
    uid = add_range(url, c, sid, pid, 5.0, 9.5, "calm")  # another range is fine
    with pytest.raises(ValueError, match="already tagged"):  # and an edit onto another tag's range
        edit_range(url, c, sid, pid, uid, t_end=9.0)
    assert len(player_tags(url, c, sid, pid)) == 2


def test_undo_takes_back_an_add_an_edit_and_a_delete(child):
    url, c, _, sid, pid, _ = child
    uid = apply_events(url, c, sid, pid, [add("ev-000020", 1.0, 3.0)])["ev-000020"].uid
    assert apply_events(url, c, sid, pid, [{"id": "ev-000021", "op": "edit", "uid": uid, "t_start": 1.5, "t_end": 4.0,
                                            "label": "calm"}])["ev-000021"].ok  # fmt: skip
    assert [(r["t0"], r["t1"], r["label"]) for r in player_tags(url, c, sid, pid)] == [(1.5, 4.0, "calm")]
    undo = apply_events(url, c, sid, pid, [{"id": "ev-000022", "op": "undo", "target": "ev-000021"}])["ev-000022"]
    assert undo.ok and "anxious 00:01-00:03 is back" in undo.message
    assert [(r["t0"], r["t1"], r["label"]) for r in player_tags(url, c, sid, pid)] == [(1.0, 3.0, "anxious")]
    again = apply_events(url, c, sid, pid, [{"id": "ev-000023", "op": "undo", "target": "ev-000021"}])["ev-000023"]
    assert not again.ok and "already undone" in again.message
    assert apply_events(url, c, sid, pid, [{"id": "ev-000024", "op": "delete", "uid": uid}])["ev-000024"].ok
    assert player_tags(url, c, sid, pid) == []
    assert apply_events(url, c, sid, pid, [{"id": "ev-000025", "op": "undo", "target": "ev-000024"}])["ev-000025"].ok
    assert len(player_tags(url, c, sid, pid)) == 1
    assert apply_events(url, c, sid, pid, [{"id": "ev-000026", "op": "undo", "target": "ev-000020"}])["ev-000026"].ok
    assert player_tags(url, c, sid, pid) == []
    with session_scope(url) as s:
        versions = [t.version for t in s.scalars(select(Tag).where(Tag.uid == uid).order_by(Tag.version))]
        assert versions == [1, 2, 3, 4, 5, 6]  # every step kept
        assert s.scalar(select(func.count()).where(AuditEntry.action == "restore_tag")) == 2


def test_bad_messages_and_other_peoples_sessions_are_refused_in_one_line(child):
    url, c, teacher, sid, pid, ids = child
    out = apply_events(url, c, sid, pid, [{"id": "x"}, {"id": "ev-000030", "op": "explode"},
                                          add("ev-000031", 9.0, 3.0), add("ev-000032", float("nan"), 3.0)])  # fmt: skip
    assert not any(a.ok for a in out.values())
    assert "not an event id" in out["x"].message and "explode" in out["ev-000030"].message
    assert "ends (00:03) before it starts (00:09)" in out["ev-000031"].message
    assert "not a time" in out["ev-000032"].message
    with pytest.raises(PermissionError):
        apply_events(url, teacher, sid, pid, [add("ev-000033", 1.0, 2.0)])
    other = apply_events(url, c, ids.sessions["maths"], ids.persons["maths"][0], [add("ev-000034", 1.0, 2.0)])
    assert not other["ev-000034"].ok and "not visible" in other["ev-000034"].message
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Tag)) == 0
        assert s.get(TagEvent, "ev-000034") is None  # nothing recorded against a session they cannot see
    with pytest.raises(ValueError, match="undo needs"):
        parse_message({"id": "ev-000035", "op": "undo"})


def test_the_typed_form_never_fills_an_empty_field_from_an_earlier_tag():
    assert form_range("01:02", "1:10") == (62.0, 70.0)
    with pytest.raises(ValueError, match="type the range"):
        form_range("", "01:10")
    with pytest.raises(ValueError, match="before it starts"):
        form_range("01:10", "01:02")


def test_an_edit_that_leaves_the_range_fields_alone_keeps_the_exact_range():
    from services.tagging import form_edit

    assert form_edit("01:02", "01:10", (62.36, 70.04)) == (62.36, 70.04)
    assert form_edit("01:03", "01:10", (62.36, 70.04)) == (63.0, 70.04)
