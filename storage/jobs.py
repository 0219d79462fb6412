"""Chunked analysis jobs in the database: chunk rows, leases, progress, and what a reaper re-sends.

The database, not the broker, is the record of who does what. A worker *leases* a chunk
(or a job's plan/link phase) for ``lease_s`` seconds and renews the lease while it works;
a worker that dies (SIGKILL, OOM, machine gone) stops renewing, and once the lease has
expired any worker's reaper sends the chunk again. Every claim is a conditional UPDATE,
so of two workers handed the same message only one works on it; the other skips. This
holds whatever the broker does with unacknowledged messages (kombu's SQLAlchemy transport
never redelivers them; Redis redelivers after its visibility timeout).

Chunk results (``JobChunk.result``, a ``ChunkResult`` each) are kept exactly as long as a
job may still need them: while it is queued, running, failed or cancelled (``retry_job``
re-plans it, keeps its finished chunks and links from their results). ``finish_job`` drops
them in the transaction that marks the job done (a done job is never retried: its
timelines are stored), and a re-plan under a new pipeline version drops the results of the
versions it replaces. The rows themselves stay (the progress view and ``jobs list`` read
them) until their job goes: deleting or expiring the session deletes its jobs and their
chunk rows (``storage.retention``, and ON DELETE CASCADE for ``repo.delete_session``).

All functions take an open Session (one transaction) and commit nothing themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import Job, JobChunk, JobStatus

ACTIVE = (JobStatus.queued, JobStatus.running)
MAX_ATTEMPTS = 3  # a chunk whose workers died this often fails the job (e.g. it runs out of memory every time)
LINK_SHARE = 0.95  # of the job's progress bar: chunks fill 95 %, linking and storing the rest

DeadOwner = Callable[[str], bool]
"""Tells whether a lease owner is known to be dead now (a process of this machine that is gone)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands DateTime(timezone=True) back naive; everything we store is UTC.
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def lease_free(owner: str | None, expires: datetime | None, me: str, now: datetime, dead: DeadOwner | None) -> bool:
    """May ``me`` take a lease held by ``owner`` until ``expires``?"""
    if owner is None or owner == me:
        return True
    exp = _aware(expires)
    return exp is None or exp <= now or bool(dead and dead(owner))


def _same_owner(col, owner: str | None):
    return col.is_(None) if owner is None else col == owner


# --- planning ---------------------------------------------------------------------------------


def plan_chunks(s: Session, job_id: int, version: str, windows: Sequence[tuple[float, float]]) -> list[JobChunk]:
    """Create the job's chunk rows for ``version`` where missing; returns all of them by index.

    A re-planned job (a redelivered plan message, or a retry) keeps its finished chunks; the
    results of other versions are dropped (nothing links them again).
    """
    drop_results(s, job_id, except_version=version)
    have = {c.idx: c for c in s.scalars(select(JobChunk).where(JobChunk.job_id == job_id, JobChunk.version == version))}
    for i, (t0, t1) in enumerate(windows):
        if i not in have:
            c = JobChunk(job_id=job_id, idx=i, version=version, t_start=float(t0), t_end=float(t1),
                         status=JobStatus.queued, progress=0.0, attempts=0)  # fmt: skip
            s.add(c)
            have[i] = c
    s.flush()
    chunks = [have[i] for i in range(len(windows))]
    done = sum(c.status == JobStatus.done for c in chunks)
    s.execute(update(Job).where(Job.id == job_id).values(chunks_total=len(chunks), chunks_done=done))
    return chunks


def job_chunks(s: Session, job_id: int, version: str | None = None) -> list[JobChunk]:
    q = select(JobChunk).where(JobChunk.job_id == job_id)
    if version is not None:
        q = q.where(JobChunk.version == version)
    return list(s.scalars(q.order_by(JobChunk.idx, JobChunk.id)))


def mark_sent(s: Session, chunk_ids: Sequence[int], now: datetime | None = None) -> None:
    if chunk_ids:
        s.execute(update(JobChunk).where(JobChunk.id.in_(list(chunk_ids))).values(sent_at=now or utcnow()))


# --- job-level lease (plan and link phases) -----------------------------------------------------


