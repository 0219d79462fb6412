"""The Celery contract: one app factory and the task names.

The dashboard enqueues by these names with ``send_task`` and never imports the
worker code (which imports torch).
"""

from __future__ import annotations

from celery import Celery

from affectline.settings import Settings, get_settings

ANALYZE_TASK = "affectline.analyze_session"
PERSONALIZE_TASK = "affectline.personalize"
RESCORE_TASK = "affectline.rescore_person"
RETENTION_TASK = "affectline.retention_expire"  # delete expired sessions (beat schedule below)


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    if s.resolved_broker_url.startswith("sqla+sqlite:"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("affectline", broker=s.resolved_broker_url)
    app.conf.update(
        task_acks_late=True,  # tasks are idempotent: a crashed worker's job is redone, not lost
        worker_prefetch_multiplier=1,  # one long video at a time per worker process
        task_ignore_result=True,  # job state lives in our own `jobs` table
        broker_connection_retry_on_startup=True,
        # `celery -A ingest.tasks beat` (or a worker with -B) deletes expired sessions on this schedule.
        beat_schedule={"retention": {"task": RETENTION_TASK, "schedule": s.retention_every_s}},
    )
    # kombu's SQLAlchemy transport hands its transport options to create_engine, which
    # rejects unknown keys; the faster poll is only for brokers that accept it.
    if not s.resolved_broker_url.startswith("sqla+"):
        app.conf.broker_transport_options = {"polling_interval": 0.5}
    return app
