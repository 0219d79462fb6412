"""The Celery contract: one app factory and the task names.

The dashboard enqueues by these names with ``send_task`` and never imports the
worker code (which imports torch).

Delivery guarantees come from leases in the database (``storage.jobs``), not from the
broker: a task may be delivered twice or not at all after a crash, and the reaper in
every worker sends again what a dead worker held. The broker settings below only make
the common cases fast:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a prefork child killed by the OOM
  killer has its message requeued at once instead of acknowledged and dropped;
- Redis ``visibility_timeout`` far above the longest chunk, so Redis does not hand a
  running chunk to a second worker while the first still works on it (and if it did, the
  second would find the live lease and skip it);
- a result backend that works on both brokers (Redis, or SQLite beside the embedded
  broker), though our own tasks keep their state in the ``jobs``/``job_chunks`` tables.
"""

from __future__ import annotations

from celery import Celery

from affectline.settings import Settings, get_settings

ANALYZE_TASK = "affectline.analyze_session"  # plan: a job becomes chunk tasks
CHUNK_TASK = "affectline.analyze_chunk"  # one chunk of a job, on any worker
LINK_TASK = "affectline.link_job"  # stitch the chunks, store the timelines, rescore
PERSONALIZE_TASK = "affectline.personalize"
RESCORE_TASK = "affectline.rescore_person"
RETENTION_TASK = "affectline.retention_expire"  # delete expired sessions (beat schedule below)

VISIBILITY_TIMEOUT_S = 6 * 3600  # Redis: far above the longest chunk (a minute of video takes minutes)


def result_backend(s: Settings) -> str:
    broker = s.resolved_broker_url
    if broker.startswith(("redis://", "rediss://")):
        return broker
    if broker.startswith("sqla+"):
        return "db+" + broker.removeprefix("sqla+").replace("broker.db", "results.db")
    return "db+" + s.resolved_database_url


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    if s.resolved_broker_url.startswith("sqla+sqlite:"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("affectline", broker=s.resolved_broker_url, backend=result_backend(s))
    app.conf.update(
        task_acks_late=True,  # tasks are idempotent: a crashed worker's task is redone, not lost
        task_reject_on_worker_lost=True,  # a killed prefork child's message goes back to the queue
        worker_prefetch_multiplier=1,  # one chunk at a time per worker process
        task_ignore_result=True,  # job state lives in our own tables
        broker_connection_retry_on_startup=True,
        # `celery -A ingest.tasks beat` (or a worker with -B) deletes expired sessions on this schedule.
        beat_schedule={"retention": {"task": RETENTION_TASK, "schedule": s.retention_every_s}},
        broker_connection_max_retries=None,  # a Redis restart: keep reconnecting
        worker_cancel_long_running_tasks_on_connection_loss=False,  # leases, not the broker, decide
        task_default_queue="celery",
        task_routes={CHUNK_TASK: {"queue": s.chunk_queue}},
    )
    if s.resolved_broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S, "polling_interval": 0.5}
        app.conf.result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    # kombu's SQLAlchemy transport hands its transport options to create_engine, which
    # rejects unknown keys; the faster poll is only for brokers that accept it.
    elif not s.resolved_broker_url.startswith("sqla+"):
        app.conf.broker_transport_options = {"polling_interval": 0.5}
    if s.resolved_broker_url.startswith("sqla+sqlite:"):
        _prepare_sqlite_broker(app, s)
    return app


_prepared: set[str] = set()


def _prepare_sqlite_broker(app: Celery, s: Settings) -> None:
    """Create the embedded broker's tables and queue rows once, under a file lock.

    kombu creates them on first use with check-then-create, which races when several
    processes start on a fresh data folder at once (three ``affectline analyze``: "table
    kombu_queue already exists")."""
    url = s.resolved_broker_url
    if url in _prepared:
        return
    from filelock import FileLock
    from kombu import Queue

    path = url.removeprefix("sqla+sqlite:///")
    with FileLock(path + ".init.lock", timeout=300):
        with app.connection_for_write() as conn:
            for name in dict.fromkeys(["celery", s.chunk_queue]):
                Queue(name).bind(conn.default_channel).declare()
    _prepared.add(url)