def claim_job(s: Session, job_id: int, phase: str, me: str, lease_s: float, dead: DeadOwner | None = None,
              now: datetime | None = None) -> Job | None:  # fmt: skip
    """Lease job ``job_id`` for ``phase`` ('plan' or 'link'); None when it is not ours to do now."""
    now = now or utcnow()
    job = s.get(Job, job_id)
    if job is None or job.status not in ACTIVE or job.phase != phase:
        return None
    if not lease_free(job.lease_owner, job.lease_expires, me, now, dead):
        return None
    res = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.phase == phase, Job.status.in_(ACTIVE), _same_owner(Job.lease_owner, job.lease_owner))
        .values(lease_owner=me, lease_expires=now + timedelta(seconds=lease_s), heartbeat_at=now,
                status=JobStatus.running, started_at=func.coalesce(Job.started_at, now))  # fmt: skip
    )
    if res.rowcount != 1:
        return None
    s.refresh(job)
    return job


def renew_job(s: Session, job_id: int, me: str, lease_s: float, now: datetime | None = None) -> bool:
    now = now or utcnow()
    res = s.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == me, Job.status.in_(ACTIVE))
        .values(lease_expires=now + timedelta(seconds=lease_s), heartbeat_at=now)
    )  # fmt: skip
    return res.rowcount == 1


def release_job(s: Session, job_id: int, me: str) -> None:
    """Give our lease back (a retried task takes it again at once)."""
    s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == me).values(lease_owner=None, lease_expires=None))


def enter_chunks(s: Session, job_id: int, me: str) -> bool:
    """Plan done: the job's lease is released and its chunks are the work now."""
    res = s.execute(
        update(Job).where(Job.id == job_id, Job.phase == "plan", Job.lease_owner == me, Job.status.in_(ACTIVE))
        .values(phase="chunks", lease_owner=None, lease_expires=None, sent_at=None)
    )  # fmt: skip
    return res.rowcount == 1


def finish_job(s: Session, job_id: int, me: str, message: str) -> bool:
    """Mark our job done and drop its chunk results (its timelines are stored; it is never retried)."""
    now = utcnow()
    res = s.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == me, Job.status.in_(ACTIVE))
        .values(status=JobStatus.done, phase="done", progress=1.0, message=message, error=None, finished_at=now,
                lease_owner=None, lease_expires=None, heartbeat_at=now)  # fmt: skip
    )
    if res.rowcount != 1:
        return False
    drop_results(s, job_id)
    return True


def drop_results(s: Session, job_id: int, except_version: str | None = None) -> int:
    """Forget the stored ``ChunkResult``s of job ``job_id`` (but those of ``except_version``); rows stay."""
    q = update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.result.isnot(None))
    if except_version is not None:
        q = q.where(JobChunk.version != except_version)
    return s.execute(q.values(result=None)).rowcount or 0


def fail_job(s: Session, job_id: int, error: str) -> None:
    """Mark the job failed with ``error`` (one line for the user); its chunks stop."""
    now = utcnow()
    s.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.failed, error=error, message="failed", finished_at=now, lease_owner=None,
                lease_expires=None)  # fmt: skip
    )
    _stop_chunks(s, job_id, JobStatus.failed)


def _stop_chunks(s: Session, job_id: int, status: JobStatus) -> None:
    s.execute(
        update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status.in_(ACTIVE))
        .values(status=status, lease_owner=None, lease_expires=None)
    )  # fmt: skip


# --- chunk leases ----------------------------------------------------------------------------


def claim_chunk(s: Session, chunk_id: int, me: str, lease_s: float, dead: DeadOwner | None = None,
                now: datetime | None = None) -> JobChunk | None:  # fmt: skip
    """Lease chunk ``chunk_id`` for ``me``; None when it is done, stopped, or held by a live worker."""
    now = now or utcnow()
    c = s.get(JobChunk, chunk_id)
    if c is None or c.status not in ACTIVE:
        return None
    job = s.get(Job, c.job_id)
    if job is None or job.status not in ACTIVE or job.phase != "chunks":
        return None
    if not lease_free(c.lease_owner, c.lease_expires, me, now, dead):
        return None
    res = s.execute(
        update(JobChunk)
        .where(JobChunk.id == chunk_id, JobChunk.status.in_(ACTIVE), _same_owner(JobChunk.lease_owner, c.lease_owner))
        .values(lease_owner=me, lease_expires=now + timedelta(seconds=lease_s), heartbeat_at=now,
                status=JobStatus.running, attempts=JobChunk.attempts + 1, started_at=now, error=None)  # fmt: skip
    )
    if res.rowcount != 1:
        return None
    s.execute(update(Job).where(Job.id == c.job_id).values(heartbeat_at=now))
    s.refresh(c)
    return c


