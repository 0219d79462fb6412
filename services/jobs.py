"""Jobs as the front ends handle them: enqueue by task name, list, retry, cancel, follow one.

``enqueue`` is the one way a committed job reaches the workers (analyses, personalisation,
re-scoring): sent by name after the commit, and, if the broker refuses, the job is marked failed
with the reason and a one-line error raised, so no job waits forever for a message never sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from affectline.queue import ANALYZE_TASK, make_celery
from affectline.settings import Settings
from services.actor import Actor, require
from services.db import scope
from storage import jobs as job_rows
from storage import repo
from storage.jobs import JobView
from storage.models import Job, JobStatus

__all__ = ["JobOutcome", "JobView", "cancel", "enqueue", "fail", "outcome", "retry", "send_task", "view", "views"]


def send_task(settings: Settings, task: str, job_id: int) -> None:
    """Enqueue by task name (the worker's code is never imported here)."""
    make_celery(settings).send_task(task, args=[job_id])


def enqueue(url: str, settings: Settings, task: str, job_id: int, what: str, send=None) -> None:
    """Send committed job ``job_id``; a refusing broker fails the job with why and raises RuntimeError.

    ``what`` opens the error ("session 3 saved, but the analysis"); ``send`` (settings, job id) is
    the sender, by default ``send_task`` for ``task``."""
    try:
        (send or (lambda st, jid: send_task(st, task, jid)))(settings, job_id)
    except Exception as e:
        with scope(url) as s:
            repo.update_job(s, job_id, status=JobStatus.failed, error=f"could not queue the job: {e}")
        raise RuntimeError(f"{what} could not be queued: {e}") from e


def fail(url: str, job_id: int, error: str) -> None:
    """Mark a job failed with a one-line reason (bad input found before any worker saw it)."""
    with scope(url) as s:
        job_rows.fail_job(s, job_id, error)


def views(url: str, actor: Actor, lease_s: float, limit: int = 50) -> list[JobView]:
    """Newest jobs first, each with whether it is stale (running, but no worker renews it)."""
    require(actor, "upload")  # who may start analyses may follow and stop them
    with scope(url) as s:
        return job_rows.job_views(s, lease_s, limit=limit)


@dataclass(frozen=True)
class JobOutcome:
    status: JobStatus
    progress: float
    message: str
    error: str | None
    stale_for_s: float | None  # seconds without a heartbeat when stale, else None

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.queued, JobStatus.running)

    @property
    def done(self) -> bool:
        return self.status is JobStatus.done

    def failure(self, job_id: int) -> str:
        """The one line a failed (or cancelled) job ends with."""
        return self.error or f"job {job_id} ended {self.status.value}"


def outcome(url: str, job_id: int, lease_s: float) -> JobOutcome | None:
    """A job's current state (None when it is gone with its session)."""
    with scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        view = next((v for v in job_rows.job_views(s, lease_s, limit=200) if v.id == job_id), None)
        return JobOutcome(JobStatus(job.status), float(job.progress or 0.0), job.message or "", job.error,
                          view.heartbeat_age_s if view is not None and view.stale else None)  # fmt: skip


def view(url: str, job_id: int, lease_s: float) -> JobView | None:
    """The job as ``affectline jobs list`` shows it (one state text for both), or None once deleted."""
    with scope(url) as s:
        if s.get(Job, job_id) is None:
            return None
        return job_rows.job_views(s, lease_s, job_id=job_id)[0]


def retry(url: str, settings: Settings, actor: Actor, job_id: int) -> None:
    """Queue a failed, cancelled or stale analysis again (finished chunks are kept); audited."""
    require(actor, "upload")  # who may start analyses may follow and stop them
    with scope(url) as s:
        j = s.get(Job, job_id)
        if j is not None and j.task != ANALYZE_TASK:
            raise ValueError(f"job {job_id} is a {j.task} job; only analyses are retried here")
        job = job_rows.retry_job(s, job_id, settings.lease_seconds)
        repo.audit(s, actor.audit_name, "retry_job", f"job:{job_id}", session=job.session_id)
        task = job.task
    enqueue(url, settings, task, job_id, f"job {job_id}")


def cancel(url: str, actor: Actor, job_id: int) -> None:
    """Stop a queued or running job: its workers drop it at their next progress step; audited."""
    require(actor, "upload")  # who may start analyses may follow and stop them
    with scope(url) as s:
        job = job_rows.cancel_job(s, job_id)
        repo.audit(s, actor.audit_name, "cancel_job", f"job:{job_id}", session=job.session_id)
