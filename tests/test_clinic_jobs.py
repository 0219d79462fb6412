"""The link in two steps, and the clinicians' jobs leased and reaped like the analyses.

- the link stores the timelines and finishes the analysis job, then queues the session's re-scoring
  as a job of its own: a re-scoring error fails that job, never the analysis;
- a personalise or re-score job is leased (a second delivery of its message does nothing while the
  first worker holds it), and the reaper sends it again when its worker died or its message was lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from affectline.task_names import ANALYZE_TASK, PERSONALIZE_TASK, RESCORE_TASK
from storage import jobs, repo
from storage.db import session_scope
from storage.models import Job, JobStatus, SessionKind


@pytest.fixture()
def linkable(db_url, monkeypatch):
    """An analysis job in its link phase whose chunks 'link' to two tracks (the heavy parts stubbed)."""
    import tasks.store
    import tasks.chunks
    import pipeline.link

    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "Room 9", SessionKind.classroom).id
        sid = repo.create_recording(s, "/videos/x.mp4", SessionKind.classroom, group_id=g).id
        job = repo.create_job(s, ANALYZE_TASK, session_id=sid, params={"version": "v1", "analysis_fps": 2.0})
        job.phase = "link"
        jid = job.id
    stored = []
    monkeypatch.setattr(tasks.chunks, "load_results", lambda url, job_id, version: [SimpleNamespace(info=None)])
    monkeypatch.setattr(pipeline.link, "link_chunk_results",
                        lambda results, info, fps, st: SimpleNamespace(tracks=[1, 2]))  # fmt: skip
    monkeypatch.setattr(tasks.store, "store", lambda url, rid, out, st: stored.append(rid))
    return SimpleNamespace(url=db_url, session=sid, job=jid, stored=stored)


def _jobs(url: str, task: str) -> list[Job]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Job).where(Job.task == task).order_by(Job.id)))
        s.expunge_all()
        return rows


def test_a_rescoring_error_does_not_fail_an_analysis_whose_timelines_are_stored(linkable, settings, monkeypatch):
    import clinic.rescore
    from tasks.analysis import run_link

    def broken(url, session_id, st=None):
        raise RuntimeError("population model file is corrupt")

    monkeypatch.setattr(clinic.rescore, "population_rescore", broken)
    assert run_link(linkable.job, settings)  # no sender: the re-scoring runs here, after the job is done
    assert linkable.stored == [linkable.session]
    (analysis,) = _jobs(linkable.url, ANALYZE_TASK)
    assert analysis.status == JobStatus.done and analysis.message == "done: 2 persons" and analysis.error is None
    (rescore,) = _jobs(linkable.url, RESCORE_TASK)
    assert rescore.session_id == linkable.session and rescore.person_id is None
    assert rescore.status == JobStatus.failed and "population model file is corrupt" in rescore.error
    with session_scope(linkable.url) as s:  # the session's state follows its analysis, not the re-scoring
        assert repo.latest_job(s, linkable.session).id == analysis.id
        assert repo.active_job(s, linkable.session) is None


def test_the_link_queues_the_rescoring_by_task_name_after_finishing(linkable, settings):
    from tasks.analysis import run_link

    sent = []

    def send(jid: int) -> None:
        with session_scope(linkable.url) as s:  # the analysis is done before the re-scoring is sent
            sent.append((jid, s.get(Job, linkable.job).status))

    assert run_link(linkable.job, settings, send_rescore=send)
    (rescore,) = _jobs(linkable.url, RESCORE_TASK)
    assert sent == [(rescore.id, JobStatus.done)] and rescore.status == JobStatus.queued


def test_a_clinic_job_is_leased_so_a_second_delivery_does_nothing(db_url, settings, monkeypatch):
    import clinic.rescore
    from tasks.clinic import run_rescore_job

    calls = []
    monkeypatch.setattr(clinic.rescore, "population_rescore", lambda url, sid, st=None: calls.append(sid) or 7)
    with session_scope(db_url) as s:
        sid = repo.create_recording(s, "/videos/y.mp4", SessionKind.classroom).id
        jid = repo.create_job(s, RESCORE_TASK, session_id=sid).id
        # another live worker holds it
        assert jobs.claim_job(s, jid, "plan", "elsewhere:1:tok", settings.lease_seconds) is not None
    run_rescore_job(jid, settings)
    assert calls == []
    with session_scope(db_url) as s:
        assert s.get(Job, jid).status == JobStatus.running
        s.execute(update(Job).where(Job.id == jid).values(lease_owner=None, lease_expires=None))
    run_rescore_job(jid, settings)  # free again: done once, then never again
    run_rescore_job(jid, settings)
    assert calls == [sid]
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.done and job.message == "7 bins re-scored" and job.lease_owner is None


def test_the_reaper_sends_clinic_jobs_again_when_lost_or_abandoned(db_url, settings):
    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "Caseload", SessionKind.therapy).id
        from storage.models import Person

        p = Person(label="Kit", group_id=g, enrolled=True)
        s.add(p)
        s.flush()
        lost = repo.create_job(s, PERSONALIZE_TASK, person_id=p.id).id  # its message never arrived
        fresh = repo.create_job(s, RESCORE_TASK, person_id=p.id).id  # just created: its sender sends it
        dead = repo.create_job(s, RESCORE_TASK, person_id=p.id).id  # its worker died holding it
        live = repo.create_job(s, RESCORE_TASK, person_id=p.id).id  # a live worker holds it
        old = jobs.utcnow() - timedelta(seconds=settings.requeue_after_s + 5)
        s.execute(update(Job).where(Job.id == lost).values(created_at=old))
        jobs.claim_job(s, dead, "plan", "gone:1:x", 30.0, now=old)
        jobs.claim_job(s, live, "plan", "alive:2:y", 30.0)
    with session_scope(db_url) as s:
        found = jobs.reap_one_phase(s, (PERSONALIZE_TASK, RESCORE_TASK), settings.requeue_after_s)
    assert sorted((r.kind, r.id, r.task) for r in found) == [("task", lost, PERSONALIZE_TASK), ("task", dead, RESCORE_TASK)]
    assert fresh not in {r.id for r in found}
    with session_scope(db_url) as s:  # marked sent: a second reaper pass right after sends nothing twice
        assert jobs.reap_one_phase(s, (PERSONALIZE_TASK, RESCORE_TASK), settings.requeue_after_s) == []


def test_the_reaper_of_a_worker_resends_a_clinic_job_by_its_task_name(db_url, settings):
    from tasks.lease import Reaper

    with session_scope(db_url) as s:
        sid = repo.create_recording(s, "/videos/z.mp4", SessionKind.classroom).id
        jid = repo.create_job(s, RESCORE_TASK, session_id=sid).id
        s.execute(update(Job).where(Job.id == jid).values(created_at=jobs.utcnow() - timedelta(hours=1)))
    sent = []
    app = SimpleNamespace(send_task=lambda name, args, **kw: sent.append((name, args)))
    Reaper(app, settings).once()
    assert sent == [(RESCORE_TASK, [jid])]


def test_importing_the_tasks_module_builds_nothing(tmp_path):
    """No Celery app, data folder or broker queues at import; ``app`` builds them, with every task."""
    data = tmp_path / "data"
    code = ("import os, sys, tasks.app as t; assert not os.path.exists(sys.argv[1]), 'data dir made at import';"
            "names = set(t.app.tasks); import affectline.task_names as n;"
            "assert {n.ANALYZE_TASK, n.CHUNK_TASK, n.LINK_TASK, n.PERSONALIZE_TASK, n.RESCORE_TASK, n.RETENTION_TASK} <= names;"
            "assert os.path.exists(sys.argv[1]); print('ok')")  # fmt: skip
    env = {**os.environ, "AFFECTLINE_DATA_DIR": str(data)}
    env.pop("AFFECTLINE_BROKER_URL", None)
    r = subprocess.run([sys.executable, "-c", code, str(data)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]