def renew_chunk(s: Session, chunk_id: int, me: str, lease_s: float, progress: float | None = None,
                now: datetime | None = None) -> bool:  # fmt: skip
    """Extend our lease (and record progress); False when the lease is no longer ours or the job stopped."""
    now = now or utcnow()
    vals = dict(lease_expires=now + timedelta(seconds=lease_s), heartbeat_at=now)
    if progress is not None:
        vals["progress"] = min(max(float(progress), 0.0), 1.0)
    c = s.get(JobChunk, chunk_id)
    if c is None:
        return False
    res = s.execute(
        update(JobChunk).where(JobChunk.id == chunk_id, JobChunk.lease_owner == me, JobChunk.status == JobStatus.running)
        .values(**vals)
    )  # fmt: skip
    if res.rowcount != 1:
        return False
    job_alive = s.execute(
        update(Job).where(Job.id == c.job_id, Job.status.in_(ACTIVE)).values(heartbeat_at=now)
    ).rowcount == 1  # fmt: skip
    if job_alive and progress is not None:
        refresh_progress(s, c.job_id)
    return job_alive


def finish_chunk(s: Session, chunk_id: int, me: str, result: bytes) -> bool:
    """Store our chunk's result (replacing only this row); False when the lease was lost meanwhile."""
    now = utcnow()
    res = s.execute(
        update(JobChunk).where(JobChunk.id == chunk_id, JobChunk.lease_owner == me, JobChunk.status == JobStatus.running)
        .values(status=JobStatus.done, progress=1.0, result=result, finished_at=now, lease_owner=None,
                lease_expires=None, heartbeat_at=now)  # fmt: skip
    )
    if res.rowcount != 1:
        return False
    refresh_progress(s, s.get(JobChunk, chunk_id).job_id)
    return True


def release_chunk(s: Session, chunk_id: int, me: str, error: str | None = None) -> None:
    """Give a chunk back to the queue (a transient failure): the reaper or a retry sends it again."""
    s.execute(
        update(JobChunk).where(JobChunk.id == chunk_id, JobChunk.lease_owner == me)
        .values(status=JobStatus.queued, lease_owner=None, lease_expires=None, error=error, sent_at=None)
    )  # fmt: skip


def refresh_progress(s: Session, job_id: int) -> tuple[int, int]:
    """Job progress from its chunk rows: chunks done across all workers; never past the total."""
    job = s.get(Job, job_id)
    if job is None or job.chunks_total <= 0:
        return 0, 0
    q = select(JobChunk.status, JobChunk.progress).where(JobChunk.job_id == job_id, JobChunk.idx < job.chunks_total)
    version = (job.params or {}).get("version")
    if version:  # a job re-planned under a new version keeps the old rows: count the current ones
        q = q.where(JobChunk.version == version)
    rows = s.execute(q).all()
    done = sum(st == JobStatus.done for st, _ in rows)
    part = sum(1.0 if st == JobStatus.done else min(max(p or 0.0, 0.0), 1.0) for st, p in rows)
    total = job.chunks_total
    frac = LINK_SHARE * min(part / total, 1.0)
    s.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE), Job.phase == "chunks")
        .values(chunks_done=min(done, total), progress=round(frac, 4), message=f"chunks {min(done, total)}/{total} done")
    )  # fmt: skip
    return done, total


def start_link(s: Session, job_id: int) -> bool:
    """True exactly once per job, for whoever sees its last chunk done: that caller sends the link task."""
    job = s.get(Job, job_id)
    if job is None or job.phase != "chunks" or job.status not in ACTIVE:
        return False
    version = job.params.get("version") if job.params else None
    q = select(func.count()).select_from(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status == JobStatus.done)
    if version:
        q = q.where(JobChunk.version == version)
    if s.scalar(q) < job.chunks_total or job.chunks_total == 0:
        return False
    res = s.execute(
        update(Job).where(Job.id == job_id, Job.phase == "chunks", Job.status.in_(ACTIVE))
        .values(phase="link", lease_owner=None, lease_expires=None, sent_at=utcnow(), progress=LINK_SHARE,
                chunks_done=job.chunks_total, message="linking identities across chunks")  # fmt: skip
    )
    return res.rowcount == 1


