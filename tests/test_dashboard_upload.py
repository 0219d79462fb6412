"""The upload form (kind, group and fps chosen, never defaulted to a group) and live per-job / per-chunk progress."""

from __future__ import annotations

from dashboard.safe import shown

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth
from services import analyses, progress
from services.actor import actor_for_user
from storage import jobs, repo
from storage.db import session_scope
from storage.models import Job, JobStatus, Recording
from tests.dashboard_factories import Seeded, copy_seeded, make_seeded_template

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
VIDEO = ("lesson.mp4", b"\x00\x00\x00\x18ftypmp42" * 64, "video/mp4")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_seeded_template(tmp_path_factory.mktemp("seed"))


@pytest.fixture()
def ids(template, settings) -> Seeded:
    return copy_seeded(template, settings)


@pytest.fixture()
def url(settings, ids) -> str:
    return settings.resolved_database_url


@pytest.fixture()
def sent(monkeypatch) -> list[int]:
    out: list[int] = []
    monkeypatch.setattr(analyses, "send_analysis", lambda settings, job_id: out.append(job_id))
    return out


def page(user_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state[auth.USER_KEY] = user_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def newest(url: str) -> tuple[Recording, Job]:
    with session_scope(url) as s:
        rec = s.query(Recording).order_by(Recording.id.desc()).first()
        return rec, repo.latest_job(s, rec.id)


def test_teacher_must_choose_the_group_and_the_fps_is_what_they_chose(url, ids, sent):
    at = page(ids.users["teacher"])
    assert at.radio(key="upload_kind").options == ["classroom"]  # the only kind a teacher works with
    group = at.selectbox(key="upload_group")
    assert group.value is None and group.options == ["class-a"]
    at.file_uploader(key="upload_video").set_value(VIDEO)
    at.run()
    assert at.button(key="upload_button").disabled  # a video, but no group yet
    assert any("To start, choose a group." in c.value for c in at.caption)
    at.selectbox(key="upload_group").select(ids.groups["class-a"])
    at.number_input(key="upload_fps").set_value(2.5)
    at.run()
    assert not at.button(key="upload_button").disabled
    at.button(key="upload_button").click().run()
    assert not at.exception
    rec, job = newest(url)
    assert rec.group_id == ids.groups["class-a"] and job.params == {"analysis_fps": 2.5} and sent == [job.id]
    assert f"Session #{rec.id} saved in class-a; analysis job #{job.id} queued at 2.5 frames a second." in [
        shown(s.value) for s in at.success]  # fmt: skip


def test_an_fps_below_one_frame_a_bin_is_refused_before_the_upload_is_written(url, ids, sent, settings):
    """The form's minimum is one frame a bin; the service refuses below it before any byte is saved."""
    from dashboard import actions, data

    at = page(ids.users["teacher"])
    assert at.number_input(key="upload_fps").min == pytest.approx(1.0 / settings.bin_seconds)
    viewer = data.viewer_for(url, ids.users["teacher"])
    with pytest.raises(ValueError, match="0.5"):
        actions.enqueue_analysis(url, settings, viewer, "lesson.mp4", VIDEO[1], "classroom", ids.groups["class-a"],
                              analysis_fps=0.5)  # fmt: skip
    uploads = settings.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert sent == []


def test_admin_chooses_kind_then_group_and_the_upload_lands_there(url, ids, sent):
    at = page(ids.users["admin"])
    assert at.radio(key="upload_kind").value is None
    assert not [w for w in at.selectbox if w.key == "upload_group"]  # no group list before a kind
    at.radio(key="upload_kind").set_value("classroom").run()
    assert at.selectbox(key="upload_group").options == ["class-a", "class-b"]
    at.selectbox(key="upload_group").select(ids.groups["class-b"])  # not the alphabetically first
    at.file_uploader(key="upload_video").set_value(VIDEO)
    at.run()
    at.button(key="upload_button").click().run()
    rec, job = newest(url)
    assert rec.group_id == ids.groups["class-b"] and rec.kind.value == "classroom"
    assert job.params == {"analysis_fps": at.session_state["upload_fps"]}

    at.radio(key="upload_kind").set_value("therapy").run()
    assert at.selectbox(key="upload_group").options == ["child-x"] and at.selectbox(key="upload_group").value is None


def test_progress_per_job_and_per_chunk(url, ids):
    with session_scope(url) as s:
        job = repo.create_job(s, "affectline.analyze_session", session_id=ids.sessions["maths"])
        repo.update_job(s, job.id, status=JobStatus.running, phase="chunks", message="chunks 1/3 done")
        c0, c1, c2 = jobs.plan_chunks(s, job.id, "v1", [(0, 60), (60, 120), (120, 150)])
        c0.status, c0.progress = JobStatus.done, 1.0
        c1.status, c1.progress, c1.attempts = JobStatus.running, 0.5, 2
        s.flush()
        jobs.refresh_progress(s, job.id)
        other = repo.create_job(s, "affectline.analyze_session", session_id=ids.sessions["therapy"])  # queued
        jid, oid = job.id, other.id
    at = page(ids.users["admin"])
    bars = {shown(b.proto.text): b.proto.value for b in at.get("progress")}
    main = next(t for t in bars if "maths lesson" in t)
    assert "1 of 3 parts done, 1 in progress" in main and 45 <= bars[main] <= 55
    assert bars["part 1 · 00:00-01:00 · done"] == 100
    assert bars["part 2 · 01:00-02:00 · 50%, try 2"] == 50
    assert bars["part 3 · 02:00-02:30 · waiting"] == 0
    assert any("therapy lesson" in t and "Waiting for the analysis worker" in t for t in bars)

    # A teacher sees their class's job and its parts, not the therapy one.
    with session_scope(url) as s:
        teacher = actor_for_user(s, ids.users["teacher"])
    assert [j.id for j in progress.active_jobs(url, teacher)] == [jid]
    at = page(ids.users["teacher"])
    assert not any("therapy" in b.proto.text for b in at.get("progress")) and len(at.get("progress")) == 4
    assert oid != jid

    # The session's own page shows the same parts under its job's bar.
    at.query_params["session"] = str(ids.sessions["maths"])
    at.switch_page("views/session.py").run()
    assert not at.exception, [e.value for e in at.exception]
    bars = {shown(b.proto.text): b.proto.value for b in at.get("progress")}
    assert len(bars) == 4 and any("1 of 3 parts done, 1 in progress" in t for t in bars)
    assert bars["part 2 · 01:00-02:00 · 50%, try 2"] == 50 and bars["part 3 · 02:00-02:30 · waiting"] == 0
