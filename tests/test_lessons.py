"""services.lessons: short recordings left out of trends (with a note), and this lesson over earlier ones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from services import lessons
from services.actor import actor_for_user, operator
from storage.db import session_scope
from storage.models import Recording, SessionKind
from tests.big_session import add_class_session
from tests.dashboard_factories import add_analysed_session, seed


def _actor(url, uid):
    with session_scope(url) as s:
        return actor_for_user(s, uid)


def test_left_out_note_says_how_many_and_why():
    assert lessons.left_out_note(0, 5) == ""
    assert lessons.left_out_note(1, 5).startswith("1 recording shorter than 5 min was left out: too short")
    assert lessons.left_out_note(3, 2.5).startswith("3 recordings shorter than 2.5 min were left out")


def test_short_recordings_are_left_out_of_the_groups_lessons(db_url):
    ids = seed(db_url)  # class-a's maths lesson: 40 s
    g = ids.groups["class-a"]
    long_id, _ = add_class_session(db_url, g, minutes=6, n_persons=3, title="long lesson", seed=3)
    with session_scope(db_url) as s:
        rec = s.get(Recording, ids.sessions["maths"])
        rec.duration = None  # unknown length: read from its bins' span (40 s)
        got = lessons.group_lessons(s, g)
        assert [k.title for k in got.kept] == ["long lesson"] and [k.title for k in got.left_out] == ["maths lesson"]
        assert got.note.startswith("1 recording shorter than 5 min")
        assert lessons.duration_seconds(s, [rec])[rec.id] == pytest.approx(40.0)
        everything = lessons.group_lessons(s, g, min_minutes=0)
        assert len(everything.kept) == 2 and everything.note == ""


def test_this_lesson_over_earlier_lessons_on_one_axis_of_minutes(db_url):
    ids = seed(db_url)
    g = ids.groups["class-a"]
    now = datetime.now(timezone.utc)
    made = {}
    for title, minutes, days in (("oldest", 6, 30), ("week 1", 8, 14), ("clip", 0.5, 10), ("week 2", 6, 7), ("today", 10, 0),
                                 ("later", 6, -1)):  # fmt: skip
        if minutes >= 1:
            sid, _ = add_class_session(db_url, g, minutes=minutes, n_persons=3, title=title, seed=days + 50)
        else:
            sid, _ = add_analysed_session(db_url, g, SessionKind.classroom, title, 2, n_bins=30, seed=4)
        with session_scope(db_url) as s:
            s.get(Recording, sid).created_at = now - timedelta(days=days)
        made[title] = sid
    with session_scope(db_url) as s:  # the seeded 40 s lesson, older than every lesson drawn: not counted as left out
        s.get(Recording, ids.sessions["maths"]).created_at = now - timedelta(days=60)
    teacher = _actor(db_url, ids.users["teacher"])
    over = lessons.lesson_curves(db_url, teacher, made["today"], earlier=2)
    # the two newest earlier lessons long enough (the 30 s clip left out, and said so), oldest first; never a later one
    assert [c.key.title for c in over.earlier] == ["week 1", "week 2"] and over.current.key.title == "today"
    assert over.note.startswith("1 recording shorter than 5 min was left out")
    width = over.current.minutes[1] - over.current.minutes[0]
    for c in over.curves:  # one bucket width for all, in minutes from each lesson's start
        assert np.diff(c.minutes) == pytest.approx(np.full(len(c.minutes) - 1, width))
        assert c.minutes[0] == pytest.approx(width / 2) and np.nanmax(c.engagement) <= 1
    assert over.curves[0].minutes[-1] < 8 < over.current.minutes[-1] < 10
    # visibility: another group's teacher cannot read them; the operator can
    with pytest.raises(LookupError, match="does not exist or is not visible"):
        lessons.lesson_curves(db_url, _actor(db_url, ids.users["clinician"]), made["today"])
    assert len(lessons.lesson_curves(db_url, operator(), made["oldest"]).earlier) == 0


def _same_as_pandas(url: str, sid: int) -> None:
    from services import summaries as sm
    from services import timelines

    with session_scope(url) as s:
        got = lessons.class_curve(s, sid)
        want = sm.class_series(timelines.class_bins(s, sid))
    assert got["t_start"].tolist() == want["t_start"].tolist()
    np.testing.assert_allclose(got["engagement"].to_numpy(float), want["engagement"].to_numpy(float), atol=1e-9)


def test_the_sql_class_curve_is_the_pandas_one_on_sqlite_and_postgresql(db_url):
    from storage.db import get_engine, migrate
    from tests.services import postgres_server

    ids = seed(db_url)  # the seeded lessons hide each face for a while: those bins are not averaged in
    _same_as_pandas(db_url, ids.sessions["maths"])
    with postgres_server() as pg:
        migrate(pg)
        pids = seed(pg)
        _same_as_pandas(pg, pids.sessions["maths"])
        with session_scope(pg) as s:
            got = lessons.group_lessons(s, pids.groups["class-a"])
            assert got.kept == [] and [k.title for k in got.left_out] == ["maths lesson"]
        get_engine(pg).dispose()
