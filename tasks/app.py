"""Celery tasks. Start a worker with ``celery -A tasks.app worker`` (or ``affectline worker``).

Tasks take ids, re-read their rows and lease them (``storage.jobs``), so a message
delivered twice is done once and a message lost with a dead worker is sent again by the
reaper that runs in every worker (``tasks.lease.Reaper``), for every kind of job.

Importing this module does nothing: the app (broker connection settings, the embedded broker's
folder and queues, every task) is built on first use of ``app`` / ``get_app()``, which is what
``celery -A tasks.app`` reads.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from affectline.queue import make_celery
from affectline.task_names import ANALYZE_TASK, CHUNK_TASK, LINK_TASK, RESCORE_TASK

log = logging.getLogger(__name__)
_reaper: list = []


def app_settings():
    from affectline.settings import get_settings

    return get_settings()


def _define(app: Celery) -> None:
    retry = dict(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)

    @app.task(name=ANALYZE_TASK, **retry)
    def analyze_session(job_id: int) -> str:
        """Plan the job and send its chunks as a group (the link follows the last chunk)."""
        from tasks.analysis import run_plan, send_chunks
        from tasks.lease import send
        from storage.jobs import Resend

        todo, link, queue = run_plan(job_id)
        send_chunks(app, todo, queue)
        if link:
            send(app, Resend("link", job_id), app_settings())
        return f"planned {len(todo)} chunks"

    @app.task(name=CHUNK_TASK, **retry)
    def analyze_chunk(chunk_id: int) -> str:
        from tasks.chunks import run_chunk
        from tasks.lease import send
        from storage.jobs import Resend

        out = run_chunk(chunk_id)
        if out.link:
            send(app, Resend("link", out.job_id), app_settings())
        return out.status

    @app.task(name=LINK_TASK, **retry)
    def link_job(job_id: int) -> str:
        from tasks.analysis import run_link

        done = run_link(job_id, send_rescore=lambda jid: app.send_task(RESCORE_TASK, args=[jid]))
        return "linked" if done else "skipped"


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The workers' Celery app with every task registered (built once, on first use)."""
    from tasks.clinic import register as register_clinic  # an ImportError here is a broken install: raised
    from tasks.reports import register as register_reports
    from tasks.retention import register as register_retention

    app = make_celery()
    _define(app)
    register_retention(app)  # expired sessions, on the beat schedule
    register_reports(app)  # scheduled group reports, on the beat schedule when enabled
    register_clinic(app)  # personalise and re-score, leased and reaped like the analyses
    return app


def __getattr__(name: str):
    if name == "app":  # ``celery -A tasks.app`` looks up ``tasks.app.app``
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@worker_init.connect
@worker_process_init.connect
def _pin_threads(**_):
    """A worker (solo pool) or each prefork child: torch threads as ``AFFECTLINE_TORCH_THREADS`` says."""
    from tasks.eager import pin_torch_threads

    pin_torch_threads(app_settings())


@worker_ready.connect
def _start_reaper(sender=None, **_):
    from tasks.lease import Reaper

    _reaper.append(Reaper(get_app()).start())
    log.info("reaper started")


@worker_shutdown.connect
def _stop_reaper(sender=None, **_):
    for r in _reaper:
        r.stop()
