"""services.checkins: per-student moments against each student's own baseline, on planted and real timelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services import checkins as ck
from services import summaries as sm
from tests.big_session import Event, planted_bins, with_person_columns

FIVE = (3, 7, 11, 15, 19)


@pytest.fixture(scope="module")
def five_distracted() -> pd.DataFrame:
    """30 students, 30 minutes; students 04, 08, 12, 16, 20 distracted together from 20:00 to 23:00."""
    return with_person_columns(planted_bins(30, 1800, (Event("distraction", 1200, 1380, FIVE),), seed=11))


def _flat(n_bins: int, distraction: dict[int, np.ndarray], step: float = 1.0) -> pd.DataFrame:
    """Hand-made bins: person -> per-bin distraction probability (the rest neutral), all visible and readable."""
    rows = []
    for pid, d in distraction.items():
        d = np.asarray(d, float)
        rows.append(pd.DataFrame({
            "person_id": pid, "person_label": f"P{pid:02d}", "t_start": step * np.arange(n_bins), "face_visible": True,
            "readable": 1.0, "engagement": 1 - d, "neutrality": 1 - d, "enjoyment": 0.0, "confusion": 0.0,
            "fatigue": 0.0, "distraction": d,
        }))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def test_five_students_distracted_together_are_flagged_though_the_class_mean_hardly_moves(five_distracted):
    # The class-wide rule finds nothing: five of thirty do not move the class mean far enough ...
    assert not [m for m in sm.moments(five_distracted) if m.kind == "distraction" and m.t_start < 1400 < m.t_end + 200]
    # ... each of the five is flagged against their own usual level, at the moment to watch, and nobody else.
    found = [c for c in ck.checkins(five_distracted) if c.state == "distraction"]
    assert sorted(c.person_id for c in found) == [p + 1 for p in FIVE]
    for c in found:
        assert abs(c.t_start - 1200) <= 20 and abs(c.t_end - 1380) <= 20, c.describe()
        assert c.level > c.usual + 0.3 and c.usual < 0.2
    assert [c.t_start for c in found] == sorted(c.t_start for c in found)  # time order, never by size
    assert "distracted from 20:0" in found[0].describe()


def test_a_student_is_compared_with_themselves_not_with_the_class():
    n = 900
    usual_high = np.full(n, 0.6)  # always looks "distracted" by the model: that is their usual, not a moment
    quiet = np.full(n, 0.05)
    quiet[300:420] = 0.3  # two minutes clearly above their own usual (0.05 + 0.25)
    small = np.full(n, 0.05)
    small[300:420] = 0.2  # within the margin: not flagged
    got = ck.checkins(_flat(n, {1: usual_high, 2: quiet, 3: small}))
    assert [(c.person_id, c.t_start, c.t_end) for c in got] == [(2, 300.0, 420.0)]
    assert got[0].usual == pytest.approx(0.05) and got[0].level == pytest.approx(0.3)


def test_a_run_must_last_the_rule_length():
    n = 900
    short, long_ = np.full(n, 0.05), np.full(n, 0.05)
    short[300:340] = 0.9  # 40 s: a glance out of the window
    long_[300:370] = 0.9  # 70 s
    got = ck.checkins(_flat(n, {1: short, 2: long_}))
    assert [c.person_id for c in got] == [2]
    assert got[0].duration >= 60


def test_unreadable_and_unseen_bins_never_count_as_distraction():
    n = 900
    d = np.full(n, 0.05)
    d[300:600] = 0.95  # five minutes the model would call distraction ...
    bins = _flat(n, {1: d.copy(), 2: d.copy(), 3: d.copy()})
    one = (bins["person_id"] == 1) & bins["t_start"].between(300, 599)
    bins.loc[one, "readable"] = 0.0  # ... but the gate could not read student 1's face then,
    two = (bins["person_id"] == 2) & bins["t_start"].between(300, 599)
    bins.loc[two, "face_visible"] = False  # student 2's face was not visible,
    bins = bins[~((bins["person_id"] == 3) & bins["t_start"].between(300, 599))]  # student 3 was not in frame
    assert ck.checkins(bins) == []
    v = ck.readable_values(bins[bins["person_id"] == 1], "distraction")
    assert np.isnan(v[300:600]).all() and np.isfinite(v[:300]).all()
    # half the window unreadable is not enough to call a run
    d2 = np.full(n, 0.05)
    d2[300:600] = 0.95
    b2 = _flat(n, {4: d2})
    gated = (b2["t_start"] % 2 == 0) & b2["t_start"].between(300, 599)  # every other bin unreadable: still 50% read
    b2.loc[gated, "readable"] = 0.0
    (c,) = ck.checkins(b2)
    assert c.level == pytest.approx(0.95)  # the level is over the readable bins only
    b2.loc[(b2["t_start"] % 3 != 0) & b2["t_start"].between(300, 599), "readable"] = 0.0  # only a third read
    assert ck.checkins(b2) == []


def test_too_little_readable_time_gives_no_baseline():
    n = 900
    d = np.full(n, 0.05)
    d[0:120] = 0.9
    bins = _flat(n, {1: d})
    bins.loc[bins["t_start"] >= 150, "readable"] = 0.0  # 150 readable seconds < 180
    assert ck.checkins(bins) == []


def test_fatigue_needs_two_minutes_and_renames_show():
    frames = planted_bins(6, 1200, (Event("fatigue", 600, 900, (2,), strength=3.0),
                                    Event("fatigue", 300, 360, (4,), strength=3.0)), seed=5)  # fmt: skip
    got = ck.checkins(with_person_columns(frames))
    assert [(c.person_id, c.state) for c in got] == [(3, "fatigue")]
    assert abs(got[0].t_start - 600) <= 30 and "tired" in got[0].describe()
    assert ck.relabel(got, {3: "Zoe"})[0].person_label == "Zoe"


def test_on_the_real_classroom_sample_unreadable_faces_are_never_a_check_in(db_url, settings, media_dir):
    """The real sample (four students, faces 10-20 px): the gate declines nearly every face-second. Repeated to
    ten minutes, with a low distraction written into the declined bins of the first two thirds and a high one
    into those of the last third (what a model without the gate would say: a run against a low usual level),
    nobody is flagged: only readable bins count."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline
    from storage.db import session_scope
    from storage.repo import export_frame
    from tests.test_pipeline_e2e import _analyse

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        rid, _ = _analyse(db_url, settings, p, media_dir / "classroom_4students_270p.mp4", fps=4.0)
    with session_scope(db_url) as s:
        df = export_frame(s, rid)
    assert df["person_id"].nunique() >= 3
    read = df["face_visible"].astype(bool) & (pd.to_numeric(df["readable"], errors="coerce") > 0)
    assert (~read[df["face_visible"].astype(bool)]).mean() >= 0.9  # the gate's verdict on this footage
    v = ck.readable_values(df, "distraction")
    assert np.isfinite(v).sum() == (read & df["distraction"].notna()).sum()
    span = float(df["t_start"].max()) + 1.0
    reps = int(np.ceil(600 / span))
    long = pd.concat([df.assign(t_start=df["t_start"] + k * span) for k in range(reps)], ignore_index=True)
    declined = pd.to_numeric(long["readable"], errors="coerce").le(0)  # the gate's verdict: visible, not read
    long.loc[declined, "distraction"] = np.where(long.loc[declined, "t_start"] < 400, 0.05, 0.95)
    assert ck.checkins(long.assign(readable=1.0), 1.0)  # read as if the gate had passed them: a run is found
    assert ck.checkins(long, 1.0) == []
