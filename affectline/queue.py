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

Queues: plan and link tasks go to ``CONTROL_QUEUE``, chunks to ``Settings.chunk_queue``, the
rest to ``celery``. Every worker consumes the control queue *first*, strictly: with 20 jobs
queued, a job's link (and a new job's plan, a second's work) runs as soon as a worker is
free instead of behind every other job's chunks. Neither broker does this by itself: Redis
rotates the queues a worker listens on and kombu's SQLAlchemy transport cycles through
them one after another (neither has message priorities we can use on both), so Redis gets
``queue_order_strategy`` = ``ControlFirst`` (its BRPOP then always lists the control queue
first) and the embedded broker a channel that asks the control queue first on every poll
(``SQLTransport``).
"""

from __future__ import annotations

from queue import Empty  # the standard library's (kombu's virtual channels raise it when a queue is empty)

from celery import Celery
from kombu.transport import sqlalchemy as _kombu_sqla
from kombu.utils.scheduling import FairCycle, priority_cycle

from affectline.settings import Settings, get_settings

from affectline.task_names import (  # noqa: F401  (the contract, re-exported where it always was)
    ANALYZE_TASK, CHUNK_TASK, CLINIC_TASKS, LINK_TASK, PERSONALIZE_TASK, REPORTS_TASK, RESCORE_TASK, RETENTION_TASK,
)

CONTROL_QUEUE = "affectline.control"  # plan and link tasks: taken before any chunk by every worker
VISIBILITY_TIMEOUT_S = 6 * 3600  # Redis: far above the longest chunk (a minute of video takes minutes)


def result_backend(s: Settings) -> str:
    broker = s.resolved_broker_url
    if broker.startswith(("redis://", "rediss://")):
        return broker
    if broker.startswith("sqla+"):
        return "db+" + broker.removeprefix("sqla+").replace("broker.db", "results.db")
    return "db+" + s.resolved_database_url


def worker_queues(s: Settings) -> list[str]:
    """What a worker consumes by default: the control queue, 'celery' (other tasks) and the chunk queue."""
    return list(dict.fromkeys([CONTROL_QUEUE, "celery", s.chunk_queue]))


def control_first(queues) -> list[str]:
    """``queues`` in order, with the control queue moved to the front."""
    qs = list(queues)
    return [q for q in qs if q == CONTROL_QUEUE] + [q for q in qs if q != CONTROL_QUEUE]


class ControlFirst(priority_cycle):
    """Redis ``queue_order_strategy``: BRPOP lists the control queue first, always (no rotation)."""

    def update(self, it):
        self.items[:] = control_first(it)


class _ControlFirstCycle(FairCycle):
    """Every poll tries the control queue, then the others in order (``FairCycle`` would resume
    after the queue it last took from, so plans and links alternated with chunks at best)."""

    def get(self, callback, **kwargs):
        for queue in control_first(self.resources):
            try:
                return self.fun(queue, callback, **kwargs)
            except self.predicate:
                continue
        raise self.predicate()


class _SQLChannel(_kombu_sqla.Channel):
    def _reset_cycle(self):
        self._cycle = _ControlFirstCycle(self._get_and_deliver, self._active_queues, Empty)


class SQLTransport(_kombu_sqla.Transport):
    """kombu's SQLAlchemy transport, control queue first (the embedded broker)."""

    Channel = _SQLChannel


def beat_schedule(s: Settings) -> dict[str, dict]:
    """What the beat sends: retention every ``retention_every_s``; group reports at 06:00 UTC on the day after
    each period (every day, Mondays, or the 1st) when ``group_reports_every`` is not off."""
    from celery.schedules import crontab

    out: dict[str, dict] = {"retention": {"task": RETENTION_TASK, "schedule": s.retention_every_s}}
    when = {"daily": crontab(minute=0, hour=6), "weekly": crontab(minute=0, hour=6, day_of_week=1),
            "monthly": crontab(minute=0, hour=6, day_of_month=1)}.get(s.group_reports_every)  # fmt: skip
    if when is not None:
        out["group_reports"] = {"task": REPORTS_TASK, "schedule": when, "args": (s.group_reports_every,)}
    return out


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    broker = s.resolved_broker_url
    if broker.startswith("sqla+sqlite:"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    if broker.startswith("sqla+"):
        # The same tables and messages as 'sqla+', through our transport class: kombu takes a
        # URL's 'x+' prefix as the transport and accepts a class only as broker_transport.
        app = Celery("affectline", broker=broker.removeprefix("sqla+"), backend=result_backend(s))
        app.conf.broker_transport = f"{__name__}:SQLTransport"
    else:
        app = Celery("affectline", broker=broker, backend=result_backend(s))
    app.conf.update(
        task_acks_late=True,  # tasks are idempotent: a crashed worker's task is redone, not lost
        task_reject_on_worker_lost=True,  # a killed prefork child's message goes back to the queue
        worker_prefetch_multiplier=1,  # one chunk at a time per worker process
        task_ignore_result=True,  # job state lives in our own tables
        broker_connection_retry_on_startup=True,
        # `celery -A tasks.app beat` (or a worker with -B): retention, and the scheduled group reports.
        beat_schedule=beat_schedule(s),
        broker_connection_max_retries=None,  # a Redis restart: keep reconnecting
        worker_cancel_long_running_tasks_on_connection_loss=False,  # leases, not the broker, decide
        task_default_queue="celery",
        task_routes={
            CHUNK_TASK: {"queue": s.chunk_queue},
            ANALYZE_TASK: {"queue": CONTROL_QUEUE},
            LINK_TASK: {"queue": CONTROL_QUEUE},
        },
    )
    if s.resolved_broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S, "polling_interval": 0.5,
                                             "queue_order_strategy": f"{__name__}:ControlFirst"}  # fmt: skip
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
            for name in worker_queues(s):
                Queue(name).bind(conn.default_channel).declare()
    _prepared.add(url)