def chunk_fails_job(s: Session, chunk_id: int, error: str) -> None:
    c = s.get(JobChunk, chunk_id)
    if c is None:
        return
    c.status, c.error, c.lease_owner, c.lease_expires = JobStatus.failed, error, None, None
    fail_job(s, c.job_id, error)


# --- the reaper ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resend:
    """A message to send again: kind 'plan' or 'link' (job id), 'chunk' (chunk id), or 'task' (a
    one-phase job's id, sent as its own ``task``: the clinicians' personalise and re-score jobs)."""

    kind: str
    id: int
    queue: str | None = None
    task: str | None = None


def reap(s: Session, task: str, lease_s: float, requeue_after_s: float, dead: DeadOwner | None = None,
         now: datetime | None = None, default_queue: str | None = None) -> list[Resend]:  # fmt: skip
    """Find work whose worker died or whose message was lost, and mark it sent again (now).

    - a running chunk whose lease expired (or whose owner is a dead process of this machine)
      goes back to queued; after MAX_ATTEMPTS such deaths the job fails instead;
    - a queued chunk no one took within ``requeue_after_s`` of being sent is sent again;
    - a job in its plan or link phase likewise (expired lease, or never taken).
    Only jobs of ``task`` are looked at. Each change is conditional on the row still being
    as read, so reapers in several workers never send the same thing twice at once.
    """
    now = now or utcnow()
    stale_sent = now - timedelta(seconds=requeue_after_s)
    out: list[Resend] = []
    rows = s.execute(
        select(JobChunk, Job.params).join(Job, Job.id == JobChunk.job_id)
        .where(Job.task == task, Job.status.in_(ACTIVE), Job.phase == "chunks", JobChunk.status.in_(ACTIVE))
        .where(or_(
            and_(JobChunk.status == JobStatus.running,
                 or_(JobChunk.lease_expires.is_(None), JobChunk.lease_expires <= now, JobChunk.lease_owner.isnot(None))),
            and_(JobChunk.status == JobStatus.queued, or_(JobChunk.sent_at.is_(None), JobChunk.sent_at <= stale_sent)),
        ))
    ).all()  # fmt: skip
    for c, params in rows:
        queue = (params or {}).get("queue") or default_queue
        if c.status == JobStatus.running:
            if not lease_free(c.lease_owner, c.lease_expires, "", now, dead):
                continue  # a live worker holds it
            if c.attempts >= MAX_ATTEMPTS:
                chunk_fails_job(s, c.id, f"chunk {c.idx} ({c.t_start:.0f}-{c.t_end:.0f} s) was abandoned {c.attempts} "
                                         f"times by workers that died while analysing it (out of memory?)")  # fmt: skip
                continue
            res = s.execute(
                update(JobChunk).where(JobChunk.id == c.id, JobChunk.status == JobStatus.running,
                                       _same_owner(JobChunk.lease_owner, c.lease_owner))
                .values(status=JobStatus.queued, lease_owner=None, lease_expires=None, sent_at=now,
                        error=f"worker {c.lease_owner} stopped renewing its lease")  # fmt: skip
            )
        else:
            res = s.execute(
                update(JobChunk).where(JobChunk.id == c.id, JobChunk.status == JobStatus.queued,
                                       _same_owner(JobChunk.sent_at, c.sent_at))
                .values(sent_at=now)
            )  # fmt: skip
        if res.rowcount == 1:
            out.append(Resend("chunk", c.id, queue))
    jobs = s.scalars(
        select(Job).where(Job.task == task, Job.status.in_(ACTIVE), Job.phase.in_(("plan", "link")))
    ).all()  # fmt: skip
    return out + _reap_jobs(s, jobs, stale_sent, now, dead, lambda j: Resend(j.phase, j.id))


def reap_one_phase(s: Session, tasks: Sequence[str], requeue_after_s: float, dead: DeadOwner | None = None,
                   now: datetime | None = None) -> list[Resend]:  # fmt: skip
    """``reap`` for jobs done in one leased step (``claim_job`` of phase 'plan', then ``finish_job``):
    an expired lease of a dead worker, or a message nobody took within ``requeue_after_s``, is sent again."""
    now = now or utcnow()
    jobs = s.scalars(select(Job).where(Job.task.in_(list(tasks)), Job.status.in_(ACTIVE), Job.phase == "plan")).all()
    return _reap_jobs(s, jobs, now - timedelta(seconds=requeue_after_s), now, dead,
                      lambda j: Resend("task", j.id, task=j.task))  # fmt: skip


