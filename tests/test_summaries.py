"""services.summaries on sessions whose truth is planted (tests/big_session.py) and on hand-made bins."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from services import summaries as sm
from tests.big_session import Event, class_events, planted_bins, with_person_columns


@pytest.fixture(scope="module")
def class_bins() -> pd.DataFrame:
    """A 30-minute, 12-student class with the standard planted events, one student hidden for 5 min."""
    frames = planted_bins(12, 1800, class_events(30, 12), seed=3, hidden={11: (360.0, 660.0)})
    return with_person_columns(frames)


def _tiny(values: dict[int, list[float | None]], step: float = 1.0) -> pd.DataFrame:
    """Hand-made bins: person -> engagement per bin (None = face not visible); academic = one-hot by value."""
    rows = []
    for pid, vals in values.items():
        for i, v in enumerate(vals):
            row = {"person_id": pid, "person_label": f"P{pid}", "t_start": i * step, "t_end": (i + 1) * step,
                   "face_visible": v is not None, "engagement": v}  # fmt: skip
            for c in sm.ACADEMIC:
                row[c] = None if v is None else 0.1
            if v is not None:  # low engagement bins read as distraction, high as enjoyment
                row["distraction" if v < 0.5 else "enjoyment"] = 0.6
            rows.append(row)
    return pd.DataFrame(rows)


def test_clock_round_trip_and_bad_text():
    assert sm.format_clock(0) == "00:00"
    assert sm.format_clock(75.4) == "01:15"
    assert sm.format_clock(3725) == "1:02:05"
    for text, secs in (("01:15", 75), ("1:02:05", 3725), ("90", 90), (" 2:30.5 ", 150.5)):
        assert sm.parse_clock(text) == pytest.approx(secs)
    for bad in ("1:75", "a:10", "", "1::2", "-5", "1:2:3:4"):
        with pytest.raises(ValueError, match="is not mm:ss"):
            sm.parse_clock(bad)


def test_summary_counts_minutes_and_ranks_lowest_engagement_first():
    bins = _tiny({
        1: [0.9] * 120,  # always engaged
        2: [0.2] * 60 + [0.9] * 60,  # distracted for a minute
        3: [None] * 90 + [0.8] * 30,  # hidden 1.5 min
    })  # fmt: skip
    s = sm.student_summary(bins, 1.0, duration=180.0)
    assert list(s.columns) == sm.SUMMARY_COLUMNS
    assert s["person_id"].tolist() == [2, 3, 1]  # 0.55 < 0.8 < 0.9
    assert s["rank"].tolist() == [1, 2, 3]
    by = s.set_index("person_id")
    assert by.loc[2, "mean_engagement"] == pytest.approx(0.55)
    assert by.loc[2, "minutes_distracted"] == pytest.approx(1.0)
    assert by.loc[1, "minutes_distracted"] == 0
    assert by.loc[3, "minutes_visible"] == pytest.approx(0.5)
    # duration 3 min: person 3 was not visible 2.5 min (1.5 hidden + 1 with no bins at all)
    assert by.loc[3, "minutes_not_visible"] == pytest.approx(2.5)
    assert by.loc[1, "minutes_not_visible"] == pytest.approx(1.0)


def test_summary_of_planted_class(class_bins):
    s = sm.student_summary(class_bins, 1.0)
    assert len(s) == 12
    assert s["mean_engagement"].is_monotonic_increasing
    hidden = s.set_index("person_id").loc[12]
    assert hidden["minutes_not_visible"] == pytest.approx(5.0)
    # students 1-4 had the 40 s (30 min / 90 min x 120 s) confusion rise: each of them was confused longer than anyone else
    conf = s.set_index("person_id")["minutes_confused"]
    assert conf.loc[[1, 2, 3, 4]].min() > conf.drop([1, 2, 3, 4]).max()
    # the fatigued half (7-12) ranks below the others on average
    fatigue = s.set_index("person_id")["minutes_fatigued"]
    assert fatigue.loc[list(range(7, 13))].min() > fatigue.loc[list(range(1, 7))].max()


def test_class_series_ignores_hidden_faces():
    bins = _tiny({1: [0.8, 0.8, None], 2: [0.4, None, None]})
    c = sm.class_series(bins)
    assert c["engagement"].tolist()[:2] == pytest.approx([0.6, 0.8])
    assert np.isnan(c["engagement"].iloc[2])
    assert c["n_visible"].tolist() == [2, 1, 0]


def test_class_series_weighs_in_faces_without_a_stored_timeline():
    bins = _tiny({1: [0.8, 0.8, None]})
    agg = pd.DataFrame({"t_start": [0.0, 2.0], "n_visible": [3, 1], "engagement": [0.4, 0.2],
                        **{c: [0.2, 0.2] for c in sm.ACADEMIC}})  # fmt: skip
    c = sm.class_series(bins, aggregates=agg)
    assert c["engagement"].tolist() == pytest.approx([(0.8 + 3 * 0.4) / 4, 0.8, 0.2])
    assert c["n_visible"].tolist() == [4, 1, 1]


def test_resample_bounds_points_keeps_gaps_and_refines_on_zoom():
    t = np.arange(5400.0)
    v = np.sin(t / 300.0)
    v[1000:1300] = np.nan  # a 5-minute gap
    series = pd.DataFrame({"t_start": t, "engagement": v})
    coarse = sm.resample(series, 0, 5400, 300)
    assert len(coarse) <= 300 and coarse["step"].iloc[0] == 18.0
    assert coarse["engagement"].iloc[60:71].isna().all()  # 1080-1278 s lie inside the gap
    assert coarse["engagement"].iloc[0] == pytest.approx(np.nanmean(v[:18]))
    fine = sm.resample(series, 1800, 1900, 300)  # zoomed in: back to one point per bin
    assert fine["step"].iloc[0] == 1.0 and len(fine) == 100
    assert fine["engagement"].to_numpy() == pytest.approx(v[1800:1900])
    low = sm.resample(series, 0, 5400, 10, how="min")
    assert low["engagement"].iloc[0] == pytest.approx(np.nanmin(v[:540]))
    with pytest.raises(ValueError):
        sm.resample(series, 10, 10, 5)


def test_roster_is_by_name_naturally_and_has_no_rank():
    bins = _tiny({10: [0.9] * 30, 2: [0.2] * 30, 1: [0.5] * 30})
    bins["person_label"] = bins["person_id"].map({10: "Student 10", 2: "student 2", 1: "Ada"})
    r = sm.roster(sm.student_summary(bins))
    assert r["person_label"].tolist() == ["Ada", "student 2", "Student 10"]  # digits as numbers, case-blind
    assert "rank" not in r.columns and list(r.columns) == sm.ROSTER_COLUMNS
    assert sm.roster(sm.student_summary(bins.iloc[::-1])).equals(r)  # stable whatever the input order
    assert sm.roster(sm.student_summary(bins.iloc[:0])).empty


def test_heatmap_shape_order_and_values(class_bins):
    h = sm.heatmap(class_bins, "engagement", max_columns=200)
    assert h.shape == (12, 200) and h.step == 9.0
    assert h.person_ids == list(range(1, 13))  # by name (Student 01..12), not by engagement
    assert h.person_ids != sm.student_summary(class_bins)["person_id"].tolist()
    row = h.person_ids.index(12)
    hidden_cols = (h.t_start >= 360) & (h.t_start + h.step <= 660)
    assert np.isnan(h.values[row, hidden_cols]).all()
    assert np.isfinite(h.values[row, ~((h.t_start >= 360) & (h.t_start < 660))]).all()
    p1 = class_bins[class_bins["person_id"] == 1]
    assert h.values[h.person_ids.index(1), 0] == pytest.approx(p1["engagement"].iloc[:9].mean())
    # zoomed into the dip (10:00-11:00), at bin resolution: distraction is high for the planted students
    z = sm.heatmap(class_bins, "distraction", t0=600, t1=660, max_columns=240, order=list(range(1, 13)))
    assert z.shape == (12, 60) and z.step == 1.0
    assert np.nanmean(z.values[:8]) > 0.5 > np.nanmean(z.values[8:])
    with pytest.raises(ValueError, match="heat map value"):
        sm.heatmap(class_bins, "happy")


def test_moments_find_the_planted_events_and_who(class_bins):
    found = sm.moments(class_bins, 1.0)
    kinds = {m.kind for m in found}
    assert {"dip", "distraction", "confusion", "fatigue"} <= kinds
    dip = max((m for m in found if m.kind == "dip"), key=lambda m: m.size)
    assert dip.t_start == pytest.approx(600, abs=20) and dip.t_end == pytest.approx(660, abs=20)
    assert set(dip.person_ids) == set(range(1, 9))  # the 8 planted students, nobody else
    conf = max((m for m in found if m.kind == "confusion"), key=lambda m: m.size)
    assert conf.t_start == pytest.approx(1000, abs=15) and set(conf.person_ids) == {1, 2, 3, 4}
    fat = max((m for m in found if m.kind == "fatigue"), key=lambda m: m.size)
    assert fat.t_start == pytest.approx(1600, abs=40) and fat.t_end == pytest.approx(1800, abs=10)
    assert set(fat.person_ids) == set(range(7, 13))
    assert [m.t_start for m in found] == sorted(m.t_start for m in found)
    assert dip.title.startswith(sm.format_clock(dip.t_start)) and dip.title.endswith("engagement dipped")
    assert dip.title[:2] in ("09", "10") and "Student 01" in dip.describe()


def test_no_moments_in_a_steady_class():
    frames = planted_bins(10, 1200, (), seed=5)
    assert sm.moments(with_person_columns(frames), 1.0) == []


def test_a_single_student_is_not_a_class_wide_moment():
    frames = planted_bins(20, 1200, (Event("distraction", 300, 400, (0,)),), seed=6)
    found = sm.moments(with_person_columns(frames), 1.0)
    assert not [m for m in found if m.kind in ("dip", "distraction")]


def test_trends_in_session_order():
    day = datetime(2026, 3, 2, 9, 0)
    keys, items = [], []
    for k, strength in enumerate((0.0, 1.5, 3.0)):  # distraction worsens session after session
        frames = planted_bins(6, 600, (Event("distraction", 0, 600, (0, 1, 2), strength),), seed=10 + k)
        key = sm.SessionKey(100 - k, f"Lesson {k + 1}", day + timedelta(days=7 * k))
        keys.append(key)
        items.append((key, with_person_columns(frames), 1.0))
    tr = sm.trends(list(reversed(items)))
    assert tr.per_class["title"].tolist() == ["Lesson 1", "Lesson 2", "Lesson 3"]
    assert tr.per_class["mean_engagement"].is_monotonic_decreasing
    p1 = tr.per_student[tr.per_student["person_id"] == 1]
    assert p1["minutes_distracted"].is_monotonic_increasing and p1["minutes_distracted"].iloc[-1] > 5
    p6 = tr.per_student[tr.per_student["person_id"] == 6]
    assert p6["minutes_distracted"].max() < 1
    assert tr.per_class["persons"].tolist() == [6, 6, 6]
    assert [k.id for k in tr.sessions] == [100, 99, 98]


def test_empty_inputs():
    empty = pd.DataFrame(columns=["person_id", "person_label", "t_start", "face_visible", "engagement", *sm.ACADEMIC])
    assert sm.student_summary(empty).empty
    assert sm.class_series(empty).empty
    assert sm.moments(empty) == []
    assert sm.heatmap(empty).shape == (0, 0)
