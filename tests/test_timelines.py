"""services.timelines: the fast column reads agree with the ORM read, filter by time, and the fingerprint moves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services import timelines
from storage import people, repo
from storage.db import session_scope
from storage.models import SessionKind
from tests.big_session import add_class_session


@pytest.fixture()
def session(db_url):
    with session_scope(db_url) as s:
        gid = repo.get_or_create_group(s, "class-t", SessionKind.classroom).id
    sid, pids = add_class_session(db_url, gid, minutes=3, n_persons=4, seed=4)
    return db_url, sid, pids


def test_class_bins_match_the_orm_read(session):
    url, sid, pids = session
    with session_scope(url) as s:
        fast = timelines.class_bins(s, sid)
        slow = repo.session_bins(s, sid)
    assert len(fast) == len(slow) == 4 * 180
    for c in timelines.CLASS_COLUMNS:
        a = fast[c].to_numpy(float) if c != "face_visible" else fast[c].to_numpy(bool)
        b = pd.to_numeric(slow[c]).to_numpy(float) if c != "face_visible" else slow[c].astype(bool).to_numpy()
        assert np.allclose(a, b, equal_nan=True), c
    assert fast["face_visible"].dtype == bool and (~fast["face_visible"]).sum() == (~slow["face_visible"].astype(bool)).sum()
    assert (fast["person_label"] == slow["person_label"]).all()


def test_class_bins_time_range_and_person_bins(session):
    url, sid, pids = session
    with session_scope(url) as s:
        part = timelines.class_bins(s, sid, 60.0, 90.0)
        one = timelines.person_bins(s, sid, pids[2])
    assert part["t_start"].min() == 60.0 and part["t_start"].max() == 89.0 and len(part) == 4 * 30
    assert len(one) == 180 and set(one["person_id"]) == {pids[2]} and one["person_label"].iloc[0] == "Student 03"
    assert one["t_start"].is_monotonic_increasing and set(timelines.PERSON_COLUMNS) <= set(one.columns)


def test_person_cues_names_missing_features_as_nan(session):
    url, sid, pids = session
    with session_scope(url) as s:
        cues = timelines.person_cues(s, sid, pids[0])
    # tests.big_session stores a single placeholder feature: every cue input is missing, none invented
    assert len(cues) == 180 and list(cues.columns) == ["t_start", *timelines.CUE_INPUTS]
    assert cues[list(timelines.CUE_INPUTS)].isna().all().all()


def test_fingerprint_moves_when_the_stored_timelines_do(session):
    url, sid, pids = session
    with session_scope(url) as s:
        before = timelines.fingerprint(s, sid)
        assert timelines.fingerprint(s, sid) == before
        people.delete_person(s, pids[1], "admin")
    with session_scope(url) as s:
        after = timelines.fingerprint(s, sid)
    assert after != before
