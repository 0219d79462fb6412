"""Faces named by sight: a crop of the review copy where a person was seen, cut on demand, only for
viewers of the session and only where consent and the group setting allow (issue 19)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from affectline.queue import ANALYZE_TASK
from services import faces
from services.actor import actor_for_user
from storage import access, consent, review
from storage.db import session_scope
from storage.repo import create_job, create_recording, get_or_create_group
from tests.paths import MEDIA

VIDEO = MEDIA / "two_people_head_turns_270p.mp4"  # two real people, 480x270, 4.5 s


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The real clip analysed in a classroom whose school allows video review (so a review copy is
    written), a teacher of that class and a teacher of another."""
    from affectline.settings import Settings
    from tasks.eager import run_analysis
    from pipeline.analyse import Pipeline
    from storage.db import migrate

    root = tmp_path_factory.mktemp("faces")
    settings = Settings(data_dir=root / "data", academic_model="cues")
    url = settings.resolved_database_url
    migrate(url)
    with session_scope(url) as s:
        g = get_or_create_group(s, "Year 5 art", "classroom")
        other = get_or_create_group(s, "Year 6 music", "classroom")
        review.set_group_setting(s, g.id, True, "head")
        mine, theirs = access.create_user(s, "ms-art", "teacher"), access.create_user(s, "mr-music", "teacher")
        access.grant(s, mine.id, g.id)
        access.grant(s, theirs.id, other.id)
        sid = create_recording(s, str(VIDEO), "classroom", group_id=g.id).id
        jid = create_job(s, ANALYZE_TASK, session_id=sid, params={"analysis_fps": 4.0}).id
        gid, users = g.id, (mine.id, theirs.id)
    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        run_analysis(jid, settings, pipeline=p)
    return {"url": url, "data": settings.data_dir, "sid": sid, "gid": gid, "users": users}


@pytest.fixture()
def world(template, tmp_path):
    """A copy of the analysed world per test (tests change consent and settings)."""
    import shutil
    import sqlite3

    data = tmp_path / "data"
    shutil.copytree(template["data"], data, ignore=shutil.ignore_patterns("affectline.db*"))
    src = template["url"].removeprefix("sqlite:///")
    with sqlite3.connect(src) as a, sqlite3.connect(data / "affectline.db") as b:
        a.backup(b)
    return template | {"url": f"sqlite:///{data / 'affectline.db'}", "data": data}


def actor(w, k: int):
    with session_scope(w["url"]) as s:
        return actor_for_user(s, w["users"][k])


@pytest.fixture(scope="module")
def detector():
    """The pipeline's own face detector (finds tilted heads, which dlib's HOG does not)."""
    from affectline.settings import Settings
    from recognition.detection import load_detector

    st = Settings()
    return load_detector(st.detector, st, device="cpu")


def detect(detector, jpeg: bytes) -> tuple[np.ndarray, tuple]:
    rgb = np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    (d,) = detector.detect([rgb])
    return np.asarray(d.boxes).reshape(-1, 4), rgb.shape


def test_each_unknown_face_is_a_crop_of_the_review_copy_that_contains_the_face(world, detector):
    shown = faces.unknown_faces(world["url"], world["data"], actor(world, 0), world["sid"])
    assert len(shown) == 2 and all(f.shown and f.source == "review copy" for f in shown), shown
    for f in shown:
        found, (h, w, _) = detect(detector, f.jpeg)
        assert h == faces.CROP_HEIGHT and len(found) == 1, (f.label, found)
        x0, y0, x1, y1 = found[0]
        cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
        assert abs(cx - 0.5) < 0.2 and abs(cy - 0.5) < 0.25, (f.label, found)  # the person's face, centred
        assert x1 - x0 > 0.35 * w  # the face fills the crop, not a face somewhere in a wide view
    # two people, two different crops: each is cut where that person was
    (a, b) = (np.asarray(Image.open(io.BytesIO(f.jpeg)).convert("L").resize((64, 64)), float) for f in shown)
    assert np.abs(a - b).mean() > 10
    # nothing was stored: the crops were cut from the copy for this reply
    with session_scope(world["url"]) as s:
        from sqlalchemy import func, select

        from storage.models import Track

        assert s.scalar(select(func.count()).where(Track.thumbnail.is_not(None))) == 0


def test_the_frame_at_any_moment_and_a_face_at_a_chosen_moment(world, detector):
    a = actor(world, 0)
    jpeg = faces.frame_at(world["url"], world["data"], a, world["sid"], 2.0)
    img = Image.open(io.BytesIO(jpeg))
    assert img.size == (480, 270)
    found, _ = detect(detector, jpeg)
    assert len(found) == 2  # both people in the frame
    (f, *_) = faces.unknown_faces(world["url"], world["data"], a, world["sid"])
    at = faces.face_of(world["url"], world["data"], a, f.person_id, world["sid"], t=1.0)
    assert at.shown and abs(at.t - 1.0) < 0.5


def test_a_teacher_of_another_group_is_refused(world):
    other = actor(world, 1)
    (f, *_) = faces.unknown_faces(world["url"], world["data"], actor(world, 0), world["sid"])
    with pytest.raises(LookupError, match="not visible to you"):
        faces.face_of(world["url"], world["data"], other, f.person_id, world["sid"])
    with pytest.raises(LookupError, match="no review copy you may watch"):
        faces.frame_at(world["url"], world["data"], other, world["sid"], 1.0)
    assert faces.unknown_faces(world["url"], world["data"], other, world["sid"]) == []
    assert len(faces.unknown_faces(world["url"], world["data"], actor(world, 0), limit=1)) == 1  # all sessions


