"""services.deletions: what a delete would remove, counted before the confirmation, without removing it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services import deletions
from services.actor import Actor, operator
from storage import people, repo
from storage.db import session_scope
from storage.models import Person, Role, SessionKind, TimeBin
from tests.dashboard_factories import add_analysed_session


def test_counts_name_the_target_and_change_nothing(db_url):
    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "Class A", SessionKind.classroom).id
        h = repo.get_or_create_group(s, "Class H", SessionKind.classroom).id
    sid, pids = add_analysed_session(db_url, g, SessionKind.classroom, "maths lesson", 3, n_bins=25)
    with session_scope(db_url) as s:
        people.rename(s, pids[0], "Ada", "t")
    op = operator()
    imp = deletions.session_impact(db_url, op, sid)
    assert imp.counts["time_bins"] == 75 and imp.counts["tracks"] == 3 and imp.counts["persons"] == 2  # 2 still unnamed
    assert imp.sentence().startswith(f"This deletes session 'maths lesson' (#{sid}): 75 time bins, 3 tracks, 2 unnamed persons")
    assert imp.sentence().endswith("It cannot be undone.")
    p = deletions.person_impact(db_url, op, pids[0])
    assert p.counts["sessions"] == 1 and p.counts["time_bins"] == 25
    assert p.sentence().startswith(f"This deletes Ada (person #{pids[0]}) with their name: 1 session, 25 time bins, 1 track")
    w = deletions.withdrawal_impact(db_url, op, pids[0], "thumbnails")
    assert w.sentence().startswith("This deletes the face thumbnails of Ada") and "nothing stored" in w.sentence()
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(TimeBin.id))) == 75 and s.get(Person, pids[0]) is not None
    teacher = Actor(3, "tina", Role.teacher, (g,))
    with pytest.raises(PermissionError):
        deletions.session_impact(db_url, teacher, sid)
    other_admin = Actor(4, "hal", Role.admin, (h,))
    with pytest.raises(LookupError, match="does not exist or is not visible"):
        deletions.person_impact(db_url, other_admin, pids[0])
    assert deletions.retention_impact(db_url, op, None).sentence().startswith(
        "This deletes every expired session with its timelines, tags and jobs: nothing stored")


def test_counted_words():
    assert deletions.counted({"time_bins": 1200, "tags": 0, "tracks": 1}) == "1,200 time bins, 1 track"
    assert deletions.counted({"feature_series": 2}) == "2 feature series"
    assert deletions.counted({}) == "nothing stored"
