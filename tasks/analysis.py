"""An analysis job as a Celery canvas: plan -> group of chunk tasks -> link, with a reaper in every worker.

- **plan** (``ANALYZE_TASK``): opens the video, cuts it into chunk windows, writes one
  row per chunk (``storage.jobs.plan_chunks``) and sends the chunks as a ``group``.
- **chunk** (``CHUNK_TASK``): ``tasks.chunks.run_chunk`` on any worker.
- **link** (``LINK_TASK``): sent by whichever chunk finishes last (``storage.jobs.start_link``
  is true exactly once); stitches identities, stores the timelines in one transaction, marks
  the job done, then queues the session's re-scoring for the clinicians as a job of its own
  (``RESCORE_TASK``: its failure never fails an analysis whose timelines are stored).

Why not a chord: a chord counts its header's task results in the result backend, and a
chunk re-sent by the reaper (a new message for a dead worker's chunk) or skipped as a
duplicate would be miscounted. Here the chunk rows are the count, so "all chunks done" is
one query whoever asks, on Redis and the embedded SQLite broker alike.

The reaper (``tasks.lease.Reaper``, started in every worker) re-sends what ``storage.jobs.reap`` and
``reap_one_phase`` find, for every kind of job (analyses, personalisation, re-scoring): expired
leases of dead workers, and messages a broker lost.

Plan and link messages go to ``affectline.queue.CONTROL_QUEUE``, which every worker takes
before its chunk queue: a job's link never waits behind other jobs' chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Callable

from affectline.settings import MAX_ANALYSIS_FPS, Settings, analysis_fps_problem, get_settings
from affectline.task_names import CHUNK_TASK, RESCORE_TASK
from storage import jobs
from storage.db import session_scope
from storage.models import Job, Recording
from storage.repo import create_job
from tasks.lease import Heartbeat, owner_dead, owner_id, with_db

log = logging.getLogger(__name__)
Hook = Callable[[float, str], None]


def pipeline_version(s: Settings, fps: float, overlap_s: float) -> str:
    """What a chunk's result depends on besides the video: the same version means reusable results."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        code = version("affectline")
    except PackageNotFoundError:
        code = "dev"
    keys = ("chunk_seconds", "bin_seconds", "detector", "min_face_px", "min_face_frac", "full_search_every_s",
            "follow", "landmarker", "academic_model", "caer_checkpoint", "embedder", "store_thumbnails",
            "readable_min_iod_px", "readable_max_yaw", "readable_max_pitch", "readable_min_sharpness")  # fmt: skip
    from pipeline.chunk import FORMAT
    from recognition.academic.cues import CueModel

    # "gate": chunk results carry the readability gate's columns since issue 17 (2: its thresholds re-derived
    # from the default model's curve, pupils >= 10 px, sharpness >= 40); the chunk format and
    # the cue model's fingerprint: a chunk made by other code (older stored results) is never reused.
    # "timing": frames timed by their own timestamps (issue 20), not index / average fps.
    spec = {k: str(getattr(s, k)) for k in keys} | {"fps": fps, "overlap_s": overlap_s, "code": code, "gate": 2,
                                                    "chunk_format": FORMAT, "cues": CueModel().sha256,
                                                    "timing": "pts"}  # fmt: skip
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# --- sending -------------------------------------------------------------------------------------


def send_chunks(app, chunk_ids: list[int], queue: str | None) -> None:
    """The chunks as one Celery group: any worker on ``queue`` may take any of them."""
    from celery import group

    if chunk_ids:
        group(app.signature(CHUNK_TASK, args=[cid], queue=queue) for cid in chunk_ids).apply_async()


# --- plan ----------------------------------------------------------------------------------------


