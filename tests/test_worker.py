"""The CLI through a real Celery worker: embedded SQLite broker, and Redis + PostgreSQL with two workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from affectline.task_names import ANALYZE_TASK, RESCORE_TASK
from storage.db import migrate, session_scope
from storage.models import Job, JobStatus, TimeBin

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cli.main"]


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env.update(AFFECTLINE_DATA_DIR=str(tmp_path / "data"), AFFECTLINE_ACADEMIC_MODEL="cues", **extra)
    return env


@pytest.mark.slow
def test_analyze_through_a_real_local_worker(tmp_path: Path, media_dir: Path):
    env = _env(tmp_path)
    video = media_dir / "two_people_head_turns_270p.mp4"
    r = subprocess.run([*CLI, "analyze", str(video), "--fps", "2"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    session_id = int(r.stdout.strip().splitlines()[-1])
    assert "done: 2 persons" in r.stderr
    log = (tmp_path / "data" / "logs" / "worker.log").read_text()
    assert "affectline.analyze_session" in log and "succeeded" in log  # it really ran in the worker
    assert "affectline.analyze_chunk" in log and "affectline.link_job" in log  # as chunk and link tasks
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(TimeBin).where(TimeBin.session_id == session_id)) > 0

    out = tmp_path / "export.csv"
    r = subprocess.run([*CLI, "export", str(session_id), "--format", "csv", "-o", str(out)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    header = out.read_text().splitlines()[0]
    assert header == (
        "session_id,person_id,person_label,t_start,t_end,face_visible,engagement,neutrality,enjoyment,confusion,"
        "fatigue,distraction,angry,disgust,fear,happy,sad,surprise,neutral,readable,unreadable_reason,pose_reliable,academic_model,expression_model"
    )


def test_bad_input_exits_nonzero_with_one_line(tmp_path: Path):
    bad = tmp_path / "lesson.mp4"
    bad.write_text("this is a text file")
    r = subprocess.run([*CLI, "analyze", str(bad), "--eager"], env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and str(bad) in err[0] and "not a video file" in err[0]
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    with session_scope(url) as s:
        job = s.scalars(select(Job)).one()
        assert job.status == JobStatus.failed and str(bad) in job.error


@pytest.mark.slow
@pytest.mark.services
def test_two_workers_on_redis_and_postgres(tmp_path: Path, media_dir: Path):
    """Two workers share one lesson's chunks, then 20 short jobs at once all complete."""
    from tests.services import postgres_server, redis_server
    from tests.support import Workers, fault_env, submit, wait_job

    with redis_server() as broker, postgres_server() as db:
        env = fault_env(tmp_path, AFFECTLINE_BROKER_URL=broker, AFFECTLINE_DATABASE_URL=db)
        migrate(db)
        w = Workers(env, tmp_path / "logs")
        try:
            w.start("w0")
            w.start("w1")
            videos = [media_dir / "two_people_head_turns_270p.mp4", media_dir / "classroom_4students_270p.mp4"]
            procs = [
                subprocess.Popen([*CLI, "analyze", str(v), "--fps", "2", "--no-worker"], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
                for v in videos
            ]
            outs = [p.communicate(timeout=600) for p in procs]
            assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
            assert "done: 2 persons" in outs[0][1] and "done: 4 persons" in outs[1][1]
            logs = [(tmp_path / "logs" / f"w{i}.log").read_text() for i in range(2)]
            assert all("affectline.analyze_chunk" in log for log in logs)  # both workers took chunks
            with session_scope(db) as s:
                analyses = s.scalars(select(Job).where(Job.task == ANALYZE_TASK).order_by(Job.id)).all()
                assert [j.status for j in analyses] == [JobStatus.done, JobStatus.done]
                # each link then queued its session's re-scoring as a job of its own (it may still be running)
                rescores = s.scalars(select(Job).where(Job.task == RESCORE_TASK)).all()
                assert sorted(j.session_id for j in rescores) == sorted(j.session_id for j in analyses)
                assert all(j.status != JobStatus.failed for j in rescores), [j.error for j in rescores]
                assert s.scalar(select(func.count(func.distinct(TimeBin.session_id)))) == 2

            # Many jobs at once: 20 short ones (one chunk each) queued together on the same two workers.
            ids = [submit(db, env, videos[k % 2], chunk_seconds=60) for k in range(20)]
            for jid in ids:
                job = wait_job(db, jid, w, timeout=900)
                assert job.status == JobStatus.done, job.error
            with session_scope(db) as s:
                for jid in ids:
                    sid = s.get(Job, jid).session_id
                    n = s.scalar(select(func.count()).select_from(TimeBin).where(TimeBin.session_id == sid))
                    dup = s.scalar(
                        select(func.count()).select_from(
                            select(TimeBin.person_id, TimeBin.t_start).where(TimeBin.session_id == sid)
                            .group_by(TimeBin.person_id, TimeBin.t_start).having(func.count() > 1).subquery()
                        )
                    )  # fmt: skip
                    assert n > 0 and dup == 0
        finally:
            w.stop_all()


@pytest.mark.slow
def test_three_analyze_at_once_on_a_fresh_database(tmp_path: Path, media_dir: Path):
    """Three `affectline analyze` started together on a fresh data folder (was: `table audit_log already exists`)."""
    env = _env(tmp_path, AFFECTLINE_CHUNK_SECONDS="2", AFFECTLINE_TORCH_THREADS="1")
    video = media_dir / "two_people_head_turns_270p.mp4"
    procs = [subprocess.Popen([*CLI, "analyze", str(video), "--fps", "1"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]  # fmt: skip
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-1500:] for o in outs]
    assert all("Traceback" not in e and "done: 2 persons" in e for _, e in outs)
    assert sorted(int(o.strip().splitlines()[-1]) for o, _ in outs) == [1, 2, 3]


def test_users_cli_creates_grants_and_lists(tmp_path: Path):
    from click.testing import CliRunner

    from cli.main import main

    env = {"AFFECTLINE_DATA_DIR": str(tmp_path / "d")}
    from affectline.settings import get_settings

    r = CliRunner(env=env)
    get_settings.cache_clear()
    try:
        assert r.invoke(main, ["users", "add", "ms_a", "--role", "teacher", "--password", "chalk and talk"]).exit_code == 0
        out = r.invoke(main, ["users", "grant", "ms_a", "Year 9"])
        assert out.exit_code == 1 and "no group 'Year 9'; groups: none yet" in out.output
        listing = r.invoke(main, ["users", "list"])
        assert "ms_a\tteacher\tactive\tgroups: -" in listing.output
    finally:
        get_settings.cache_clear()
