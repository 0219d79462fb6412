"""``affectline jobs list|retry|cancel``: what the workers are doing, and what to do about a stuck job."""

from __future__ import annotations

import click

from affectline.settings import get_settings
from cli.common import acting, database_url


@click.group()
def jobs() -> None:
    """Analysis jobs across all workers: list them, retry a failed or stale one, cancel one."""


@jobs.command("list")
@click.option("--limit", default=20, show_default=True)
def jobs_list(limit: int) -> None:
    """Newest jobs first; a running job no worker has renewed for two leases is shown as stale."""
    from services import jobs as job_service

    for v in job_service.views(database_url(), acting(), get_settings().lease_seconds, limit=limit):
        chunks = f"{v.chunks_done}/{v.chunks_total} chunks" if v.chunks_total else "-"
        detail = v.error if v.status == "failed" and v.error else v.message
        click.echo(f"{v.id}\tsession {v.session_id}\t{v.state}\t{v.progress:.0%}\t{chunks}\t{detail}")


@jobs.command("retry")
@click.argument("job_id", type=int)
def jobs_retry(job_id: int) -> None:
    """Queue a failed, cancelled or stale job again; chunks already done are kept."""
    from services import jobs as job_service

    try:
        job_service.retry(database_url(), get_settings(), acting(), job_id)
    except (LookupError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"job {job_id} queued again (start a worker if none runs: affectline worker)", err=True)


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Stop a queued or running job: its workers drop it at their next progress step."""
    from services import jobs as job_service

    try:
        job_service.cancel(database_url(), acting(), job_id)
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"job {job_id} cancelled", err=True)
