"""Review copies in real analysis jobs: chunks write parts, the link joins them; the group setting
decides; deletion and retention remove them (issue 19)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from affectline.queue import ANALYZE_TASK
from cli.main import main
from storage import review
from storage.db import session_scope
from storage.models import AuditEntry, Job, JobStatus, Recording
from storage.repo import create_job, create_recording, get_or_create_group
from tests.paths import MEDIA

VIDEO = MEDIA / "two_people_head_turns_270p.mp4"  # 56 frames at 12.5 fps: every frame is a review frame


@pytest.fixture(scope="module")
def pipeline():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        yield p


def analyse(url: str, settings, pipeline, group: str, kind: str) -> int:
    from tasks.eager import run_analysis

    with session_scope(url) as s:
        g = get_or_create_group(s, group, kind)
        sid = create_recording(s, str(VIDEO), kind, group_id=g.id).id
        jid = create_job(s, ANALYZE_TASK, session_id=sid, params={"analysis_fps": 2.0}).id
    # 2 s chunks: three parts joined by the link.
    run_analysis(jid, settings.model_copy(update={"chunk_seconds": 2.0}), pipeline=pipeline)
    with session_scope(url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.done, job.error
        assert job.chunks_total == 3
    return sid


def stored(url: str, settings, sid: int) -> Path | None:
    with session_scope(url) as s:
        return review.resolve(settings.data_dir, s.get(Recording, sid).review_path)


def test_a_therapy_session_gets_a_review_copy_a_class_only_when_the_school_allows(db_url, settings, pipeline,
                                                                                  monkeypatch):  # fmt: skip
    sid = analyse(db_url, settings, pipeline, "Sam (OT)", "therapy")
    path = stored(db_url, settings, sid)
    assert path == review.copy_path(settings.data_dir, sid).resolve()
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and (v.width, v.height) == (480, 270)
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    assert times == pytest.approx([k / 12.5 for k in range(56)], abs=1e-6)  # every source frame, at its time
    assert not review.parts_dir(settings.data_dir, sid).exists()  # parts joined, then removed
    with session_scope(db_url) as s:
        assert "review copy ready" in s.scalar(select(Job.message).where(Job.session_id == sid))

    # A classroom: off by default, nothing written at all.
    cls = analyse(db_url, settings, pipeline, "Year 9 maths", "classroom")
    assert stored(db_url, settings, cls) is None
    assert not (settings.data_dir / "sessions" / str(cls)).exists()

    # The school turns it on (audited), and the next analysis keeps one.
    monkeypatch.setenv("USER", "head")
    r = CliRunner().invoke(main, ["groups", "video-review", "Year 9 maths", "on"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["groups", "list"])
    assert "Year 9 maths\tclassroom\ton (set)" in r.output and "Sam (OT)\ttherapy\ton (default)" in r.output
    cls2 = analyse(db_url, settings, pipeline, "Year 9 maths", "classroom")
    assert stored(db_url, settings, cls2) is not None
    with session_scope(db_url) as s:
        e = s.scalar(select(AuditEntry).where(AuditEntry.action == "video_review_set"))
        assert e.target_label == "Year 9 maths" and e.detail["setting"] is True and e.detail["before"] is None

    # Deleting the session removes its copy.
    r = CliRunner().invoke(main, ["sessions", "delete", str(cls2), "--yes"])
    assert r.exit_code == 0, r.output
    assert not (settings.data_dir / "sessions" / str(cls2)).exists()

    # Retention removes an expired session's copy with the rest.
    from datetime import timedelta

    from storage import consent, retention
    from storage.consent import now

    with session_scope(db_url) as s:
        consent.set_retention(s, s.get(Recording, sid).group_id, 1, "dpo")
        s.get(Recording, sid).created_at = now() - timedelta(days=3)
    rep = retention.run(db_url, "dpo", settings.data_dir)
    assert [d.session_id for d in rep.deleted] == [sid]
    assert not path.exists() and str(path.parent) in rep.files_removed


def test_turning_review_off_stops_new_copies(db_url, settings, pipeline):
    with session_scope(db_url) as s:
        g = get_or_create_group(s, "Ada (SLT)", "therapy")
        assert review.set_group_setting(s, g.id, False, "dpo") is False
    sid = analyse(db_url, settings, pipeline, "Ada (SLT)", "therapy")
    assert stored(db_url, settings, sid) is None
    assert not (settings.data_dir / "sessions" / str(sid)).exists()


def test_a_copy_path_outside_the_data_dir_is_never_served(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    assert review.resolve(tmp_path / "data", "../secret.mp4") is None
    assert review.resolve(tmp_path / "data", None) is None
