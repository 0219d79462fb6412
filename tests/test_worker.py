"""The CLI through a real Celery worker: embedded SQLite broker, and Redis + PostgreSQL with two workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

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
        "fatigue,distraction,angry,disgust,fear,happy,sad,surprise,neutral,academic_model,expression_model"
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
    from tests.services import postgres_server, redis_server

    with redis_server() as broker, postgres_server() as db:
        env = _env(tmp_path, AFFECTLINE_BROKER_URL=broker, AFFECTLINE_DATABASE_URL=db)
        migrate(db)
        workers = [
            subprocess.Popen([sys.executable, "-m", "celery", "-A", "ingest.tasks", "worker", "--pool", "solo",
                              "-n", f"w{i}@%h", "--loglevel", "INFO"], env=env, cwd=ROOT,
                             stdout=open(tmp_path / f"w{i}.log", "wb"), stderr=subprocess.STDOUT)  # fmt: skip
            for i in range(2)
        ]
        try:
            videos = [media_dir / "two_people_head_turns_270p.mp4", media_dir / "classroom_4students_270p.mp4"]
            procs = [
                subprocess.Popen([*CLI, "analyze", str(v), "--fps", "2", "--no-worker"], env=env, cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
                for v in videos
            ]
            outs = [p.communicate(timeout=600) for p in procs]
            assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=30)
        with session_scope(db) as s:
            jobs = s.scalars(select(Job)).all()
            assert [j.status for j in jobs] == [JobStatus.done, JobStatus.done]
            assert s.scalar(select(func.count(func.distinct(TimeBin.session_id)))) == 2
        logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
        assert sum(log.count("succeeded") for log in logs) == 2


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
