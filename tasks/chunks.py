"""One chunk of an analysis job on whichever worker takes it: lease, heartbeat, analyse, store.

The chunk's lease (``storage.jobs``, ``tasks.lease``) is renewed by a heartbeat thread while the pipeline
runs; if the lease is lost (this worker stalled past it and another took the chunk, or the
job was cancelled) the chunk stops at its next progress step and stores nothing. The result
is written only while the lease is still ours, into the chunk's own row, so a chunk done
twice is stored once and a retried chunk replaces only itself.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

from affectline.settings import Settings, get_settings
from storage import jobs
from storage.db import session_scope
from storage.models import Job, JobChunk, Recording
from tasks.lease import Heartbeat, LeaseLost, owner_dead, owner_id, with_db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkOutcome:
    status: str  # 'done', 'skipped', 'lost', 'released', 'failed'
    job_id: int | None = None
    link: bool = False  # this chunk was the job's last: the caller sends the link task


def run_chunk(chunk_id: int, settings: Settings | None = None, pipeline=None,
              hook: Callable[[float, str], None] | None = None) -> ChunkOutcome:  # fmt: skip
    """Analyse chunk ``chunk_id`` if it is ours to do. Never raises for bad input: the job is failed instead."""
    from pipeline.chunk import ChunkWindow, JobShape
    from pipeline.decode import open_video
    from pipeline.video import VideoError
    from tasks.store import get_pipeline

    s_ = settings or get_settings()
    url, me, lease = s_.resolved_database_url, owner_id(), s_.lease_seconds

    def claim(s):
        c = jobs.claim_chunk(s, chunk_id, me, lease, dead=owner_dead)
        if c is None:
            return None
        job = s.get(Job, c.job_id)
        rec = s.get(Recording, job.session_id) if job.session_id is not None else None
        from storage.review import session_allows

        return (c.job_id, c.idx, c.t_start, c.t_end, c.attempts, dict(job.params or {}),
                rec.video_path if rec is not None else None, job.session_id,
                rec is not None and session_allows(s, rec.id))  # fmt: skip

    got = with_db(url, claim, what=f"claiming chunk {chunk_id}")
    if got is None:
        return ChunkOutcome("skipped")
    job_id, idx, t0, t1, attempts, params, video, session_id, review = got
    log.info("chunk %s (job %s, #%s, %.1f-%.1f s) taken by %s", chunk_id, job_id, idx, t0, t1, me)
    if video is None:
        with_db(url, lambda s: jobs.chunk_fails_job(s, chunk_id, f"job {job_id}: its session was deleted"))
        return ChunkOutcome("failed", job_id)

    def renew(progress: float | None) -> bool:
        with session_scope(url) as s:
            return jobs.renew_chunk(s, chunk_id, me, lease, progress=progress)

    last = [0.0]
    try:
        with Heartbeat(renew, lease) as hb:

            def progress(frac: float, message: str) -> None:
                hb.progress = min(max(float(frac), 0.0), 1.0)
                now = time.monotonic()
                if now - last[0] >= 1.0:  # the bar moves every second, not every frame
                    last[0] = now
                    hb.beat()
                if hb.lost:
                    raise LeaseLost(f"chunk {chunk_id}: lease lost")
                if hook:
                    hook(hb.progress, message)

            src = open_video(video)
            # The job's shape as its plan recorded it (tasks.analysis.job_shape), not this worker's env:
            # a worker with another AFFECTLINE_BIN_SECONDS still cuts the job's bins.
            fps = float(params.get("analysis_fps") or s_.analysis_fps)
            if not (math.isfinite(fps) and fps > 0):
                raise VideoError(f"{video}: analysis fps must be a positive number, got {fps!r}")
            bin_s = float(params.get("bin_seconds") or s_.bin_seconds)
            pl = pipeline if pipeline is not None else get_pipeline(s_)  # the models only: the shape goes with the chunk
            overlap = float(params.get("overlap_s", getattr(pl, "chunk_overlap_s", 2.0)))
            shape = JobShape(fps, bin_s, overlap)
            # The review copy's part of this window, from the frames the analysis decodes (group setting).
            writer = _review_writer(s_, src, session_id, job_id, params, idx, t0, t1) if review else None
            try:
                res = pl.analyse_chunk(src, ChunkWindow(idx, t0, t1), shape, hook=progress,
                                       **({"tap": writer} if writer is not None else {}))  # fmt: skip
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            if writer is not None:
                _close_review(writer, chunk_id)
            data = res.to_bytes()
    except LeaseLost:
        log.warning("chunk %s: lease lost (taken over or job stopped); result dropped", chunk_id)
        return ChunkOutcome("lost", job_id)
    except VideoError as e:
        msg = str(e)  # bound here: the name e ends with the block
        with_db(url, lambda s: jobs.chunk_fails_job(s, chunk_id, msg))
        return ChunkOutcome("failed", job_id)
    except Exception as e:
        log.exception("chunk %s failed", chunk_id)
        msg = f"{video}: chunk {idx} ({t0:.0f}-{t1:.0f} s) failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        if attempts >= jobs.MAX_ATTEMPTS:
            with_db(url, lambda s: jobs.chunk_fails_job(s, chunk_id, msg))
            return ChunkOutcome("failed", job_id)
        with_db(url, lambda s: jobs.release_chunk(s, chunk_id, me, error=msg))
        return ChunkOutcome("released", job_id)

    def finish(s):
        if not jobs.finish_chunk(s, chunk_id, me, data):
            return None
        return jobs.start_link(s, job_id)

    link = with_db(url, finish, what=f"storing chunk {chunk_id}")
    if link is None:
        log.warning("chunk %s: lease lost before storing; another worker's result stands", chunk_id)
        return ChunkOutcome("lost", job_id)
    return ChunkOutcome("done", job_id, link=bool(link))


def _review_writer(s_: Settings, src, session_id: int, job_id: int, params: dict, idx: int, t0: float, t1: float):
    """The writer of this chunk's part of the review copy (``tasks.review_copy``)."""
    from tasks.review_copy import ReviewSpec, chunk_writer, part_path

    info = src.info
    spec = ReviewSpec(info.fps, info.width, info.height, s_.review_fps, s_.review_height)
    path = part_path(s_.data_dir, session_id, job_id, str(params.get("version", "")), idx)
    return chunk_writer(path, spec, t0, t1, last=t1 >= info.duration - 1e-6)


def _close_review(writer, chunk_id: int) -> None:
    from tasks.review_copy import ReviewCopyError

    try:
        writer.close()
    except ReviewCopyError as e:  # the analysis stands; the link says the copy is missing
        log.warning("chunk %s: review copy part not written: %s", chunk_id, e)


def load_results(url: str, job_id: int, version: str):
    """The job's stored chunk results, decoded one row at a time, in chunk order."""
    from pipeline.chunk import ChunkResult

    with session_scope(url) as s:
        ids = [c.id for c in jobs.job_chunks(s, job_id, version)]
    out = []
    for cid in ids:
        with session_scope(url) as s:
            c = s.get(JobChunk, cid)
            if c is None or c.result is None:
                raise RuntimeError(f"job {job_id}: chunk {cid} has no stored result")
            out.append(ChunkResult.from_bytes(c.result))
    return out