def job_shape(params: dict, s: Settings) -> tuple[float, float, float]:
    """(chunk_seconds, overlap_s, bin_seconds) of a job: the job row's, else the planner's settings.

    The submitter may set them in the job's params (the bench and tests do); otherwise the
    first plan takes ``AFFECTLINE_CHUNK_SECONDS`` / ``AFFECTLINE_BIN_SECONDS`` of the worker
    that plans and records them (``analysis_fps`` likewise, from the submitter). Chunks, the
    link and any re-plan read the recorded values, never their own environment."""
    from pipeline.analyse import Pipeline

    chunk_s = float(params.get("chunk_seconds") or s.chunk_seconds)
    overlap = float(params.get("overlap_s", Pipeline.chunk_overlap_s))
    bin_s = float(params.get("bin_seconds") or s.bin_seconds)
    return chunk_s, overlap, bin_s



def run_plan(job_id: int, settings: Settings | None = None) -> tuple[list[int], bool, str | None]:
    """Plan job ``job_id``: (chunk ids to send, whether to send the link now, chunk queue).

    Returns ([], False, None) when the job is not ours to plan (done, taken, gone). Bad input
    fails the job with a one-line error.
    """
    from pipeline.analyse import chunk_windows
    from pipeline.decode import open_video
    from pipeline.video import VideoError

    s_ = settings or get_settings()
    url, me = s_.resolved_database_url, owner_id()

    def claim(s):
        job = jobs.claim_job(s, job_id, "plan", me, s_.lease_seconds, dead=owner_dead)
        if job is None:
            return None
        rec = s.get(Recording, job.session_id) if job.session_id is not None else None
        job.message = "planning chunks"
        return dict(job.params or {}), rec.video_path if rec else None

    got = with_db(url, claim, what=f"claiming job {job_id}")
    if got is None:
        return [], False, None
    params, video = got
    # One rule for the job's shape (see ``job_shape``): what the job row holds wins, else this
    # planner's settings, and the values used are written back, so a retry planned by a worker
    # with another environment cuts the same windows and every chunk and the link read them.
    chunk_s, overlap, bin_s = job_shape(params, s_)
    try:
        if video is None:
            raise VideoError(f"job {job_id}: its session was deleted")
        src = open_video(video)  # bad input fails here, before any worker loads models
        fps = float(params.get("analysis_fps") or s_.analysis_fps)
        if not (math.isfinite(fps) and fps > 0):
            raise VideoError(f"{video}: analysis fps must be a positive number, got {fps!r}")
        problem = analysis_fps_problem(fps, bin_s) if fps <= MAX_ANALYSIS_FPS else None  # above: every frame
        if problem:
            raise VideoError(f"{video}: analysis fps {fps:g} {problem}")
        fps = min(fps, src.info.fps)
    except VideoError as e:
        msg = str(e)  # bound here: the name e ends with the block
        with_db(url, lambda s: jobs.fail_job(s, job_id, msg))
        return [], False, None
    windows = [(w.start, w.end) for w in chunk_windows(src.info.duration, chunk_s, bin_s)]
    version = pipeline_version(s_.model_copy(update={"chunk_seconds": chunk_s, "bin_seconds": bin_s}), fps, overlap)
    queue = params.get("queue") or s_.chunk_queue

    def plan(s):
        job = s.get(Job, job_id)
        if job is None or job.lease_owner != me:
            return None
        job.params = {**(job.params or {}), "version": version, "analysis_fps": fps, "overlap_s": overlap,
                      "chunk_seconds": chunk_s, "bin_seconds": bin_s, "queue": queue,
                      "duration": src.info.duration}  # fmt: skip
        chunks = jobs.plan_chunks(s, job_id, version, windows)
        if not jobs.enter_chunks(s, job_id, me):
            return None
        todo = [c.id for c in chunks if c.status != jobs.JobStatus.done]
        jobs.mark_sent(s, todo)
        jobs.refresh_progress(s, job_id)
        return todo, (not todo) and jobs.start_link(s, job_id)

    out = with_db(url, plan, what=f"planning job {job_id}")
    if out is None:
        return [], False, None
    log.info("job %s: %d chunks of %.0f s (%d to do), version %s", job_id, len(windows), chunk_s, len(out[0]), version)
    return out[0], bool(out[1]), queue


# --- link ----------------------------------------------------------------------------------------


