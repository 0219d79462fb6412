"""Run one analysis job end to end: job row -> pipeline -> stored timelines.

The chunked job itself is ``ingest.jobs`` (plan -> chunks -> link; ``ingest.eager`` runs one in
this process); this module keeps what the chunk and link tasks use: the per-process pipeline and
``store``. It imports neither, so the job modules import it and not the other way round. Idempotent: re-running a job replaces the session's earlier results in one
transaction, and a failure leaves whatever was stored before untouched.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from sqlalchemy import select

from affectline.settings import Settings
from ingest.pipeline import Pipeline, PipelineOutput
from storage.db import from_blob, session_scope
from storage.models import Person, PersonEmbedding, Recording
from storage.repo import AnalysisResult, TrackRecord, replace_analysis
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
        if rec is None:
            raise JobFailed(f"session {recording_id} was deleted during its analysis; nothing stored")
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
