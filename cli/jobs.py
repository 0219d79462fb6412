"""``affectline jobs list|retry|cancel``: what the workers are doing, and what to do about a stuck job."""

from __future__ import annotations

import click

from affectline.settings import get_settings
from cli.common import actor_name, database_url


@click.group()
def jobs() -> None:
    """Analysis jobs across all workers: list them, retry a failed or stale one, cancel one."""


@jobs.command("list")
@click.option("--limit", default=20, show_default=True)
def jobs_list(limit: int) -> None:
    """Newest jobs first; a running job no worker has renewed for two leases is shown as stale."""
    from storage.db import session_scope
    from storage.jobs import job_views

    with session_scope(database_url()) as s:
        views = job_views(s, get_settings().lease_seconds, limit=limit)
    for v in views:
        chunks = f"{v.chunks_done}/{v.chunks_total} chunks" if v.chunks_total else "-"
        detail = v.error if v.status == "failed" and v.error else v.message
        click.echo(f"{v.id}\tsession {v.session_id}\t{v.state}\t{v.progress:.0%}\t{chunks}\t{detail}")


@jobs.command("retry")
@click.argument("job_id", type=int)
def jobs_retry(job_id: int) -> None:
    """Queue a failed, cancelled or stale job again; chunks already done are kept."""
    from storage.db import session_scope
    from storage.jobs import retry_job
    from storage.repo import audit

    from affectline.queue import ANALYZE_TASK
    from storage.models import Job

    settings = get_settings()
    with session_scope(database_url()) as s:
        j = s.get(Job, job_id)
        if j is not None and j.task != ANALYZE_TASK:
            raise click.ClickException(f"job {job_id} is a {j.task} job; only analyses are retried here")
        try:
            job = retry_job(s, job_id, settings.lease_seconds)
        except (LookupError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        audit(s, actor_name(), "retry_job", f"job:{job_id}", session=job.session_id)
        task = job.task
    from affectline.queue import make_celery

    make_celery(settings).send_task(task, args=[job_id])
    click.echo(f"job {job_id} queued again (start a worker if none runs: affectline worker)", err=True)


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Stop a queued or running job: its workers drop it at their next progress step."""
    from storage.db import session_scope
    from storage.jobs import cancel_job
    from storage.repo import audit

    with session_scope(database_url()) as s:
        try:
            job = cancel_job(s, job_id)
        except (LookupError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        audit(s, actor_name(), "cancel_job", f"job:{job_id}", session=job.session_id)
    click.echo(f"job {job_id} cancelled", err=True)
