"""Celery tasks. Start a worker with ``celery -A ingest.tasks worker`` (or ``affectline worker``).

Tasks take ids, re-read their rows and lease them (``storage.jobs``), so a message
delivered twice is done once and a message lost with a dead worker is sent again by the
reaper that runs in every worker (``ingest.jobs.Reaper``).
"""

from __future__ import annotations

import logging

from celery.signals import worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from affectline.queue import ANALYZE_TASK, CHUNK_TASK, LINK_TASK, make_celery

app = make_celery()
log = logging.getLogger(__name__)


@app.task(name=ANALYZE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)
def analyze_session(job_id: int) -> str:
    """Plan the job and send its chunks as a group (the link follows the last chunk)."""
    from ingest.jobs import run_plan, send, send_chunks
    from storage.jobs import Resend

    todo, link, queue = run_plan(job_id)
    send_chunks(app, todo, queue)
    if link:
        send(app, Resend("link", job_id), app_settings())
    return f"planned {len(todo)} chunks"


@app.task(name=CHUNK_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)
def analyze_chunk(chunk_id: int) -> str:
    from ingest.chunks import run_chunk
    from ingest.jobs import send
    from storage.jobs import Resend

    out = run_chunk(chunk_id)
    if out.link:
        send(app, Resend("link", out.job_id), app_settings())
    return out.status


@app.task(name=LINK_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=10)
def link_job(job_id: int) -> str:
    from ingest.jobs import run_link

    return "linked" if run_link(job_id) else "skipped"


def app_settings():
    from affectline.settings import get_settings

    return get_settings()


_reaper = []


@worker_ready.connect
def _start_reaper(sender=None, **_):
    from ingest.jobs import Reaper

    _reaper.append(Reaper(app).start())
    log.info("reaper started")


@worker_shutdown.connect
def _stop_reaper(sender=None, **_):
    for r in _reaper:
        r.stop()


from ingest.tasks_retention import register as _register_retention  # noqa: E402

_register_retention(app)  # expired sessions, on the beat schedule (issue 12)

from ingest.tasks_reports import register as _register_reports  # noqa: E402

_register_reports(app)  # scheduled group reports, on the beat schedule when enabled (issue 19)

try:  # the clinicians' tasks (issue 5) register themselves when present
    from ingest.tasks_clinic import register as _register_clinic

    _register_clinic(app)
except ImportError:
    pass
