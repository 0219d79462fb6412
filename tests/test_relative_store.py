"""A child's calibration baseline (a clinician's) replaces the session's median in the cue model's
reading, end to end: real footage, a job row, ``run_analysis`` and the stored bins."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select

from affectline.types import EXPRESSION_CLASSES
from recognition.personal.calibration import MODEL_FEATURE_NAMES, Baseline
from recognition.personal.population import TAU
from storage import people
from storage import person_models as pm
from storage.db import session_scope
from storage.models import TimeBin

from tests.test_persons_reanalysis import analyse, memo, pipeline, tracks  # noqa: F401 (fixtures)


def _frontal_neutral_baseline(n_bins: int = 60) -> bytes:
    """What a clinician's baseline segment of a child facing the camera, at rest, gives."""
    center = np.zeros(len(MODEL_FEATURE_NAMES))
    p = np.zeros(len(EXPRESSION_CLASSES))
    p[EXPRESSION_CLASSES.index("neutral")] = 1.0
    center[-len(p) :] = np.log(p + TAU)
    return Baseline(center, np.ones_like(center), n_bins, "tags").to_bytes()


def _distraction(db_url, session_id: int, person_id: int) -> float:
    with session_scope(db_url) as s:
        q = select(TimeBin.distraction).where(TimeBin.session_id == session_id, TimeBin.person_id == person_id)
        v = [x for x in s.scalars(q) if x is not None]
    assert v
    return float(np.mean(v))


def test_a_clinicians_baseline_replaces_the_sessions_median(db_url, settings, memo):  # noqa: F811
    s1 = analyse(db_url, settings, memo)
    left, right = tracks(db_url, s1)  # the woman (left) sits turned ~27 degrees all clip long
    with session_scope(db_url) as s:
        ann = people.enroll(s, s1, left["key"], "Ann", "clinician").id
        ben = people.enroll(s, s1, right["key"], "Ben", "clinician").id
    # Read against her own session: her usual pose, not distraction.
    before_ann, before_ben = _distraction(db_url, s1, ann), _distraction(db_url, s1, ben)
    assert before_ann < 0.3
    # A clinician's baseline taken facing the camera: against it, her turn is distraction again.
    with session_scope(db_url) as s:
        pm.save_model(s, ann, "baseline", _frontal_neutral_baseline(), {"n_bins": 60, "source": "tags"},
                      activate=True, actor="clinician")  # fmt: skip
    s2 = analyse(db_url, settings, memo)
    assert [r["person"] for r in tracks(db_url, s2)] == [ann, ben]
    assert _distraction(db_url, s2, ann) > before_ann + 0.2
    # Ben has no baseline of his own: read against his session as before.
    assert abs(_distraction(db_url, s2, ben) - before_ben) < 1e-6
