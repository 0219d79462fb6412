"""Celery tasks. Start a worker with ``celery -A ingest.tasks worker``.

Tasks take ids, re-read their rows, and are idempotent (see ingest.analysis), so
``acks_late`` redelivery after a crash redoes work rather than losing it.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from affectline.queue import ANALYZE_TASK, make_celery
from ingest.analysis import JobFailed, run_analysis

app = make_celery()


@app.task(name=ANALYZE_TASK, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def analyze_session(job_id: int) -> None:
    try:
        run_analysis(job_id)
    except JobFailed:
        pass  # already recorded on the job row; retrying bad input would not help


from ingest.tasks_retention import register as _register_retention  # noqa: E402

_register_retention(app)  # expired sessions, on the beat schedule (issue 12)

try:  # the clinicians' tasks (issue 5) register themselves when present
    from ingest.tasks_clinic import register as _register_clinic

    _register_clinic(app)
except ImportError:
    pass
