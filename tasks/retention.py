"""The retention task; ``tasks.app`` calls ``register(app)``, and the beat schedule in
``affectline.queue`` sends it every ``Settings.retention_every_s`` seconds.

Idempotent and safe to overlap: each expired session is deleted in its own transaction, a
session already gone is skipped, so a redelivered or doubled run deletes nothing twice.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.exc import OperationalError

from affectline.queue import RETENTION_TASK
from affectline.settings import get_settings
from storage import retention
from storage.db import migrate

log = logging.getLogger(__name__)
ACTOR = "system:retention"  # the audit trail's name for the schedule (services.privacy.SCHEDULER)


def run_retention() -> retention.RetentionReport:
    settings = get_settings()
    url = settings.resolved_database_url
    migrate(url)
    rep = retention.run(url, ACTOR, settings.data_dir)
    if rep.deleted or rep.files_failed:
        log.info("retention: %d expired session(s), %d rows, %d file(s) removed, %d failed",
                 len(rep.deleted), rep.total_rows, len(rep.files_removed), len(rep.files_failed))  # fmt: skip
    return rep


def register(app: Celery) -> dict[str, object]:
    """Define the retention task on ``app`` under its contract name; returns it by name."""

    @app.task(name=RETENTION_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
    def expire_sessions() -> int:
        return len(run_retention().deleted)

    return {RETENTION_TASK: expire_sessions}
