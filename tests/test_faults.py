"""Faults with real processes: a worker SIGKILLed or frozen mid-chunk, Redis restarted, PostgreSQL
stopped and started mid-job. Each faulted job must end with exactly the bins of an
uninterrupted run of the same workers: zero duplicate, zero missing.

Short real footage (4.5 s, two persons) cut into 1 s chunks at 2 fps; leases of 6 s so a
frozen worker's chunk is taken again within seconds.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from storage.db import migrate
from storage.models import JobStatus
from tests.support import CLIP, Workers, assert_same_bins, bins_of, chunk_rows, fault_env, running_chunk, submit, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

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