def run_link(job_id: int, settings: Settings | None = None, hook: Hook | None = None,
             send_rescore: Callable[[int], None] | None = None) -> bool:
    """Stitch the job's chunks, store the session's timelines and finish the job; then queue the session's
    re-scoring job (``send_rescore(job id)``; None: run it here). False when the link is not ours to do."""
    from tasks.store import JobFailed, store
    from tasks.chunks import load_results
    from pipeline.link import link_chunk_results

    s_ = settings or get_settings()
    url, me, lease = s_.resolved_database_url, owner_id(), s_.lease_seconds

    def claim(s):
        job = jobs.claim_job(s, job_id, "link", me, lease, dead=owner_dead)
        if job is None:
            return None
        job.message = "linking identities across chunks"
        return job.session_id, dict(job.params or {})

    got = with_db(url, claim, what=f"claiming job {job_id}")
    if got is None:
        return False
    session_id, params = got

    def renew(_p) -> bool:
        with session_scope(url) as s:
            return jobs.renew_job(s, job_id, me, lease)

    try:
        with Heartbeat(renew, lease):
            if hook:
                hook(jobs.LINK_SHARE, "linking identities across chunks")
            results = load_results(url, job_id, params["version"])
            out = link_chunk_results(results, results[0].info, float(params["analysis_fps"]), s_)
            del results
            store(url, session_id, out, s_)
            from tasks.review_copy import finish_for_job

            with session_scope(url) as s:
                video = s.get(Recording, session_id).video_path
            review = finish_for_job(url, s_.data_dir, job_id, session_id, params["version"], video)
    except JobFailed as e:
        msg = str(e)  # bound here: the name e ends with the block
        with_db(url, lambda s: jobs.fail_job(s, job_id, msg))
        return True
    except Exception as e:
        log.exception("job %s: link failed", job_id)
        msg = f"job {job_id}: linking the chunks failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        with_db(url, lambda s: jobs.fail_job(s, job_id, msg))
        return True
    n = len(out.tracks)
    done = f"done: {n} person{'s' * (n != 1)}" + (f"; {review}" if review else "")
    if not with_db(url, lambda s: jobs.finish_job(s, job_id, me, done)):
        return True  # our lease was lost meanwhile: the worker that took over queues the re-scoring
    if hook:
        hook(1.0, f"done: {n} person{'s' * (n != 1)}")
    # Step two: the timelines are stored and the job is done; the clinicians' re-scoring is a job of its
    # own, so a re-scoring error fails that job, never the analysis whose timelines are stored.
    rescore = with_db(url, lambda s: create_job(s, RESCORE_TASK, session_id=session_id, params={"why": "analysed"}).id)
    if send_rescore is None:
        from tasks.clinic import run_rescore_job

        run_rescore_job(rescore, s_)  # in this process (--eager), after the analysis is done
    else:
        try:
            send_rescore(rescore)
        except Exception as e:  # a lost message: the reaper sends it again (storage.jobs.reap_one_phase)
            log.warning("job %s: re-scoring job %s not sent yet: %s", job_id, rescore, str(e).splitlines()[0][:200])
    return True


# --- in one process (``affectline analyze --eager``) ---------------------------------------------


def run_job_here(job_id: int, settings: Settings | None = None, hook: Hook | None = None, pipeline=None) -> None:
    """Plan, every chunk and the link in this process: the same code and rows as on workers."""
    from tasks.chunks import run_chunk

    s_ = settings or get_settings()
    todo, link, _ = run_plan(job_id, s_)
    n = max(len(todo), 1)
    for k, cid in enumerate(todo):
        sub = (lambda f, m, k=k: hook(jobs.LINK_SHARE * (k + f) / n, f"chunk {k + 1}/{len(todo)}: {m}")) if hook else None
        out = run_chunk(cid, s_, pipeline=pipeline, hook=sub)
        if out.status in ("failed", "lost"):
            return
        if out.status == "released":  # one retry here, as a worker's reaper would
            out = run_chunk(cid, s_, pipeline=pipeline, hook=sub)
            if out.status != "done":
                return
        link = link or out.link
    if link:
        run_link(job_id, s_, hook=hook)
