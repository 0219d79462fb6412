"""The review player's arguments and who the video route lets in (no server: the rules themselves)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from dashboard.review_player import FRONTEND, MAX_POINTS, player_args
from services.review import NotLoggedIn, copy_available, review_file, viewer_for_token
from storage import access, logins, review
from storage.db import session_scope
from storage.models import Recording
from tests.dashboard_factories import seed

IDLE = timedelta(minutes=30)


def test_player_args_are_json_with_the_curve_thinned_and_gaps_as_null():
    curve = [(float(t), math.nan if t % 7 == 0 else 0.5) for t in range(5400)]  # 90 minutes of 1 s points
    a = player_args("/review/3.mp4", curve, 0.0, 5400.0, [(60.0, 120.0, "engagement dip")], seek=(61.5, 2))
    assert len(a["curve"]) <= MAX_POINTS and a["curve"][0] == [0.0, None] and a["curve"][1][1] == 0.5
    assert a["range"] == [0.0, 5400.0] and a["moments"] == [[60.0, 120.0, "engagement dip"]]
    assert a["seek"] == {"t": 61.5, "nonce": 2}
    import json

    json.dumps(a, allow_nan=False)  # what the component receives: plain JSON, no NaN
    with pytest.raises(ValueError, match="empty"):
        player_args("/review/3.mp4", [], 10.0, 10.0)


def test_the_component_is_its_own_build():
    # index.html loads player.js as an ES module: the file in git is the file served (nothing compiled).
    html = (FRONTEND / "index.html").read_text()
    assert '<script type="module" src="player.js">' in html
    js = (FRONTEND / "player.js").read_text()
    assert "streamlit:componentReady" in js and "streamlit:setComponentValue" in js


def test_tokens_rights_and_the_group_setting(db_url, settings, tmp_path):
    ids = seed(db_url)
    sid = ids.sessions["maths"]
    copy = review.copy_path(settings.data_dir, sid)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"\x00\x00\x00\x18ftypisom")
    with session_scope(db_url) as s:
        access.set_password(s, ids.users["teacher"], "chalk and talk")
        s.get(Recording, sid).review_path = review.relative(settings.data_dir, copy)
        token = logins.attempt(s, "teacher", "chalk and talk", "127.0.0.1").token
    teacher = viewer_for_token(db_url, token, IDLE)
    assert teacher.username == "teacher"
    for bad in (None, "", "forged"):
        with pytest.raises(NotLoggedIn):
            viewer_for_token(db_url, bad, IDLE)
    # The demo's password-less user counts only when the caller passes it (loopback checked there).
    assert viewer_for_token(db_url, None, IDLE, demo_user="admin").username == "admin"
    with pytest.raises(NotLoggedIn):
        viewer_for_token(db_url, None, IDLE, demo_user="nobody")

    # A classroom is off by default: the stored copy is not served until the school turns it on.
    assert not copy_available(db_url, settings.data_dir, teacher, sid)
    with session_scope(db_url) as s:
        review.set_group_setting(s, ids.groups["class-a"], True, "head")
    assert review_file(db_url, settings.data_dir, teacher, sid) == copy.resolve()
    # Another group's session or one without a copy: the same refusal.
    with pytest.raises(LookupError, match="no review copy you may watch"):
        review_file(db_url, settings.data_dir, teacher, ids.sessions["history"])
    with pytest.raises(LookupError, match="no review copy you may watch"):
        review_file(db_url, settings.data_dir, teacher, 12345)
    # A disabled user's token no longer works.
    with session_scope(db_url) as s:
        access.set_disabled(s, ids.users["teacher"], True)
    with pytest.raises(NotLoggedIn):
        viewer_for_token(db_url, token, IDLE)
