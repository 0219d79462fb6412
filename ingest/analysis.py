"""Run one analysis job end to end: job row -> pipeline -> stored timelines.

Shared by the Celery task and ``affectline analyze --eager`` so both run the same
code. Idempotent: re-running a job replaces the session's earlier results in one
transaction, and a failure leaves whatever was stored before untouched.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import numpy as np
from sqlalchemy import select

from affectline.settings import Settings, get_settings
from ingest.pipeline import Pipeline, PipelineOutput
from ingest.video import VideoError, VideoSource
from storage.db import from_blob, session_scope
from storage.models import JobStatus, Person, PersonEmbedding, Recording
from storage.repo import AnalysisResult, TrackRecord, replace_analysis, update_job
from affectline.features import FEATURE_NAMES

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The job could not be done; its message is what the user sees."""


@lru_cache(maxsize=2)
def _pipeline(settings_json: str) -> Pipeline:
    # One set of loaded models per worker process, built on first use, never at import.
    return Pipeline(Settings.model_validate_json(settings_json))


def get_pipeline(settings: Settings) -> Pipeline:
    return _pipeline(settings.model_dump_json())


def _progress_writer(url: str, job_id: int, min_interval: float = 1.0):
    last = [0.0]

    def hook(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] < min_interval and fraction < 1.0:
            return
        last[0] = now
        with session_scope(url) as s:
            update_job(s, job_id, progress=round(float(fraction), 4), message=message)

    return hook


def _enrolled_embeddings(s, group_id: int | None) -> dict[int, np.ndarray]:
    q = select(PersonEmbedding.person_id, PersonEmbedding.vector).join(Person).where(Person.enrolled.is_(True))
    if group_id is not None:
        q = q.where(Person.group_id == group_id)
    out: dict[int, list[np.ndarray]] = {}
    for pid, vec in s.execute(q):
        out.setdefault(pid, []).append(from_blob(vec))
    return {pid: np.stack(v) for pid, v in out.items()}


def store(url: str, recording_id: int, out: PipelineOutput, settings: Settings) -> dict[int, int]:
    """Assign tracks to persons and replace the session's results (one transaction).

    Human corrections of this session (identity overrides) are applied first and take the
    tracks, or parts of tracks, they claim; the rest are matched to the enrolled persons of
    the session's group by embedding; what stays unmatched becomes 'Unknown N'.
    """
    from recognition.tracking import assign_to_persons
    from storage.people import apply_overrides, override_specs, slack

    with session_scope(url) as s:
        rec = s.get(Recording, recording_id)
        enrolled = _enrolled_embeddings(s, rec.group_id)
        records = [
            TrackRecord(
                track_key=t.key, times=t.times, face_boxes=t.face_boxes, context_boxes=t.context_boxes,
                embedding=t.embedding, bins=t.bins, features=t.features, feature_names=FEATURE_NAMES,
                thumbnail=t.thumbnail if settings.store_thumbnails else None,
            )
            for t in out.tracks
        ]  # fmt: skip
        overrides = override_specs(s, recording_id)
        records = apply_overrides(records, overrides, settings.enroll_threshold, tol=slack(out.analysis_fps))
        free = [i for i, r in enumerate(records) if r.person_id is None and r.embedding is not None]
        if enrolled and free:
            res = assign_to_persons(np.stack([records[i].embedding for i in free]), enrolled, settings.enroll_threshold)
            for i, (pid, score) in zip(free, res):
                if pid is not None:
                    records[i].person_id, records[i].match_score = pid, float(score)
        result = AnalysisResult(
            recording_id=recording_id, fps=out.info.fps, n_frames=out.info.n_frames, width=out.info.width,
            height=out.info.height, analysis_fps=out.analysis_fps, bin_seconds=out.bin_seconds,
            academic_model=out.academic_model, expression_model=out.expression_model, tracks=records,
        )  # fmt: skip
        return replace_analysis(s, result)


def run_analysis(job_id: int, settings: Settings | None = None, hook=None, pipeline: Pipeline | None = None) -> None:
    """Do job ``job_id``. Raises JobFailed with a user-facing message on bad input.

    ``pipeline`` defaults to this process's cached one (models load once per worker).
    """
    s_ = settings or get_settings()
    url = s_.resolved_database_url
    with session_scope(url) as s:
        from storage.models import Job

        job = s.get(Job, job_id)
        if job is None:
            raise JobFailed(f"job {job_id} does not exist")
        if job.status == JobStatus.done:
            return  # already done: a redelivered message is a no-op
        rec = s.get(Recording, job.session_id)
        video, params = rec.video_path, dict(job.params or {})
        update_job(s, job_id, status=JobStatus.running, progress=0.0, message="opening video", error=None)
    fps = float(params.get("analysis_fps") or s_.analysis_fps)
    writer = _progress_writer(url, job_id)

    def both(f: float, m: str) -> None:
        writer(f, m)
        if hook:
            hook(f, m)

    try:
        src = VideoSource(video)  # bad input fails here, before minutes of model loading
        if pipeline is None:
            both(0.0, "loading models")
            pipeline = get_pipeline(s_)
        out = pipeline.apply(src, hook=both, fps=fps)
        store(url, rec.id, out, s_)
        # The clinicians' per-window label and confidence ("uncertain" when unreliable),
        # from each person's active personal model, baseline, or the population model.
        from ingest.clinic import population_rescore

        population_rescore(url, rec.id, s_)
    except VideoError as e:
        _fail(url, job_id, str(e))
        raise JobFailed(str(e)) from None
    except Exception as e:
        log.exception("job %s failed", job_id)
        msg = f"{video}: analysis failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
        _fail(url, job_id, msg)
        raise JobFailed(msg) from e
    with session_scope(url) as s:
        n = len(out.tracks)
        update_job(s, job_id, status=JobStatus.done, progress=1.0, message=f"done: {n} person{'s' * (n != 1)}")


def _fail(url: str, job_id: int, message: str) -> None:
    with session_scope(url) as s:
        update_job(s, job_id, status=JobStatus.failed, error=message, message="failed")
