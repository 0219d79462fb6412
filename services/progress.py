"""Live progress of the analyses a user may see: per job, and per chunk for chunked jobs (issue 10)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from affectline.task_names import ANALYZE_TASK
from services.actor import Actor
from services.db import scope
from storage import jobs as job_rows
from storage.models import Job, JobStatus, Recording

ACTIVE = (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class ChunkProgress:
    idx: int
    t_start: float
    t_end: float
    status: str
    progress: float
    attempts: int
    error: str | None


@dataclass(frozen=True)
class JobProgress:
    id: int
    session_id: int
    title: str
    status: str
    phase: str
    progress: float
    message: str
    waited_s: float
    chunks: tuple[ChunkProgress, ...] = ()

    @property
    def chunks_done(self) -> int:
        return sum(c.status == JobStatus.done.value for c in self.chunks)

    def phrase(self) -> str:
        """What the job is doing, in words (no status codes)."""
        if self.status == JobStatus.queued.value:
            late = f" It has waited {self.waited_s / 60:.0f} minutes: check that the analysis worker is running." \
                if self.waited_s > 120 else ""  # fmt: skip
            return "Waiting for the analysis worker to pick it up." + late
        parts = [f"Analysing: {self.message or 'working'} ({self.progress:.0%} done)"]
        if self.chunks:
            running = sum(c.status == JobStatus.running.value for c in self.chunks)
            failed = sum(c.status == JobStatus.failed.value for c in self.chunks)
            parts.append(f"{self.chunks_done} of {len(self.chunks)} parts done, {running} in progress"
                         + (f", {failed} being retried" if failed else ""))  # fmt: skip
        return "; ".join(parts) + "."


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)


def active_jobs(url: str, actor: Actor, now: datetime | None = None) -> list[JobProgress]:
    """Queued and running analyses of sessions ``actor`` can see, newest first, with their chunks."""
    now = now or datetime.now(timezone.utc)
    with scope(url) as s:
        q = (
            select(Job, Recording.title)
            .join(Recording, Recording.id == Job.session_id)
            .where(Job.status.in_(ACTIVE), Job.task == ANALYZE_TASK)
            .order_by(Job.id.desc())
        )
        if actor.group_ids is not None:
            q = q.where(Recording.group_id.in_(actor.group_ids))
        out = []
        for job, title in s.execute(q):
            newest: dict[int, object] = {}
            for c in job_rows.job_chunks(s, job.id):  # a re-planned job keeps older versions' rows: show the newest
                newest[c.idx] = c
            chunks = tuple(ChunkProgress(c.idx, c.t_start, c.t_end, JobStatus(c.status).value,
                                         min(max(c.progress or 0.0, 0.0), 1.0), c.attempts or 0, c.error)
                           for _, c in sorted(newest.items()))  # fmt: skip
            created = _aware(job.created_at)
            out.append(JobProgress(job.id, job.session_id, title, JobStatus(job.status).value, job.phase or "",
                                   min(max(job.progress or 0.0, 0.0), 1.0), job.message or "",
                                   (now - created).total_seconds() if created else 0.0, chunks))  # fmt: skip
        return out
