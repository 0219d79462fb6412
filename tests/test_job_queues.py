"""Queue priorities: plans and links (``affectline.control``) overtake chunks, on the embedded
broker (SQLite) and on Redis.

With one FIFO queue, 3 jobs queued at once on one worker ran plan 1-3, chunk 1-3, then link
1-3: the first job finished only after the last job's chunk. With the control queue taken
first, each job's link runs as soon as its last chunk is stored.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sqlalchemy import select

from affectline.queue import ANALYZE_TASK, CHUNK_TASK, CONTROL_QUEUE, LINK_TASK, make_celery
from affectline.settings import Settings
from storage.db import migrate, session_scope
from storage.models import Job, JobChunk, JobStatus
from tests.support import Workers, fault_env, submit_many, wait_job

CLIP = "classroom_4students_270p.mp4"  # 2.7 s: one 60 s chunk per job


def test_plan_and_link_are_routed_to_the_control_queue(tmp_path: Path):
    app = make_celery(Settings(data_dir=tmp_path, chunk_queue="gpu"))
    def route(name: str) -> str:
        return app.amqp.router.route({}, name)["queue"].name

    assert route(ANALYZE_TASK) == route(LINK_TASK) == CONTROL_QUEUE
    assert route(CHUNK_TASK) == "gpu"


def _drain_order(settings: Settings) -> list[str]:
    """Three chunk messages, then one link, to a consumer of both queues (control listed last)."""
    from kombu import Queue

    app = make_celery(settings)
    for i in range(3):
        app.send_task(CHUNK_TASK, args=[i], queue="celery")
    app.send_task(LINK_TASK, args=[99], queue=CONTROL_QUEUE)
    got: list[str] = []
    with app.connection_for_read() as conn:

        def take(body, msg):
            got.append(msg.headers["task"])
            msg.ack()

        with conn.Consumer([Queue("celery"), Queue(CONTROL_QUEUE)], callbacks=[take], prefetch_count=1):
            while len(got) < 4:
                conn.drain_events(timeout=10)
    return got


def test_embedded_broker_takes_the_control_queue_first(tmp_path: Path):
    assert _drain_order(Settings(data_dir=tmp_path)) == [LINK_TASK] + [CHUNK_TASK] * 3


@pytest.mark.services
def test_redis_takes_the_control_queue_first(tmp_path: Path):
    from tests.services import redis_server

    with redis_server() as broker:
        assert _drain_order(Settings(data_dir=tmp_path, broker_url=str(broker))) == [LINK_TASK] + [CHUNK_TASK] * 3


def _links_overtake_chunks(url: str, env: dict, tmp_path: Path, media_dir: Path) -> None:
    migrate(url)
    w = Workers(env, tmp_path / "logs")
    try:
        w.start("only")
        ids = submit_many(env, media_dir / CLIP, 3, 60.0)
        for jid in ids:
            assert wait_job(url, jid, w).status == JobStatus.done, w.log()
        with session_scope(url) as s:
            done = {j.id: j.finished_at for j in s.scalars(select(Job).where(Job.id.in_(ids)))}
            started = {c.job_id: c.started_at for c in s.scalars(select(JobChunk).where(JobChunk.job_id.in_(ids)))}
        for a, b in itertools.pairwise(ids):
            # job a was linked (done) before the worker began job b's chunk
            assert done[a] <= started[b], f"job {a} done {done[a]}, job {b}'s chunk started {started[b]}\n{w.log()}"
    finally:
        w.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_links_overtake_chunks_on_the_embedded_broker(tmp_path: Path, media_dir: Path):
    env = fault_env(tmp_path, AFFECTLINE_REQUEUE_AFTER_S="600")  # no re-sends muddling the order
    _links_overtake_chunks(f"sqlite:///{tmp_path / 'data' / 'affectline.db'}", env, tmp_path, media_dir)


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(900)
def test_links_overtake_chunks_on_redis_and_postgres(tmp_path: Path, media_dir: Path):
    from tests.services import postgres_server, redis_server

    with redis_server() as broker, postgres_server() as db:
        env = fault_env(tmp_path, AFFECTLINE_BROKER_URL=str(broker), AFFECTLINE_DATABASE_URL=str(db),
                        AFFECTLINE_REQUEUE_AFTER_S="600")  # fmt: skip
        _links_overtake_chunks(str(db), env, tmp_path, media_dir)
