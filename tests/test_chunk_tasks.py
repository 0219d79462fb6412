"""Chunk rows and leases (storage.jobs), concurrent first use, and the chunked job on the real pipeline."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from affectline.queue import ANALYZE_TASK
from storage import jobs, repo
from storage.db import session_scope
from storage.models import Job, JobChunk, JobStatus, Recording, TimeBin

ROOT = Path(__file__).resolve().parents[1]
LEASE = 30.0


def _job(url: str, n_chunks: int = 3) -> tuple[int, list[int]]:
    """A job in its chunk phase with ``n_chunks`` queued chunk rows."""
    with session_scope(url) as s:
        g = repo.get_or_create_group(s, "Year 5", "classroom")
        rec = repo.create_recording(s, "/nonexistent/lesson.mp4", "classroom", group_id=g.id)
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": 2.0, "version": "v1"})
        jid = job.id
    with session_scope(url) as s:
        assert jobs.claim_job(s, jid, "plan", "planner", LEASE) is not None
        chunks = jobs.plan_chunks(s, jid, "v1", [(i * 10.0, (i + 1) * 10.0) for i in range(n_chunks)])
        assert jobs.enter_chunks(s, jid, "planner")
        return jid, [c.id for c in chunks]


def test_one_claim_wins_and_a_live_lease_is_respected(db_url):
    jid, (c0, c1, _) = _job(db_url)
    with session_scope(db_url) as s:
        assert jobs.claim_chunk(s, c0, "w1", LEASE) is not None
    with session_scope(db_url) as s:  # a duplicate message on another worker: skipped
        assert jobs.claim_chunk(s, c0, "w2", LEASE) is None
        assert jobs.claim_chunk(s, c1, "w2", LEASE) is not None
    with session_scope(db_url) as s:
        assert jobs.renew_chunk(s, c0, "w1", LEASE, progress=0.5)
        assert not jobs.renew_chunk(s, c0, "w2", LEASE)  # not w2's lease
        assert s.get(JobChunk, c0).lease_owner == "w1"


def test_expired_lease_is_reaped_once_and_taken_by_another_worker(db_url):
    jid, (c0, *_rest) = _job(db_url)
    with session_scope(db_url) as s:
        jobs.claim_chunk(s, c0, "dead-worker", LEASE)
        jobs.mark_sent(s, _rest)
    later = jobs.utcnow() + timedelta(seconds=LEASE + 1)
    with session_scope(db_url) as s:
        assert jobs.reap(s, ANALYZE_TASK, LEASE, 300, now=jobs.utcnow()) == []  # lease still live
    with session_scope(db_url) as s:
        found = jobs.reap(s, ANALYZE_TASK, LEASE, 300, now=later)
    assert found == [jobs.Resend("chunk", c0, None)]
    with session_scope(db_url) as s:  # a second reaper at the same moment finds nothing more
        assert jobs.reap(s, ANALYZE_TASK, LEASE, 300, now=later) == []
    with session_scope(db_url) as s:
        c = jobs.claim_chunk(s, c0, "w2", LEASE, now=later)
        assert c is not None and c.attempts == 2
    with session_scope(db_url) as s:  # the dead worker cannot store over the new owner
        assert not jobs.finish_chunk(s, c0, "dead-worker", b"late")
        assert jobs.finish_chunk(s, c0, "w2", b"result")
        assert s.get(JobChunk, c0).result == b"result"


def test_a_dead_process_of_this_machine_loses_its_lease_at_once(db_url):
    jid, (c0, *_r) = _job(db_url)
    with session_scope(db_url) as s:
        jobs.claim_chunk(s, c0, "host:1:dead", LEASE)
    with session_scope(db_url) as s:
        assert jobs.claim_chunk(s, c0, "w2", LEASE, dead=lambda o: o == "host:1:dead") is not None


def test_owner_dead_knows_live_gone_and_zombie_processes():
    import os
    import socket

    from tasks.lease import owner_dead, owner_id

    host = socket.gethostname()
    assert not owner_dead(owner_id())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    while p.poll() is None:
        pass
    assert owner_dead(f"{host}:{p.pid}:x")  # reaped: gone
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, z.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert owner_dead(f"{host}:{z.pid}:x")
    z.wait()
    assert not owner_dead(f"elsewhere:{os.getpid()}:x")  # another machine's: only expiry tells


def test_link_starts_exactly_once_and_progress_never_passes_its_total(db_url):
    jid, ids = _job(db_url)
    for i, cid in enumerate(ids):
        with session_scope(db_url) as s:
            jobs.claim_chunk(s, cid, f"w{i}", LEASE)
            jobs.renew_chunk(s, cid, f"w{i}", LEASE, progress=7.0)  # a hook overshooting ("6/5 frames")
            assert s.get(Job, jid).progress <= jobs.LINK_SHARE
            assert jobs.finish_chunk(s, cid, f"w{i}", b"r")
            started = jobs.start_link(s, jid)
        assert started == (i == len(ids) - 1)
    with session_scope(db_url) as s:
        assert not jobs.start_link(s, jid)  # the last chunk redelivered: no second link
        job = s.get(Job, jid)
        assert (job.phase, job.chunks_done, job.chunks_total) == ("link", 3, 3)
        assert job.progress == pytest.approx(jobs.LINK_SHARE)


def test_replanning_keeps_done_chunks_and_replaces_none(db_url):
    jid, ids = _job(db_url)
    with session_scope(db_url) as s:
        jobs.claim_chunk(s, ids[1], "w", LEASE)
        jobs.finish_chunk(s, ids[1], "w", b"kept")
    with session_scope(db_url) as s:
        jobs.fail_job(s, jid, "worker lost")
    with session_scope(db_url) as s:
        jobs.retry_job(s, jid, LEASE)
    with session_scope(db_url) as s:
        assert jobs.claim_job(s, jid, "plan", "p2", LEASE) is not None
        chunks = jobs.plan_chunks(s, jid, "v1", [(i * 10.0, (i + 1) * 10.0) for i in range(3)])
        assert [c.id for c in chunks] == ids  # same rows, none added
        assert [c.status for c in chunks] == [JobStatus.queued, JobStatus.done, JobStatus.queued]
        assert s.get(JobChunk, ids[1]).result == b"kept"
        assert s.scalar(select(func.count()).select_from(JobChunk)) == 3


def test_chunk_abandoned_too_often_fails_the_job(db_url):
    jid, (c0, *_r) = _job(db_url)
    t = jobs.utcnow()
    for k in range(jobs.MAX_ATTEMPTS):
        with session_scope(db_url) as s:
            assert jobs.claim_chunk(s, c0, f"w{k}", LEASE, now=t) is not None
        t += timedelta(seconds=LEASE + 1)
        with session_scope(db_url) as s:
            jobs.reap(s, ANALYZE_TASK, LEASE, 1e9, now=t)
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.failed and "abandoned 3 times" in job.error


def test_cancel_stops_the_lease_and_stale_jobs_are_visible(db_url):
    jid, (c0, *_r) = _job(db_url)
    with session_scope(db_url) as s:
        jobs.claim_chunk(s, c0, "w", LEASE)
    later = jobs.utcnow() + timedelta(seconds=3 * LEASE)
    with session_scope(db_url) as s:
        (v,) = jobs.job_views(s, LEASE, now=later)
        assert v.stale and "stale" in v.state
        assert not jobs.job_views(s, LEASE)[0].stale
        jobs.cancel_job(s, jid)
    with session_scope(db_url) as s:
        assert not jobs.renew_chunk(s, c0, "w", LEASE)  # the worker stops at its next step
        assert s.get(Job, jid).status == JobStatus.cancelled
        with pytest.raises(ValueError):
            jobs.cancel_job(s, jid)


def test_concurrent_first_use_migrates_once(tmp_path: Path):
    """Three processes open one fresh database at once (as three 'affectline analyze' do)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = f"from storage.db import migrate; migrate({url!r}); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-800:] for _, e in outs]
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config, get_engine

    head = ScriptDirectory.from_config(alembic_config(url)).get_heads()  # the newest migration, whichever it is
    with get_engine(url).connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == head


