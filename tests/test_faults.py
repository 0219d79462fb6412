"""Faults with real processes: a worker SIGKILLed or frozen mid-chunk, Redis restarted, PostgreSQL
stopped and started mid-job. Each faulted job must end with exactly the bins of an
uninterrupted run of the same workers: zero duplicate, zero missing.

Short real footage (4.5 s, two persons) cut into 1 s chunks at 2 fps; leases of 6 s so a
frozen worker's chunk is taken again within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from storage.db import migrate, session_scope
from storage.models import Job, JobChunk, JobStatus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
CLIP = "two_people_head_turns_270p.mp4"


def fault_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env.update({
        "AFFECTLINE_DATA_DIR": str(tmp_path / "data"), "AFFECTLINE_ACADEMIC_MODEL": "cues",
        "AFFECTLINE_TORCH_THREADS": "1", "AFFECTLINE_CHUNK_SECONDS": "1", "AFFECTLINE_LEASE_SECONDS": "6",
        "AFFECTLINE_REQUEUE_AFTER_S": "15", **extra,
    })  # fmt: skip
    return env


class Workers:
    """Real Celery worker processes (solo pool, as `affectline worker` runs them)."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "celery", "-A", "ingest.tasks", "worker", "--pool", "solo", "-n", f"{name}@%h",
               "-Q", "affectline.control,celery", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
        p = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=open(self.logs / f"{name}.log", "ab"),
                             stderr=subprocess.STDOUT)  # fmt: skip
        self.procs[name] = p
        return p

    def by_pid(self, pid: int) -> str | None:
        return next((n for n, p in self.procs.items() if p.pid == pid and p.poll() is None), None)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(self.logs.glob("*.log")))


# What both job-submitting scripts start with: the database and the group the jobs go to.
_SUBMIT_PRELUDE = (
    "import sys; from affectline.settings import get_settings; from services.actor import operator;"
    "from services.analyses import create_analysis, send_analysis; from services.db import scope; from storage import repo\n"
    "from storage.models import Job\n"
    "u = get_settings().resolved_database_url\n"
    "with scope(u) as s: g = repo.get_or_create_group(s, 'Year 5', 'classroom').id\n"
)


def submit(url: str, env: dict, video: Path, chunk_seconds: float | None = None) -> int:
    """A session and its job, enqueued by name as the CLI and dashboard do. ``chunk_seconds`` goes in
    the job's params (the planning worker's AFFECTLINE_CHUNK_SECONDS otherwise)."""
    code = (
        _SUBMIT_PRELUDE +
        "rid, jid = create_analysis(u, operator(None), sys.argv[1], 'classroom', g, float(sys.argv[3]))\n"
        "if sys.argv[2] != '-':\n"
        "    with scope(u) as s: j = s.get(Job, jid); j.params = {**j.params, 'chunk_seconds': float(sys.argv[2])}\n"
        "send_analysis(get_settings(), jid); print(jid)"
    )
    fps = env.get("AFFECTLINE_ANALYSIS_FPS", "2.0")
    args = [str(video), "-" if chunk_seconds is None else str(chunk_seconds), fps]
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


def submit_many(env: dict, video: Path, n: int, chunk_seconds: float) -> list[int]:
    """``n`` jobs created, then enqueued, by one process as fast as it can (a class's uploads at once)."""
    code = (
        _SUBMIT_PRELUDE +
        "ids = []\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    rid, jid = create_analysis(u, operator(None), sys.argv[1], 'classroom', g, float(sys.argv[4]))\n"
        "    with scope(u) as s: j = s.get(Job, jid); j.params = {**j.params, 'chunk_seconds': float(sys.argv[3])}\n"
        "    ids.append(jid)\n"
        "for jid in ids: send_analysis(get_settings(), jid)\n"
        "print(' '.join(map(str, ids)))"
    )
    args = [str(video), str(n), str(chunk_seconds), env.get("AFFECTLINE_ANALYSIS_FPS", "2.0")]
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return [int(x) for x in r.stdout.split()]


def wait_job(url: str, job_id: int, workers: Workers, timeout: float = 600) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with session_scope(url) as s:
                job = s.get(Job, job_id)
                if job.status not in (JobStatus.queued, JobStatus.running):
                    return job
        except Exception:  # the database is being restarted by the test
            pass
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s\n{workers.log()}")


