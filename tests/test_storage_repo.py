"""storage.repo: idempotent replacement, tags kept across re-analysis, export order, audit."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from affectline.features import FEATURE_NAMES
from storage.db import session_scope
from storage.models import AuditEntry, Person, Recording, Tag, TimeBin
from storage.repo import (
    EXPORT_COLUMNS,
    AnalysisResult,
    TrackRecord,
    class_engagement,
    create_recording,
    delete_session,
    export_frame,
    replace_analysis,
    session_bins,
)


def _track(key: int, t0: int, n: int, emb: np.ndarray, engagement: float) -> TrackRecord:
    times = np.arange(t0, t0 + n, dtype=np.float32) + 0.25
    bins = pd.DataFrame({"t_start": np.arange(t0, t0 + n, dtype=float), "t_end": np.arange(t0 + 1, t0 + n + 1, dtype=float),
                         "face_visible": [True] * n, "engagement": [engagement] * n})  # fmt: skip
    for c, v in zip(("neutrality", "enjoyment", "confusion", "fatigue", "distraction"), (0.6, 0.1, 0.1, 0.1, 0.1)):
        bins[c] = v
    for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        bins[c] = 1 / 7
    return TrackRecord(key, times, np.tile([10, 10, 50, 50], (n, 1)), np.tile([0, 0, 100, 100], (n, 1)), emb, bins,
                       np.zeros((n, len(FEATURE_NAMES)), np.float32), FEATURE_NAMES)  # fmt: skip


def _result(rid: int, tracks: list[TrackRecord]) -> AnalysisResult:
    return AnalysisResult(rid, 25.0, 250, 640, 360, 4.0, 1.0, "cues@abc", "fer@def", tracks)


def test_replace_is_idempotent_and_keeps_tags_on_the_same_face(db_url):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=128).astype(np.float32) * 0.05, rng.normal(size=128).astype(np.float32) * 0.05 + 0.2
    with session_scope(db_url) as s:
        rid = create_recording(s, "/v.mp4", "therapy").id
        person_of = replace_analysis(s, _result(rid, [_track(0, 0, 10, a, 0.8), _track(1, 0, 10, b, 0.3)]))
        s.add(Tag(uid="t1", session_id=rid, person_id=person_of[1], t_start=2, t_end=4, label="happy", author="dr"))
    with session_scope(db_url) as s:
        # Re-analysis finds the same two faces in the other order: B is now track 0.
        person_of2 = replace_analysis(s, _result(rid, [_track(0, 0, 10, b + 0.01, 0.3), _track(1, 0, 10, a, 0.8)]))
        assert s.scalar(select(func.count()).select_from(TimeBin)) == 20
        assert s.scalar(select(func.count()).select_from(Person)) == 2
        tag = s.scalars(select(Tag)).one()
        assert tag.person_id == person_of2[0]  # followed face B, not the track number


def test_tag_on_a_face_that_disappears_keeps_its_person(db_url):
    e = np.zeros(128, np.float32)
    with session_scope(db_url) as s:
        rid = create_recording(s, "/v.mp4", "therapy").id
        person_of = replace_analysis(s, _result(rid, [_track(0, 0, 5, e, 0.5)]))
        s.add(Tag(uid="t1", session_id=rid, person_id=person_of[0], t_start=1, t_end=2, label="sad", author="dr"))
    with session_scope(db_url) as s:
        replace_analysis(s, _result(rid, []))
        assert s.scalars(select(Tag)).one().person_id == person_of[0]


def test_export_order_engagement_and_delete_audit(db_url):
    with session_scope(db_url) as s:
        rid = create_recording(s, "/v.mp4", "classroom").id
        replace_analysis(s, _result(rid, [_track(0, 0, 3, None, 0.2), _track(1, 1, 3, None, 0.6)]))
        df = export_frame(s, rid)
        assert list(df.columns) == list(EXPORT_COLUMNS) and len(df) == 6
        ce = class_engagement(session_bins(s, rid))
        assert ce.set_index("t_start")["engagement"].round(3).to_dict() == {0.0: 0.2, 1.0: 0.4, 2.0: 0.4, 3.0: 0.6}
        delete_session(s, rid, actor="admin1")
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(TimeBin)) == 0
        entry = s.scalars(select(AuditEntry)).one()
        assert (entry.actor, entry.action, entry.target) == ("admin1", "delete_session", f"session:{rid}")


def test_group_creation_race_returns_the_existing_group(db_url, monkeypatch):
    from storage.repo import get_or_create_group

    with session_scope(db_url) as s:
        first = get_or_create_group(s, "Year 9", "classroom").id
    with session_scope(db_url) as s:
        # Another upload created the group between our lookup and our insert:
        # the first lookup misses, the insert collides, the retry finds the row.
        real, calls = s.scalar, []

        def scalar(q, *a, **k):
            calls.append(q)
            return None if len(calls) == 1 else real(q, *a, **k)

        monkeypatch.setattr(s, "scalar", scalar)
        assert get_or_create_group(s, "Year 9", "classroom").id == first
        assert len(calls) == 2