def test_no_face_without_consent_or_with_video_review_off_and_the_page_says_why(world):
    url, data, sid = world["url"], world["data"], world["sid"]
    a = actor(world, 0)
    first, second = faces.unknown_faces(url, data, a, sid)
    with session_scope(url) as s:
        consent.withdraw(s, first.person_id, "thumbnails", "dpo")  # a recorded "no" for face images
    refused = faces.face_of(url, data, a, first.person_id, sid)
    assert not refused.shown and refused.reason == f"no thumbnail: {first.label}'s consent for face thumbnails is refused"
    assert faces.face_of(url, data, a, second.person_id, sid).shown  # only that person
    with session_scope(url) as s:
        consent.set_consent_required(s, world["gid"], True, "dpo")
    try:
        why = faces.face_of(url, data, a, second.person_id, sid).reason
        assert why == f"no thumbnail: group Year 5 art requires consent and none is recorded for {second.label}'s analysis"
    finally:
        with session_scope(url) as s:
            consent.set_consent_required(s, world["gid"], False, "dpo")
    with session_scope(url) as s:
        review.set_group_setting(s, world["gid"], False, "head")
    try:
        off = faces.face_of(url, data, a, second.person_id, sid)
        assert not off.shown and "video review is off for group Year 5 art" in off.reason
        assert "keeps no thumbnails" in off.reason
    finally:
        with session_scope(url) as s:
            review.set_group_setting(s, world["gid"], True, "head")


def test_the_crop_scales_source_boxes_to_the_smaller_review_frame():
    """Boxes are in source pixels (here 1920x1080); the copy is 640x360: the crop must land on the face."""
    frame = Image.new("RGB", (640, 360), (0, 0, 0))
    frame.paste((255, 255, 255), (400, 100, 440, 150))  # the "face" in review pixels
    crop = faces.crop_face(frame, np.array([1200.0, 300.0, 1320.0, 450.0]), (1920, 1080), margin=0.5)
    a = np.asarray(crop.convert("L"), float)
    h, w = a.shape
    assert h == faces.CROP_HEIGHT and a[h // 2, w // 2] > 200  # white at the centre
    assert a[2, 2] < 50 and a[-3, -3] < 50  # the margin around it is the dark room
    assert 0.2 < (a > 128).mean() < 0.3  # margin 0.5 each side: the face is half the width and height, 1/4 the area


def test_the_people_page_shows_the_faces_and_the_frame_and_says_why_not(world, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from affectline.settings import get_settings
    from dashboard import auth, data
    from dashboard.safe import shown

    monkeypatch.setenv("AFFECTLINE_DATA_DIR", str(world["data"]))
    monkeypatch.delenv("AFFECTLINE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    data.invalidate()
    try:
        first, second = faces.unknown_faces(world["url"], world["data"], actor(world, 0), world["sid"])
        with session_scope(world["url"]) as s:
            consent.withdraw(s, second.person_id, "thumbnails", "dpo")
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
        at.session_state[auth.USER_KEY] = world["users"][0]
        at.run()
        at.switch_page("views/people.py").run()
        assert not at.exception, [e.value for e in at.exception]
        images = at.get("image")
        assert len(images) == 2  # the first person's face and the frame at 0:00; not the second's
        assert f"no thumbnail: {second.label}'s consent for face thumbnails is refused" in [shown(c.value) for c in at.caption]
        at.slider(key="frame_at").set_value(3.0).run()
        assert not at.exception and len(at.get("image")) == 2
    finally:
        get_settings.cache_clear()


def test_a_kept_thumbnail_is_shown_without_a_review_copy_and_only_with_consent(world):
    """store_thumbnails kept one: shown even where video review is off, never against a recorded "no"."""
    from sqlalchemy import select

    from storage.models import Track

    url, data, sid = world["url"], world["data"], world["sid"]
    a = actor(world, 0)
    (f, *_) = [x for x in faces.unknown_faces(url, data, a, sid) if x.shown]
    thumb = faces.frame_at(url, data, a, sid, 0.0)  # any JPEG stands in for the pipeline's thumbnail
    with session_scope(url) as s:
        for tr in s.scalars(select(Track).where(Track.person_id == f.person_id)):
            tr.thumbnail = thumb
        review.set_group_setting(s, world["gid"], False, "head")
    try:
        kept = faces.face_of(url, data, a, f.person_id, sid)
        assert kept.shown and kept.source == "thumbnail" and kept.jpeg == thumb
        with pytest.raises(LookupError):
            faces.frame_at(url, data, a, sid, 0.0)  # the frame needs the copy, which review-off withholds
        with session_scope(url) as s:
            consent.withdraw(s, f.person_id, "thumbnails", "dpo")  # also deletes the kept thumbnail
        assert not faces.face_of(url, data, a, f.person_id, sid).shown
    finally:
        with session_scope(url) as s:
            review.set_group_setting(s, world["gid"], True, "head")


def test_in_a_consent_group_an_enrolled_child_needs_thumbnails_consent_too(world):
    from storage import people

    url, data, sid = world["url"], world["data"], world["sid"]
    a = actor(world, 0)
    (f, *_) = faces.unknown_faces(url, data, a, sid)
    with session_scope(url) as s:
        people.rename(s, f.person_id, "Zoe", "ms-art")  # named: enrolled
        consent.grant(s, f.person_id, "analysis", "dpo", "analysis form")
        consent.set_consent_required(s, world["gid"], True, "dpo")
    face = faces.face_of(url, data, a, f.person_id, sid)
    assert not face.shown
    assert face.reason == "no thumbnail: group Year 5 art requires consent and none is recorded for Zoe's face thumbnails"
    with session_scope(url) as s:
        consent.grant(s, f.person_id, "thumbnails", "dpo", "photo form")
    assert faces.face_of(url, data, a, f.person_id, sid).shown