def running_chunk(url: str, job_id: int, timeout: float = 300) -> tuple[int, str]:
    """Wait until a chunk of the job is being analysed; (chunk id, lease owner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(url) as s:
            c = s.scalar(select(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status == JobStatus.running,
                                                JobChunk.lease_owner.isnot(None)).limit(1))  # fmt: skip
            if c is not None:
                return c.id, c.lease_owner
        time.sleep(0.05)
    pytest.fail(f"no chunk of job {job_id} started in {timeout} s")


def bins_of(url: str, job_id: int) -> pd.DataFrame:
    from storage.repo import session_bins

    with session_scope(url) as s:
        sid = s.get(Job, job_id).session_id
        b = session_bins(s, sid)
    return b[["person_label", "t_start", "t_end", "face_visible", "engagement"]].sort_values(
        ["person_label", "t_start"], ignore_index=True
    )


def assert_same_bins(got: pd.DataFrame, ref: pd.DataFrame, what: str) -> None:
    assert len(ref) > 0
    assert not got.duplicated(["person_label", "t_start"]).any(), f"{what}: duplicate bins"
    assert got[["person_label", "t_start", "t_end"]].equals(ref[["person_label", "t_start", "t_end"]]), (
        f"{what}: bins differ from the uninterrupted run\n{got}\n{ref}"
    )
    assert (got["face_visible"].astype(bool) == ref["face_visible"].astype(bool)).all(), what
    assert np.allclose(got["engagement"].astype(float), ref["engagement"].astype(float), atol=1e-5, equal_nan=True), what


def chunk_rows(url: str, job_id: int) -> list[JobChunk]:
    with session_scope(url) as s:
        return list(s.scalars(select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.idx)))


def _kill_mid_chunk(url: str, job_id: int, workers: Workers, sig: int) -> tuple[int, str, float]:
    cid, owner = running_chunk(url, job_id)
    victim = workers.by_pid(int(owner.rsplit(":", 2)[1]))
    assert victim is not None, owner
    t = time.monotonic()
    workers.procs[victim].send_signal(sig)
    if sig == signal.SIGKILL:
        workers.procs[victim].wait()  # reaped by its parent, as a supervisor would
    return cid, owner, t


def test_sqlite_broker_worker_sigkilled_mid_chunk(tmp_path: Path, media_dir: Path):
    """The embedded default: kombu's SQLAlchemy transport never redelivers the dead worker's message;
    the other worker's reaper sends the chunk again."""
    env = fault_env(tmp_path)
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    migrate(url)
    w = Workers(env, tmp_path / "logs")
    try:
        w.start("a")
        w.start("b")
        ref_job = submit(url, env, media_dir / CLIP)
        assert wait_job(url, ref_job, w).status == JobStatus.done, w.log()
        ref = bins_of(url, ref_job)

        job = submit(url, env, media_dir / CLIP)
        cid, owner, _ = _kill_mid_chunk(url, job, w, signal.SIGKILL)
        done = wait_job(url, job, w)
        assert done.status == JobStatus.done, f"{done.error}\n{w.log()}"
        assert_same_bins(bins_of(url, job), ref, "after SIGKILL (SQLite broker)")
        killed = next(c for c in chunk_rows(url, job) if c.id == cid)
        assert killed.attempts == 2 and killed.status == JobStatus.done
    finally:
        w.stop_all()


@pytest.mark.services
def test_redis_postgres_faults(tmp_path: Path, media_dir: Path):
    """One set of workers on Redis + PostgreSQL: an uninterrupted job, then a worker SIGKILLed
    mid-chunk, a worker frozen (SIGSTOP: a machine gone from the network, its lease must expire),
    Redis restarted mid-job, and PostgreSQL stopped and started mid-job."""
    from tests.services import postgres_server, redis_server

    with redis_server() as broker, postgres_server() as db:
        env = fault_env(tmp_path, AFFECTLINE_BROKER_URL=broker, AFFECTLINE_DATABASE_URL=db)
        migrate(db)
        w = Workers(env, tmp_path / "logs")
        try:
            w.start("a")
            w.start("b")
            ref_job = submit(db, env, media_dir / CLIP)
            assert wait_job(db, ref_job, w).status == JobStatus.done, w.log()
            ref = bins_of(db, ref_job)
            assert ref["person_label"].nunique() == 2

            # SIGKILL mid-chunk; a new worker joins, as a supervisor would restart one.
            job = submit(db, env, media_dir / CLIP)
            cid, owner, _ = _kill_mid_chunk(db, job, w, signal.SIGKILL)
            w.start("c")
            done = wait_job(db, job, w)
            assert done.status == JobStatus.done, f"{done.error}\n{w.log()}"
            assert_same_bins(bins_of(db, job), ref, "after SIGKILL (Redis)")
            assert next(c for c in chunk_rows(db, job) if c.id == cid).attempts == 2

            # A frozen worker: alive but silent. Its lease expires, another worker redoes the chunk;
            # thawed later, it finds its lease gone and stores nothing.
            job = submit(db, env, media_dir / CLIP)
            cid, owner, _ = _kill_mid_chunk(db, job, w, signal.SIGSTOP)
            done = wait_job(db, job, w)
            frozen = w.by_pid(int(owner.rsplit(":", 2)[1]))
            w.procs[frozen].send_signal(signal.SIGCONT)
            assert done.status == JobStatus.done, f"{done.error}\n{w.log()}"
            assert_same_bins(bins_of(db, job), ref, "after SIGSTOP (Redis)")
            row = next(c for c in chunk_rows(db, job) if c.id == cid)
            assert row.attempts == 2 and row.status == JobStatus.done
            time.sleep(4)  # the thawed worker's heartbeat runs and gives up
            assert_same_bins(bins_of(db, job), ref, "after the frozen worker thawed")

            # Redis restarted mid-job (its append-only file keeps queued messages).
            job = submit(db, env, media_dir / CLIP)
            running_chunk(db, job)
            broker.restart(down_s=2.0)
            done = wait_job(db, job, w)
            assert done.status == JobStatus.done, f"{done.error}\n{w.log()}"
            assert_same_bins(bins_of(db, job), ref, "after a Redis restart")

            # PostgreSQL stopped for a few seconds mid-job, then started again.
            job = submit(db, env, media_dir / CLIP)
            running_chunk(db, job)
            db.stop()
            time.sleep(5)
            db.start()
            done = wait_job(db, job, w)
            assert done.status == JobStatus.done, f"{done.error}\n{w.log()}"
            assert_same_bins(bins_of(db, job), ref, "after a PostgreSQL restart")
        finally:
            w.stop_all()