@pytest.mark.slow
def test_chunked_job_equals_one_pass_on_real_footage(tmp_path: Path, media_dir: Path, monkeypatch):
    """The real pipeline, cut into 1 s chunks through the job rows, finds the persons one pass finds,
    with every bin of the clip exactly once per person."""
    from affectline.settings import Settings
    from tasks.store import get_pipeline
    from tasks.eager import run_analysis
    from services.actor import operator
    from services.analyses import create_analysis
    from storage.db import migrate

    video = media_dir / "classroom_4students_270p.mp4"
    base = Settings(data_dir=tmp_path, academic_model="cues", torch_threads=1, analysis_fps=2.0)
    url = base.resolved_database_url
    migrate(url)
    pipeline = get_pipeline(base)
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "Year 5", "classroom").id
    runs = {}
    for chunk_s in (60.0, 1.0):
        st = base.model_copy(update={"chunk_seconds": chunk_s})
        rid, jid = create_analysis(url, operator(None), video, "classroom", gid, 2.0)
        run_analysis(jid, st, pipeline=pipeline)
        with session_scope(url) as s:
            job = s.get(Job, jid)
            assert job.status == JobStatus.done and job.progress == 1.0
            n_chunks = s.scalar(select(func.count()).select_from(JobChunk).where(JobChunk.job_id == jid))
            bins = repo.session_bins(s, rid)
        runs[chunk_s] = (n_chunks, bins)
    (n1, one), (n3, chunked) = runs[60.0], runs[1.0]
    assert n1 == 1 and n3 == 3  # 2.7 s clip: 0-1, 1-2, 2-2.7 s
    per = lambda b: sorted(b.groupby("person_id").size().tolist())  # noqa: E731
    assert per(chunked) == per(one)  # same persons, each with the same number of bins
    n_bins = int(-(-2.7 // 1.0))
    assert set(per(chunked)) == {n_bins}  # every bin of the clip, for every person
    assert not chunked.duplicated(["person_id", "t_start"]).any()
    assert chunked["t_end"].max() == pytest.approx(45 / 16.667, abs=1e-3)  # the last bin ends where the clip ends


def test_a_dead_planner_or_linker_is_replaced(db_url):
    """The job-level lease: a plan or link whose worker died is sent again after its lease, once."""
    jid, ids = _job(db_url, n_chunks=1)
    with session_scope(db_url) as s:
        jobs.claim_chunk(s, ids[0], "w", LEASE)
        jobs.finish_chunk(s, ids[0], "w", b"r")
        assert jobs.start_link(s, jid)
        assert jobs.claim_job(s, jid, "link", "linker", LEASE) is not None
    t = jobs.utcnow()
    with session_scope(db_url) as s:
        assert jobs.reap(s, ANALYZE_TASK, LEASE, 300, now=t + timedelta(seconds=LEASE / 2)) == []
    with session_scope(db_url) as s:
        assert jobs.reap(s, ANALYZE_TASK, LEASE, 300, now=t + timedelta(seconds=LEASE + 1)) == [jobs.Resend("link", jid)]
    with session_scope(db_url) as s:
        assert jobs.claim_job(s, jid, "link", "linker-2", LEASE) is not None
        assert not jobs.finish_job(s, jid, "linker", "late")  # the dead linker cannot finish it
        assert jobs.finish_job(s, jid, "linker-2", "done: 1 person")
        assert s.get(Job, jid).status == JobStatus.done


# --- chunk results: kept while a job may need them, dropped once it is done -----------------------


def _results(url: str, job_id: int) -> dict[tuple[str, int], bytes | None]:
    with session_scope(url) as s:
        return {(c.version, c.idx): c.result for c in jobs.job_chunks(s, job_id)}


def _finish_all(url: str, job_id: int, ids: list[int], owner: str = "w") -> None:
    for cid in ids:
        with session_scope(url) as s:
            if jobs.claim_chunk(s, cid, owner, LEASE) is not None:
                assert jobs.finish_chunk(s, cid, owner, b"result %d" % cid)


def test_done_job_drops_its_chunk_results_and_a_failed_one_keeps_them_for_retry(db_url):
    jid, ids = _job(db_url)
    _finish_all(db_url, jid, ids[:2])
    with session_scope(db_url) as s:
        jobs.fail_job(s, jid, "worker lost")
    assert [r is not None for r in _results(db_url, jid).values()] == [True, True, False]  # kept for the retry
    with session_scope(db_url) as s:
        jobs.retry_job(s, jid, LEASE)
        assert jobs.claim_job(s, jid, "plan", "p2", LEASE) is not None
        jobs.plan_chunks(s, jid, "v1", [(i * 10.0, (i + 1) * 10.0) for i in range(3)])
        assert jobs.enter_chunks(s, jid, "p2")
    assert _results(db_url, jid)[("v1", 0)] == b"result %d" % ids[0]  # the retry links from these
    _finish_all(db_url, jid, ids[2:])
    with session_scope(db_url) as s:
        assert jobs.start_link(s, jid)
        assert jobs.claim_job(s, jid, "link", "linker", LEASE) is not None
        assert not jobs.finish_job(s, jid, "someone-else", "done")  # not the linker: nothing dropped
    assert all(r is not None for r in _results(db_url, jid).values())
    with session_scope(db_url) as s:
        assert jobs.finish_job(s, jid, "linker", "done: 3 persons")
    got = _results(db_url, jid)
    assert len(got) == 3 and all(r is None for r in got.values())  # rows stay (progress), results go
    with session_scope(db_url) as s, pytest.raises(ValueError, match="nothing to retry"):
        jobs.retry_job(s, jid, LEASE)  # a done job is never re-linked


def test_replanning_under_a_new_version_drops_the_old_versions_results(db_url):
    jid, ids = _job(db_url)
    _finish_all(db_url, jid, ids)
    with session_scope(db_url) as s:
        jobs.fail_job(s, jid, "link failed")
        jobs.retry_job(s, jid, LEASE)
        assert jobs.claim_job(s, jid, "plan", "p2", LEASE) is not None
        s.get(Job, jid).params = {**s.get(Job, jid).params, "version": "v2"}
        new = jobs.plan_chunks(s, jid, "v2", [(0.0, 15.0), (15.0, 30.0)])
        assert jobs.enter_chunks(s, jid, "p2")
        jobs.refresh_progress(s, jid)
        assert s.get(Job, jid).chunks_done == 0  # the old version's done rows do not count
    got = _results(db_url, jid)
    assert all(got[("v1", i)] is None for i in range(3))
    _finish_all(db_url, jid, [c.id for c in new])
    assert all(got is not None for (v, _), got in _results(db_url, jid).items() if v == "v2")


def _chunk_rows(url: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(JobChunk))


def test_deleting_or_expiring_a_session_removes_its_chunk_rows(db_url):
    from storage import retention

    a, ids_a = _job(db_url)
    b, ids_b = _job(db_url)
    _finish_all(db_url, a, ids_a)
    _finish_all(db_url, b, ids_b)
    with session_scope(db_url) as s:
        jobs.fail_job(s, a, "x")  # not done: results kept until the session goes
        jobs.fail_job(s, b, "x")
        sa, sb = s.get(Job, a).session_id, s.get(Job, b).session_id
    assert _chunk_rows(db_url) == 6
    with session_scope(db_url) as s:
        repo.delete_session(s, sa, "admin")
    assert _chunk_rows(db_url) == 3
    with session_scope(db_url) as s:
        rows = retention.delete_session_rows(s, sb)
    assert rows["job_chunks"] == 3 and _chunk_rows(db_url) == 0


@pytest.mark.slow
def test_retried_job_equals_an_uninterrupted_run_and_keeps_no_chunk_results(tmp_path: Path, media_dir: Path):
    """Real footage in 1 s chunks: one job straight through; another failed after its first chunk
    (its stored result kept), retried and finished here. Same bins; no chunk result left."""
    from affectline.settings import Settings
    from tasks.store import get_pipeline
    from tasks.eager import run_analysis
    from tasks.chunks import run_chunk
    from tasks.analysis import run_job_here, run_plan
    from services.actor import operator
    from services.analyses import create_analysis
    from storage.db import migrate

    video = media_dir / "two_people_head_turns_270p.mp4"
    st = Settings(data_dir=tmp_path, academic_model="cues", torch_threads=1, analysis_fps=2.0, chunk_seconds=1.0)
    url = st.resolved_database_url
    migrate(url)
    pipeline = get_pipeline(st)
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "Year 5", "classroom").id

    def bins(rid):
        with session_scope(url) as s:
            b = repo.session_bins(s, rid)
        return b[["person_label", "t_start", "t_end", "engagement"]].sort_values(["person_label", "t_start"],
                                                                                ignore_index=True)  # fmt: skip

    r1, j1 = create_analysis(url, operator(None), video, "classroom", gid, 2.0)
    run_analysis(j1, st, pipeline=pipeline)
    assert all(r is None for r in _results(url, j1).values()) and len(_results(url, j1)) > 2

    r2, j2 = create_analysis(url, operator(None), video, "classroom", gid, 2.0)
    todo, _, _ = run_plan(j2, st)
    assert run_chunk(todo[0], st, pipeline=pipeline).status == "done"
    with session_scope(url) as s:
        jobs.fail_job(s, j2, "the worker's machine was switched off")
    kept = _results(url, j2)
    assert sum(r is not None for r in kept.values()) == 1
    with session_scope(url) as s:
        jobs.retry_job(s, j2, st.lease_seconds)
    run_job_here(j2, st, pipeline=pipeline)
    with session_scope(url) as s:
        job = s.get(Job, j2)
        assert job.status == JobStatus.done, job.error
        first = s.get(JobChunk, todo[0])
        assert first.attempts == 1  # the retry reused the stored chunk rather than redoing it
    assert all(r is None for r in _results(url, j2).values())
    a, b = bins(r1), bins(r2)
    assert len(a) > 0 and a["person_label"].nunique() == 2
    import numpy as np

    assert a[["person_label", "t_start", "t_end"]].equals(b[["person_label", "t_start", "t_end"]])
    assert np.allclose(a["engagement"].astype(float), b["engagement"].astype(float), atol=1e-5, equal_nan=True)


# --- the job's shape (chunk length, bin length, overlap, fps) is recorded once, at its first plan ------


def test_a_retry_planned_by_a_worker_with_another_env_keeps_the_recorded_shape(tmp_path: Path, media_dir: Path):
    from affectline.settings import Settings
    from tasks.analysis import run_plan
    from services.actor import operator
    from services.analyses import create_analysis
    from storage.db import migrate

    first = Settings(data_dir=tmp_path, chunk_seconds=1.0, bin_seconds=1.0)
    url = first.resolved_database_url
    migrate(url)
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "Year 5", "classroom").id
    _, jid = create_analysis(url, operator(None), media_dir / "classroom_4students_270p.mp4", "classroom", gid, 2.0)
    todo, _, _ = run_plan(jid, first)
    with session_scope(url) as s:
        params = dict(s.get(Job, jid).params)
        windows = [(c.t_start, c.t_end) for c in jobs.job_chunks(s, jid)]
        jobs.fail_job(s, jid, "the planner's machine went away")
        jobs.retry_job(s, jid, LEASE)
    assert (params["chunk_seconds"], params["bin_seconds"], params["overlap_s"], params["analysis_fps"]) == (1.0, 1.0, 2.0, 2.0)
    assert len(windows) == 3
    other = first.model_copy(update={"chunk_seconds": 60.0, "bin_seconds": 2.0, "analysis_fps": 4.0})
    again, _, _ = run_plan(jid, other)
    with session_scope(url) as s:
        job = s.get(Job, jid)
        assert job.params["version"] == params["version"]  # same shape: the same chunk rows
        assert sorted(again) == sorted(todo) and job.chunks_total == 3
        assert [(c.t_start, c.t_end) for c in jobs.job_chunks(s, jid)] == windows


