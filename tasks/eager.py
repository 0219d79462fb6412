"""Run one analysis job in this process (``affectline analyze --eager``, tests): plan, chunks, link.

The same rows, leases and code as on workers (``tasks.analysis.run_job_here``).
"""

from __future__ import annotations

from affectline.settings import Settings, get_settings
from tasks.store import JobFailed
from tasks.analysis import run_job_here
from pipeline.analyse import Pipeline
from storage.db import session_scope
from storage.models import Job, JobStatus


def pin_torch_threads(settings: Settings | None = None) -> int:
    """Set this process's torch intra-op threads to ``Settings.resolved_torch_threads`` (returns it).

    Called by each worker process at start and by ``affectline analyze --eager``: with several workers
    on one machine, oversubscribed torch threads spin and starve each other (FER measured 6-40x slower
    under load), so the process that runs the models decides once, not whichever model loads first."""
    import torch

    n = (settings or get_settings()).resolved_torch_threads
    torch.set_num_threads(n)
    return n


def run_analysis(job_id: int, settings: Settings | None = None, hook=None, pipeline: Pipeline | None = None) -> None:
    """Do job ``job_id`` in this process: plan, its chunks, then the link (``tasks.analysis``).

    The same rows, leases and code as on workers. Raises JobFailed with the job's one-line
    error when it did not end done. ``pipeline`` defaults to this process's cached one.
    """
    s_ = settings or get_settings()
    url = s_.resolved_database_url
    with session_scope(url) as s:
        if s.get(Job, job_id) is None:
            raise JobFailed(f"job {job_id} does not exist")
    run_job_here(job_id, s_, hook=hook, pipeline=pipeline)
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise JobFailed(f"job {job_id} is gone (its session was deleted)")
        if job.status != JobStatus.done:
            raise JobFailed(job.error or f"job {job_id} ended {job.status.value}")
