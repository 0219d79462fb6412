"""Celery tasks for the clinicians' models; ``tasks.app`` calls ``register(app)``.

Both take a job id only and re-read everything: the ``jobs`` row says which person
(and, for re-scoring, which session) and carries ``params``. Both lease their job as the analysis
tasks do, and the reaper sends them again when a worker died or a message was lost. Both are
idempotent under ``acks_late`` redelivery: a finished job is not redone, a personalisation interrupted
after its model was stored reuses that version instead of fitting another, and
re-scoring overwrites the same columns with the same values.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

from celery import Celery
from sqlalchemy.exc import OperationalError

from affectline.settings import Settings, get_settings
from affectline.task_names import PERSONALIZE_TASK, RESCORE_TASK
from tasks.lease import Heartbeat, owner_dead, owner_id, with_db
from storage import jobs
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


def _leased(job_id: int, settings: Settings, message: str, work: Callable[[str], str]) -> None:
    """Do ``work(url) -> done message`` under the job's lease (``storage.jobs.claim_job``, renewed by a
    heartbeat), as the analysis tasks do: a message delivered twice is done once, and a worker that dies
    leaves a lease the reaper sees expire (``storage.jobs.reap_one_phase``) and sends the job again."""
    url, me, lease = settings.resolved_database_url, owner_id(), settings.lease_seconds

    def claim(s):
        job = jobs.claim_job(s, job_id, "plan", me, lease, dead=owner_dead)
        if job is not None:
            job.progress, job.message = 0.0, message
        return job is not None

    if not with_db(url, claim, what=f"claiming job {job_id}"):
        return  # done already, or another worker holds it

    def renew(_p) -> bool:
        with session_scope(url) as s:
            return jobs.renew_job(s, job_id, me, lease)

    try:
        with Heartbeat(renew, lease):
            msg = work(url)
    except OperationalError:
        with_db(url, lambda s: jobs.release_job(s, job_id, me))
        raise  # database busy: let Celery retry (the lease is released for it)
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
        with_db(url, lambda s: jobs.fail_job(s, job_id, err))
        log.warning("job %s failed: %s", job_id, traceback.format_exc(limit=3))
        return
    with_db(url, lambda s: jobs.finish_job(s, job_id, me, msg))


def run_personalize_job(job_id: int, settings: Settings | None = None) -> None:
    """Personalise ``job.person_id`` (params: ``activate`` true/false/null, ``actor``)."""
    from clinic.personalise import personalize_person

    settings = settings or get_settings()
    person_id, _, params, _ = _job(settings.resolved_database_url, job_id)

    def work(url: str) -> str:
        out = personalize_person(url, person_id, settings, activate=params.get("activate"),
                                 actor=params.get("actor", "worker"), hook=_hook(url, job_id), job_id=job_id)  # fmt: skip
        r = out.report
        return (f"model v{out.version} {'active' if out.activated else 'stored, not active'}: out-of-fold macro-F1 "
                f"{r.personal.macro_f1:.2f} on {', '.join(r.labels)}; {r.verdict()}; {out.n_rescored} bins re-scored")  # fmt: skip

    _leased(job_id, settings, "personalising", work)


def run_rescore_job(job_id: int, settings: Settings | None = None) -> None:
    """Re-score ``job.person_id`` (optionally only ``job.session_id``), or, with no person,
    every person of ``job.session_id`` (queued by the link once a session's timelines are stored)."""
    from clinic.rescore import population_rescore, rescore_person

    settings = settings or get_settings()
    person_id, session_id, _, _ = _job(settings.resolved_database_url, job_id)

    def work(url: str) -> str:
        if person_id is not None:
            n = rescore_person(url, person_id, settings, session_id)
        elif session_id is not None:
            n = population_rescore(url, session_id, settings)
        else:
            raise ValueError(f"job {job_id} names neither a person nor a session")
        return f"{n} bins re-scored"

    _leased(job_id, settings, "re-scoring", work)


def register(app: Celery) -> dict[str, object]:
    """Define the clinicians' tasks on ``app`` under their contract names; returns them by name."""

    @app.task(name=PERSONALIZE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
    def personalize(job_id: int) -> None:
        run_personalize_job(int(job_id))

    @app.task(name=RESCORE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
    def rescore(job_id: int) -> None:
        run_rescore_job(int(job_id))

    return {PERSONALIZE_TASK: personalize, RESCORE_TASK: rescore}