def test_a_chunk_worker_with_another_bin_length_analyses_with_the_jobs(db_url, monkeypatch, media_dir: Path):
    """The worker's AFFECTLINE_BIN_SECONDS=2 does not change a job planned with 1 s bins: the job's shape
    goes with the chunk, and the models are asked for without it (one set of models for every shape)."""
    import tasks.store
    from affectline.settings import Settings
    from tasks.chunks import run_chunk

    jid, (c0, *_r) = _job(db_url)
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        job.params = {**job.params, "bin_seconds": 1.0, "overlap_s": 2.0}
        s.get(Recording, job.session_id).video_path = str(media_dir / "classroom_4students_270p.mp4")
    seen = {}

    class Fake:
        def analyse_chunk(self, src, window, shape, hook):
            seen.update(fps=shape.analysis_fps, overlap=shape.overlap_s, bin_seconds=shape.bin_seconds)
            return type("R", (), {"to_bytes": lambda self: b"r"})()

    def fake_pipeline(settings):
        seen["asked"] = settings  # the worker's own settings: the pipeline cache drops the job's fields
        return Fake()

    monkeypatch.setattr(tasks.store, "get_pipeline", fake_pipeline)
    worker = Settings(data_dir=Path(db_url.removeprefix("sqlite:///")).parent, bin_seconds=2.0, analysis_fps=4.0)
    assert run_chunk(c0, worker).status == "done"
    assert seen.pop("asked") is worker
    assert seen == {"bin_seconds": 1.0, "fps": 2.0, "overlap": 2.0}


