"""Run one analysis job end to end: job row -> pipeline -> stored timelines.

The chunked job itself is ``tasks.analysis`` (plan -> chunks -> link; ``tasks.eager`` runs one in
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
from pipeline.analyse import JOB_FIELDS, Pipeline, PipelineOutput
from storage.db import from_blob, session_scope
from storage.models import Person, PersonEmbedding, Recording
from storage.repo import AnalysisResult, TrackRecord, replace_analysis
from affectline.features import FEATURE_NAMES

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The job could not be done; its message is what the user sees."""


@lru_cache(maxsize=2)
def _pipeline(model_settings_json: str) -> Pipeline:
    # One set of loaded models per worker process, built on first use, never at import.
    return Pipeline(Settings.model_validate_json(model_settings_json))


def get_pipeline(settings: Settings) -> Pipeline:
    """This process's loaded models for ``settings``, keyed by what chooses and configures the models
    only: a job's own shape (bin length, frames a second, chunk length: ``pipeline.analyse.JOB_FIELDS``)
    is passed to each ``analyse_chunk`` and never loads a second set."""
    return _pipeline(settings.model_dump_json(exclude=set(JOB_FIELDS)))


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

    The roster (the group's enrolled persons, this session's identity overrides) is read here and
    ``identity.resolve`` says who each track is: overrides first, then the enrolled by embedding;
    what stays unmatched becomes 'Unknown N' in the writer.
    """
    from clinic.calibrate import reread_against_baselines
    from identity.resolve import Roster, resolve
    from storage.people import override_specs

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
        roster = Roster(enrolled, override_specs(s, recording_id), settings.enroll_threshold, out.analysis_fps)
        records = resolve(records, roster)
        reread_against_baselines(s, records, out)  # a child's clinician baseline, where one is active
        result = AnalysisResult(
            recording_id=recording_id, fps=out.info.fps, n_frames=out.info.n_frames, width=out.info.width,
            height=out.info.height, analysis_fps=out.analysis_fps, bin_seconds=out.bin_seconds,
            academic_model=out.academic_model, expression_model=out.expression_model, tracks=records,
            duration=out.info.duration,
        )  # fmt: skip
        return replace_analysis(s, result)