def _reap_jobs(s: Session, jobs, stale_sent: datetime, now: datetime, dead: DeadOwner | None, resend) -> list[Resend]:
    out: list[Resend] = []
    for j in jobs:
        if j.lease_owner is not None:
            if not lease_free(j.lease_owner, j.lease_expires, "", now, dead):
                continue
        elif j.sent_at is not None and _aware(j.sent_at) > stale_sent:
            continue  # sent recently: a worker will take it
        elif j.sent_at is None and _aware(j.created_at) > stale_sent:
            continue  # just created: its sender is about to send it
        res = s.execute(
            update(Job).where(Job.id == j.id, Job.phase == j.phase, _same_owner(Job.lease_owner, j.lease_owner),
                              _same_owner(Job.sent_at, j.sent_at))
            .values(lease_owner=None, lease_expires=None, sent_at=now)
        )  # fmt: skip
        if res.rowcount == 1:
            out.append(resend(j))
    return out


# --- operators: list, retry, cancel ------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """A job as an operator sees it, with whether it is stale (running, but no worker renews it)."""

    id: int
    session_id: int | None
    task: str
    status: str
    phase: str
    progress: float
    chunks_done: int
    chunks_total: int
    message: str
    error: str | None
    heartbeat_age_s: float | None
    stale: bool

    @property
    def state(self) -> str:
        return f"{self.status} (stale: no heartbeat for {self.heartbeat_age_s:.0f} s)" if self.stale else self.status


def job_views(s: Session, lease_s: float, limit: int = 50, now: datetime | None = None,
              job_id: int | None = None) -> list[JobView]:  # fmt: skip
    """Newest jobs first (or only ``job_id``), each with the state ``affectline jobs list`` shows."""
    now = now or utcnow()
    out = []
    q = select(Job).order_by(Job.id.desc()).limit(limit)
    for j in s.scalars(q if job_id is None else q.where(Job.id == job_id)):
        hb = _aware(j.heartbeat_at or j.started_at)
        age = (now - hb).total_seconds() if hb is not None else None
        leased = j.heartbeat_at is not None or j.lease_owner is not None  # chunked analyses; other tasks keep no heartbeat
        stale = j.status == JobStatus.running and leased and (age is None or age > 2 * lease_s)
        out.append(JobView(j.id, j.session_id, j.task, j.status.value, j.phase, min(j.progress or 0.0, 1.0),
                           min(j.chunks_done, j.chunks_total), j.chunks_total, j.message or "", j.error, age, stale))  # fmt: skip
    return out


def cancel_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    if job.status not in ACTIVE:
        raise ValueError(f"job {job_id} is {job.status.value}, not queued or running: nothing to cancel")
    now = utcnow()
    s.execute(
        update(Job).where(Job.id == job_id)
        .values(status=JobStatus.cancelled, message="cancelled", finished_at=now, lease_owner=None, lease_expires=None)
    )  # fmt: skip
    _stop_chunks(s, job_id, JobStatus.cancelled)
    s.refresh(job)
    return job


def retry_job(s: Session, job_id: int, lease_s: float, now: datetime | None = None) -> Job:
    """Queue a failed, cancelled or stale job again; its finished chunks are kept (same version)."""
    now = now or utcnow()
    job = s.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    view = next((v for v in job_views(s, lease_s, limit=10**6, now=now) if v.id == job_id), None)
    if job.status == JobStatus.done or (job.status in ACTIVE and not (view and view.stale)):
        raise ValueError(f"job {job_id} is {job.status.value} and not stale: nothing to retry")
    s.execute(
        update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status != JobStatus.done)
        .values(status=JobStatus.queued, lease_owner=None, lease_expires=None, attempts=0, sent_at=None, error=None)
    )  # fmt: skip
    s.execute(
        update(Job).where(Job.id == job_id)
        .values(status=JobStatus.queued, phase="plan", error=None, message="queued again", finished_at=None,
                lease_owner=None, lease_expires=None, sent_at=now, heartbeat_at=None)  # fmt: skip
    )
    s.refresh(job)
    return job