def test_jobs_of_another_bin_length_share_one_set_of_loaded_models(monkeypatch):
    """The pipeline cache is keyed by the models' settings only: a job's bin length, frames a second
    or chunk length (pipeline.analyse.JOB_FIELDS) never loads a second set of models."""
    import tasks.store
    from affectline.settings import Settings

    built = []
    monkeypatch.setattr(tasks.store, "Pipeline", lambda s: built.append(s) or object())
    tasks.store._pipeline.cache_clear()
    try:
        a = tasks.store.get_pipeline(Settings(bin_seconds=1.0, analysis_fps=4.0, chunk_seconds=60.0))
        b = tasks.store.get_pipeline(Settings(bin_seconds=2.0, analysis_fps=2.0, chunk_seconds=30.0))
        c = tasks.store.get_pipeline(Settings(bin_seconds=2.0, academic_model="cues", detector="mtcnn", follow="detector"))
    finally:
        tasks.store._pipeline.cache_clear()
    assert a is b and len(built) == 2 and c is not a  # another model setting is another set


def test_cli_retry_requeues_a_failed_job_on_the_control_queue(db_url, settings):
    """'affectline jobs retry' after a failed link: the job is queued again (its chunk results
    kept) and its plan message waits on the control queue."""
    from click.testing import CliRunner
    from kombu import Queue

    from affectline.queue import CONTROL_QUEUE, make_celery
    from cli.main import main

    jid, ids = _job(db_url, n_chunks=2)
    _finish_all(db_url, jid, ids)
    with session_scope(db_url) as s:
        jobs.fail_job(s, jid, "linking the chunks failed")
    r = CliRunner().invoke(main, ["jobs", "retry", str(jid)])
    assert r.exit_code == 0, r.output
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert (job.status, job.phase) == (JobStatus.queued, "plan")
    assert all(v is not None for v in _results(db_url, jid).values())
    got = []
    with make_celery(settings).connection_for_read() as conn:

        def take(body, msg):
            got.append((msg.headers["task"], msg.delivery_info.get("routing_key"), body[0]))
            msg.ack()

        with conn.Consumer([Queue(CONTROL_QUEUE)], callbacks=[take]):
            conn.drain_events(timeout=10)
    assert got == [(ANALYZE_TASK, CONTROL_QUEUE, [jid])]


def test_the_result_version_changes_with_every_setting_that_changes_results():
    """Chunk results are reused under the same version only: a switch of landmarker, of how faces
    are followed or of the detector must not reuse chunks analysed the other way."""
    from affectline.settings import Settings
    from tasks.analysis import pipeline_version

    base = Settings()
    v = pipeline_version(base, 4.0, 2.0)
    assert v == pipeline_version(Settings(), 4.0, 2.0)
    for change in ({"landmarker": "mediapipe"}, {"follow": "detector"}, {"detector": "dlib_hog"}, {"embedder": "dlib"},
                   {"readable_min_iod_px": 20.0}, {"readable_min_sharpness": 10.0}):
        assert pipeline_version(base.model_copy(update=change), 4.0, 2.0) != v, change
    assert pipeline_version(base, 2.0, 2.0) != v
