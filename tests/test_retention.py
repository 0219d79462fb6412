"""Retention: expired sessions go with everything derived from them, audited; others stay.

Runs on SQLite and on a throw-away PostgreSQL (tests/services.py) with the same assertions.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from affectline.queue import ANALYZE_TASK, RETENTION_TASK
from services import privacy
from services.actor import Actor, operator
from services.exports import export_session
from storage import consent, people, repo
from storage.db import migrate, session_scope
from storage.models import (
    AuditEntry,
    ClassBin,
    FeatureSeries,
    IdentityOverride,
    Job,
    Person,
    PersonEmbedding,
    Recording,
    Role,
    SessionKind,
    Tag,
    TimeBin,
    Track,
)
from tests.dashboard_factories import add_analysed_session

NOW = datetime.now(timezone.utc)
PER_SESSION = (TimeBin, FeatureSeries, Track, Tag, Job, ClassBin, IdentityOverride)


def _count(s, model, session_id: int) -> int:
    return s.scalar(select(func.count()).select_from(model).where(model.session_id == session_id))


def _backdate(url: str, session_id: int, days: float) -> None:
    with session_scope(url) as s:
        s.execute(update(Recording).where(Recording.id == session_id).values(created_at=NOW - timedelta(days=days)))


def _video(url: str, session_id: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video")
    with session_scope(url) as s:
        s.get(Recording, session_id).video_path = str(path)


@contextmanager
def _sqlite(settings):
    url = settings.resolved_database_url
    migrate(url)
    yield url


@contextmanager
def _postgres(settings):
    from tests.services import postgres_server

    with postgres_server() as url:
        migrate(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def world(request, settings, tmp_path):
    """Class A keeps sessions 30 days: an expired session (uploaded video, tag, override, class
    aggregates, a derived report, an enrolled person), an expired one analysed in place from a
    video outside the uploads folder, and a fresh one; class B keeps everything forever."""
    with (_sqlite if request.param == "sqlite" else _postgres)(settings) as url:
        with session_scope(url) as s:
            a = repo.get_or_create_group(s, "Class A", SessionKind.classroom).id
            b = repo.get_or_create_group(s, "Class B", SessionKind.classroom).id
        old, old_pids = add_analysed_session(url, a, SessionKind.classroom, "old lesson", 3, seed=1)
        outside, _ = add_analysed_session(url, a, SessionKind.classroom, "old, in place", 2, seed=2)
        fresh, fresh_pids = add_analysed_session(url, a, SessionKind.classroom, "fresh lesson", 2, seed=3)
        forever, _ = add_analysed_session(url, b, SessionKind.classroom, "class B lesson", 2, seed=4)
        with session_scope(url) as s:
            ada = people.enroll(s, old, 0, "Ada", "test")  # an enrolled person outlives the session
            people.enroll(s, fresh, 0, "Ada", "test")
            tag = Tag(uid=str(uuid.uuid4()), session_id=old, person_id=old_pids[1], t_start=1, t_end=3, label="happy",
                      author="test")  # fmt: skip
            s.add(tag)
            s.add(IdentityOverride(session_id=old, person_id=ada.id, t_start=0, t_end=5, vector=b"\0" * 512,
                                   created_by="test"))  # fmt: skip
            s.add(ClassBin(session_id=old, t_start=0.0, t_end=1.0, n_faces=2, n_visible=1, engagement=0.4))
            consent.set_retention(s, a, 30, "test")
            ada_id = ada.id
        uploads = settings.data_dir / "uploads"
        _video(url, old, uploads / "20261001T000000_abcd1234_old.mp4")
        _video(url, outside, tmp_path / "elsewhere" / "lesson.mp4")
        _video(url, fresh, uploads / "20261201T000000_abcd1234_fresh.mp4")
        report = settings.data_dir / "sessions" / str(old) / "report.pdf"
        report.parent.mkdir(parents=True)
        report.write_bytes(b"%PDF-1.4")
        for sid, days in ((old, 40), (outside, 31), (fresh, 5), (forever, 400)):
            _backdate(url, sid, days)
        yield dict(url=url, a=a, b=b, old=old, outside=outside, fresh=fresh, forever=forever, ada=ada_id,
                   uploads=uploads, report=report, tmp=tmp_path)  # fmt: skip


def test_expired_sessions_go_with_everything_derived_and_are_audited(world, settings):
    url, old, outside = world["url"], world["old"], world["outside"]
    with session_scope(url) as s:
        before = {m.__tablename__: _count(s, m, old) + _count(s, m, outside) for m in PER_SESSION}
        unknown_before = s.scalar(select(func.count(Person.id)).where(Person.origin_session_id.in_([old, outside])))
        kept_before = {sid: {m.__tablename__: _count(s, m, sid) for m in PER_SESSION}
                       for sid in (world["fresh"], world["forever"])}  # fmt: skip
    assert all(before[m.__tablename__] > 0 for m in PER_SESSION), before
    admin = operator("records officer")

    rep = privacy.run_retention(url, admin, settings.data_dir)

    assert sorted(d.session_id for d in rep.deleted) == sorted([old, outside])
    with session_scope(url) as s:
        for sid in (old, outside):
            assert s.get(Recording, sid) is None
            assert {m.__tablename__: _count(s, m, sid) for m in PER_SESSION} == dict.fromkeys(before, 0)
        assert s.scalar(select(func.count(Person.id)).where(Person.origin_session_id.in_([old, outside]))) == 0
        # What belongs to the group stays: the enrolled person and her face embedding.
        assert s.get(Person, world["ada"]) is not None
        assert s.scalar(select(func.count(PersonEmbedding.id)).where(PersonEmbedding.person_id == world["ada"])) == 2
        for sid, counts in kept_before.items():
            assert {m.__tablename__: _count(s, m, sid) for m in PER_SESSION} == counts
        rows = {e.target: e for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "retention_delete_session"))}
        run = s.scalar(select(AuditEntry).where(AuditEntry.action == "retention_run"))
    # Files: the uploaded video and the derived report are gone; the in-place video is the owner's.
    assert not (world["uploads"] / "20261001T000000_abcd1234_old.mp4").exists()
    assert not world["report"].parent.exists()
    assert (world["tmp"] / "elsewhere" / "lesson.mp4").exists()
    assert (world["uploads"] / "20261201T000000_abcd1234_fresh.mp4").exists()
    assert sorted(rep.files_removed) == sorted([str((world["uploads"] / "20261001T000000_abcd1234_old.mp4").resolve()),
                                                str(world["report"].parent)])  # fmt: skip
    # Audited, one row per session, with the rows removed; the counts add up to what was there.
    assert set(rows) == {f"session:{old}", f"session:{outside}"}
    assert {e.actor for e in rows.values()} == {admin.audit_name} == {"os:" + admin.username[3:] + " (as records officer)"}
    audited = {}
    for e in rows.values():
        for k, v in e.detail["rows"].items():
            audited[k] = audited.get(k, 0) + v
    assert {k: audited.get(k, 0) for k in before} == before
    assert audited["persons"] == unknown_before and audited["sessions"] == 2
    assert rows[f"session:{old}"].detail["title"] == "old lesson" == rows[f"session:{old}"].target_label
    assert run.actor == admin.audit_name and sorted(run.detail["sessions"]) == sorted([old, outside])
    assert rep.total_rows == sum(audited.values())
    # Exports of expired data are gone too.
    with pytest.raises(LookupError, match=f"session {old}"):
        export_session(url, admin, old, "csv")
    # A second run finds nothing more (idempotent).
    assert privacy.run_retention(url, admin, settings.data_dir).deleted == []


def test_cli_lists_dry_runs_and_runs_retention(world, settings, monkeypatch):
    from cli.main import main

    if not world["url"].startswith("sqlite"):
        monkeypatch.setenv("AFFECTLINE_DATABASE_URL", world["url"])
    from affectline.settings import get_settings

    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["retention", "list"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "\tClass A\t" in ln)
    assert line.split("\t")[4:] == ["30", "3", "2"]
    r = CliRunner().invoke(main, ["retention", "run", "--dry-run"])
    assert r.exit_code == 0 and "would delete 2 expired session(s)" in r.output
    with session_scope(world["url"]) as s:
        assert s.get(Recording, world["old"]) is not None
    r = CliRunner().invoke(main, ["--as", "dpo", "retention", "run"])
    assert r.exit_code == 0, r.output
    assert "deleted 2 expired session(s)" in r.output
    with session_scope(world["url"]) as s:
        assert s.get(Recording, world["old"]) is None and s.get(Recording, world["fresh"]) is not None
        actors = set(s.scalars(select(AuditEntry.actor).where(AuditEntry.action == "retention_delete_session")))
    assert len(actors) == 1 and actors.pop().endswith("(as dpo)")
    r = CliRunner().invoke(main, ["retention", "set", "Class B", "0"])
    assert r.exit_code != 0 and "0" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["retention", "set", "No such class", "10"])
    assert r.exit_code == 1 and "group 'No such class' does not exist" in r.output


def test_beat_schedule_sends_the_retention_task_which_deletes_as_the_scheduler(world, settings, monkeypatch):
    from affectline.queue import make_celery
    from affectline.settings import get_settings
    from tasks.retention import ACTOR, register

    monkeypatch.setenv("AFFECTLINE_DATABASE_URL", world["url"])
    get_settings.cache_clear()
    app = make_celery(get_settings())
    assert app.conf.beat_schedule["retention"] == {"task": RETENTION_TASK, "schedule": 3600.0}
    register(app)
    assert app.tasks[RETENTION_TASK].apply().get() == 2  # what a worker does when beat sends it
    with session_scope(world["url"]) as s:
        assert s.get(Recording, world["old"]) is None
        actors = set(s.scalars(select(AuditEntry.actor).where(AuditEntry.action.in_(["retention_delete_session", "retention_run"]))))
    assert actors == {ACTOR} == {privacy.SCHEDULER.audit_name}


def test_retention_rules_need_an_administrator_and_sane_days(db_url):
    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "c", SessionKind.classroom).id
    teacher = Actor(7, "tina", Role.teacher, (g,))
    with pytest.raises(PermissionError, match="tina"):
        privacy.set_retention(db_url, teacher, g, 30)
    with pytest.raises(PermissionError):
        privacy.run_retention(db_url, teacher, None)
    admin = operator()
    for bad in (0, -3, 10**6):
        with pytest.raises(ValueError, match=f"retention of {bad} days"):
            privacy.set_retention(db_url, admin, g, bad)
    assert privacy.set_retention(db_url, admin, "c", 90).retention_days == 90
    assert privacy.set_retention(db_url, admin, g, None).retention_days is None
    with session_scope(db_url) as s:
        details = [e.detail for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "retention_set"))]
    assert [(d["before"], d["days"]) for d in details] == [(None, 90), (90, None)]


def test_a_running_analysis_holds_expiry_until_the_next_run_a_queued_one_does_not(db_url, settings):
    from storage.models import JobStatus

    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "c", SessionKind.classroom).id
        consent.set_retention(s, g, 1, "test")
    sid, _ = add_analysed_session(db_url, g, SessionKind.classroom, "twice", 1)
    with session_scope(db_url) as s:
        job = repo.create_job(s, ANALYZE_TASK, session_id=sid).id
        repo.update_job(s, job, status=JobStatus.running)
    _backdate(db_url, sid, 2)
    rep = privacy.run_retention(db_url, operator(), settings.data_dir)
    assert (rep.deleted, rep.skipped) == ([], [sid])
    with session_scope(db_url) as s:
        repo.update_job(s, job, status=JobStatus.queued)  # requeued: no longer running
    rep = privacy.run_retention(db_url, operator(), settings.data_dir)
    assert [d.rows["jobs"] for d in rep.deleted] == [2] and rep.skipped == []
    assert np.isclose(rep.total_rows, sum(rep.rows.values()))
    with session_scope(db_url) as s:
        runs = [e.detail["skipped_running"] for e in s.scalars(select(AuditEntry).where(AuditEntry.action == "retention_run"))]
    assert runs == [[sid], []]
