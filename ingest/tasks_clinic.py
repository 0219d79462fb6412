"""Celery tasks for the clinicians' models; ``ingest.tasks`` calls ``register(app)``.

Both take a job id only and re-read everything: the ``jobs`` row says which person
(and, for re-scoring, which session) and carries ``params``. Both are idempotent under
``acks_late`` redelivery: a finished job is not redone, a personalisation interrupted
after its model was stored reuses that version instead of fitting another, and
re-scoring overwrites the same columns with the same values.
"""

from __future__ import annotations

import logging
import traceback

from celery import Celery
from sqlalchemy.exc import OperationalError

from affectline.queue import PERSONALIZE_TASK, RESCORE_TASK
from affectline.settings import get_settings
from storage.db import session_scope
from storage.models import Job, JobStatus
from storage.repo import update_job

log = logging.getLogger(__name__)


def _job(url: str, job_id: int) -> tuple[int | None, int | None, dict, JobStatus]:
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        return job.person_id, job.session_id, dict(job.params or {}), job.status


def _hook(url: str, job_id: int):
    def hook(progress: float, message: str) -> None:
        with session_scope(url) as s:
            update_job(s, job_id, progress=float(progress), message=message)

    return hook


def run_personalize_job(job_id: int) -> None:
    """Personalise ``job.person_id`` (params: ``activate`` true/false/null, ``actor``)."""
    from ingest.clinic import personalize_person

    settings = get_settings()
    url = settings.resolved_database_url
    person_id, _, params, status = _job(url, job_id)
    if status == JobStatus.done:
        return
    with session_scope(url) as s:
        update_job(s, job_id, status=JobStatus.running, progress=0.0, message="personalising")
    try:
        out = personalize_person(url, person_id, settings, activate=params.get("activate"),
                                 actor=params.get("actor", "worker"), hook=_hook(url, job_id), job_id=job_id)  # fmt: skip
    except OperationalError:
        raise  # database busy: let Celery retry
    except Exception as e:
        with session_scope(url) as s:
            update_job(
                s,
                job_id,
                status=JobStatus.failed,
                error=f"{type(e).__name__}: {e}",
                message=traceback.format_exc(limit=3),
            )
        return
    r = out.report
    msg = (f"model v{out.version} {'active' if out.activated else 'stored, not active'}: out-of-fold macro-F1 "
           f"{r.personal.macro_f1:.2f} on {', '.join(r.labels)}; {r.verdict()}; {out.n_rescored} bins re-scored")  # fmt: skip
    with session_scope(url) as s:
        update_job(s, job_id, status=JobStatus.done, progress=1.0, message=msg)


def run_rescore_job(job_id: int) -> None:
    """Re-score ``job.person_id`` (optionally only ``job.session_id``), or, with no person,
    every person of ``job.session_id``."""
    from ingest.clinic import population_rescore, rescore_person

    settings = get_settings()
    url = settings.resolved_database_url
    person_id, session_id, _, status = _job(url, job_id)
    if status == JobStatus.done:
        return
    with session_scope(url) as s:
        update_job(s, job_id, status=JobStatus.running, progress=0.0, message="re-scoring")
    try:
        if person_id is not None:
            n = rescore_person(url, person_id, settings, session_id)
        elif session_id is not None:
            n = population_rescore(url, session_id, settings)
        else:
            raise ValueError(f"job {job_id} names neither a person nor a session")
    except OperationalError:
        raise
    except Exception as e:
        with session_scope(url) as s:
            update_job(s, job_id, status=JobStatus.failed, error=f"{type(e).__name__}: {e}")
        return
    with session_scope(url) as s:
        update_job(s, job_id, status=JobStatus.done, progress=1.0, message=f"{n} bins re-scored")


def register(app: Celery) -> dict[str, object]:
    """Define the clinicians' tasks on ``app`` under their contract names; returns them by name."""

    @app.task(name=PERSONALIZE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
    def personalize(job_id: int) -> None:
        run_personalize_job(int(job_id))

    @app.task(name=RESCORE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
    def rescore(job_id: int) -> None:
        run_rescore_job(int(job_id))

    return {PERSONALIZE_TASK: personalize, RESCORE_TASK: rescore}
