"""dashboard.charts: pure figure builders, gaps where no face was visible, model captions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import charts
from storage.repo import ACADEMIC_COLUMNS, EXPRESSION_COLUMNS, class_engagement
from tests.dashboard_factories import make_bins


@pytest.mark.parametrize(
    "provenance, expected",
    [
        ("cues@0123456789ab", "cues@0123456789ab: interpretable cue model, not a trained classifier"),
        ("clip-caer@aaaabbbbcccc", "clip-caer@aaaabbbbcccc: CLIP-CAER academic-emotion network"),
        ("fer2013-mini-xception@0f0f", "fer2013-mini-xception@0f0f: FER2013 mini-Xception expression network"),
        ("something-new@1234", "something-new@1234"),
        (None, "unknown model (not recorded)"),
    ],
)
def test_describe_model(provenance, expected):
    assert charts.describe_model(provenance) == expected


def test_model_caption_names_both_models():
    cap = charts.model_caption("cues@0123456789ab", "fer2013-mini-xception@ba9876543210")
    assert "cues@0123456789ab: interpretable cue model, not a trained classifier" in cap
    assert "fer2013-mini-xception@ba9876543210" in cap


def _bins(n=12, hidden=(3, 6), drop=()):
    df = make_bins(n, np.random.default_rng(1), hidden=hidden)
    return df.drop(index=list(drop)).reset_index(drop=True)


def test_on_grid_fills_missing_bins_and_blanks_hidden_faces():
    b = _bins(12, hidden=(3, 6), drop=(8, 9))  # bins 8, 9: the person was not in frame at all
    g = charts.on_grid(b, 1.0, ["engagement", "happy"])
    assert g["t_start"].tolist() == [float(i) for i in range(12)]
    vis = g["face_visible"].tolist()
    assert vis == [True] * 3 + [False] * 3 + [True] * 2 + [False] * 2 + [True] * 2
    assert g.loc[~g["face_visible"], ["engagement", "happy"]].isna().all().all()
    assert g.loc[g["face_visible"], "engagement"].notna().all()
    assert charts.hidden_ranges(g, 1.0) == [(3.0, 6.0), (8.0, 10.0)]


def test_on_grid_respects_the_bin_size_and_rejects_a_bad_one():
    b = _bins(6, hidden=None)
    b["t_start"] = b["t_start"] * 0.5 + 10.0
    g = charts.on_grid(b.drop(index=[2]), 0.5, ["engagement"])
    assert np.allclose(g["t_start"], 10.0 + 0.5 * np.arange(6))
    assert np.isnan(g["engagement"].iloc[2]) and not g["face_visible"].iloc[2]
    with pytest.raises(ValueError, match="positive"):
        charts.on_grid(b, 0.0, ["engagement"])


def test_hidden_range_running_to_the_end():
    g = pd.DataFrame({"t_start": [0.0, 1.0, 2.0], "face_visible": [True, False, False]})
    assert charts.hidden_ranges(g, 1.0) == [(1.0, 3.0)]


def test_engagement_figure_line_breaks_where_no_face_is_visible():
    persons = [make_bins(20, np.random.default_rng(k), hidden=(5, 9)).assign(person_id=k) for k in range(3)]
    ce = class_engagement(pd.concat(persons, ignore_index=True))
    fig = charts.engagement_figure(ce, 1.0)
    bars = [t for t in fig.data if t.type == "bar"]
    lines = [t for t in fig.data if t.type == "scatter"]
    assert len(bars) == 1 and len(lines) == 1
    y = np.array(lines[0].y, dtype=float)
    assert np.isnan(y[5:9]).all() and not np.isnan(y[:5]).any() and not np.isnan(y[9:]).any()
    assert lines[0].connectgaps is False
    assert list(bars[0].y[:5]) == [3] * 5 and list(bars[0].y[5:9]) == [0] * 4
    assert np.allclose(y[:5], ce["engagement"].iloc[:5])
    assert fig.layout.yaxis.range == (0, 1)
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == 5.0 and fig.layout.shapes[0].x1 == 9.0


def test_person_figure_has_every_class_and_gaps_in_all_of_them():
    b = _bins(15, hidden=(4, 7))
    fig = charts.person_figure(b, "Ada", 1.0)
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in bands] == list(ACADEMIC_COLUMNS)
    # Each band is one closed polygon per visible run (0-3 s, 7-14 s), None-separated: nothing spans the gap.
    for t in bands:
        xs = [v for v in t.x]
        assert xs.count(None) == 2
        pts = np.array([v for v in xs if v is not None], dtype=float)
        assert not ((pts > 4) & (pts < 7)).any()
        assert sorted(set(pts)) == [i + 0.5 for i in (*range(4), *range(7, 15))]
    top = np.array([v for v in bands[-1].y if v is not None], dtype=float)
    n_run0 = 4
    assert np.allclose(top[:n_run0], 1.0)  # the upper edge of the last band: probabilities stack to 1
    assert np.allclose(np.array(bands[0].y[n_run0:2 * n_run0], dtype=float), 0.0)  # first band starts at 0
    assert np.allclose(np.array(bands[1].customdata[:n_run0], dtype=float), b["enjoyment"].iloc[:4])
    lines = [t for t in fig.data if t.fill != "toself"]
    assert [t.name for t in lines] == ["engagement", *EXPRESSION_COLUMNS]
    for t in lines:
        y = np.array(t.y, dtype=float)
        assert np.isnan(y[4:7]).all(), t.name
        assert not np.isnan(y[:4]).any() and not np.isnan(y[7:]).any(), t.name
        assert t.connectgaps is False
    assert fig.layout.title.text == "Ada"
    assert len(fig.layout.shapes) == 2  # one grey band per panel


def test_a_single_visible_bin_is_still_drawn():
    b = _bins(6, hidden=(1, 6))
    fig = charts.person_figure(b, "Flicker", 1.0)
    xs = [v for v in fig.data[0].x if v is not None]
    assert np.allclose(sorted(set(xs)), [0.1, 0.9])


def test_visible_runs():
    g = pd.DataFrame({"face_visible": [False, True, True, False, True, False, False, True]})
    assert charts.visible_runs(g) == [(1, 3), (4, 5), (7, 8)]
    assert charts.visible_runs(g.iloc[:0]) == []


def test_personal_figure_greys_uncertain_and_draws_tags():
    b = make_bins(20, np.random.default_rng(3), hidden=(2, 4), personal=True)
    b.loc[10:12, "personal_label"] = "uncertain"
    b.loc[10:12, "personal_confidence"] = 0.2
    tags = pd.DataFrame({"t_start": [5.0], "t_end": [8.0], "label": ["meltdown"], "note": [""]})
    fig = charts.personal_figure(b, tags, "Child X", 1.0)
    markers = {t.name: t for t in fig.data if t.mode == "markers"}
    assert "uncertain" in markers and markers["uncertain"].marker.color == "#bdbdbd"
    assert list(markers)[-1] == "uncertain"  # listed last, after the real labels
    xs = np.concatenate([np.array(t.x, dtype=float) for t in markers.values()])
    assert not np.isin([2.5, 3.5], xs).any()  # no label where the face is hidden
    assert {10.5, 11.5, 12.5} <= set(np.array(markers["uncertain"].x, dtype=float))
    texts = [a.text for a in fig.layout.annotations]
    assert "meltdown" in texts
    tag_shapes = [s for s in fig.layout.shapes if s.x0 == 5.0 and s.x1 == 8.0]
    assert len(tag_shapes) == 1


def test_personal_figure_without_personal_model():
    b = make_bins(10, np.random.default_rng(4)).assign(personal_label=None, personal_confidence=np.nan)
    fig = charts.personal_figure(b, None, "Child", 1.0)
    assert [t.name for t in fig.data] == list(EXPRESSION_COLUMNS)


def test_not_readable_is_drawn_apart_from_not_visible():
    import numpy as np
    import pandas as pd

    from dashboard import charts
    from services import summaries as sm

    t = np.arange(10.0)
    eng = np.where((t >= 3) & (t < 7), np.nan, 0.6)
    eng[8:] = np.nan
    series = pd.DataFrame({"t_start": t, "step": 1.0, "engagement": eng, **{c: 0.2 for c in sm.ACADEMIC},
                           "not_readable": ((t >= 3) & (t < 7)).astype(float)})  # fmt: skip
    hidden, unread = charts.gate_spans(series)
    assert hidden == [(8.0, 10.0)] and unread == [(3.0, 7.0)]
    fig = charts.student_figure(series, "A", (0, 10), 10)
    fills = [sh.fillcolor for sh in fig.layout.shapes]
    assert fills.count(charts.NOT_READABLE_FILL) == 1 and fills.count(charts.GAP_COLOR) == 1
    assert any(a.text == charts.NOT_READABLE for a in fig.layout.annotations)
    heat = sm.Heatmap("confusion", [1], ["A"], t, 1.0, np.where(series["not_readable"] > 0, np.nan, 0.2)[None],
                      (series["not_readable"] > 0).to_numpy()[None])  # fmt: skip
    fig = charts.class_overview_figure(series.assign(n_visible=1), heat, (), (0, 10), 10, value_label="confusion")
    names = [tr.name for tr in fig.data if tr.type == "heatmap"]
    assert names == ["confusion", charts.NOT_READABLE]
    from affectline.model_cards import card_for

    card = card_for("fer2013-mini-xception@x")
    line = charts.accuracy_caption("fer2013-mini-xception@x")
    assert ("not measured" in line) if card is None else (f"macro-F1 {card.macro_f1:.2f}" in line and card.anchor in line)
    assert charts.NOT_READABLE in line


# --- issue 19: the clinician's child chart --------------------------------------------------------


def _child(tags: pd.DataFrame | None = None, n: int = 600):
    from services import summaries as sm

    bins = make_bins(n, np.random.default_rng(3), hidden=(100, 130), personal=True)
    value_cols = ["engagement", *ACADEMIC_COLUMNS, *EXPRESSION_COLUMNS, "personal_confidence"]
    frame = bins[["t_start", *value_cols]].copy()
    frame.loc[~bins["face_visible"].astype(bool), value_cols] = float("nan")
    series = sm.resample(frame, 0.0, float(n), 900, 1.0)
    return charts.child_figure(series, charts.label_runs(bins, 1.0), tags, "Child", (0.0, float(n)), float(n))


def _tagframe(rows):
    return pd.DataFrame(rows, columns=["t_start", "t_end", "label", "is_baseline"])


def test_child_chart_hover_never_formats_a_number_as_a_time():
    import re

    fig = _child(_tagframe([(10, 20, "anxiety", False), (30, 40, "calm", True)]))
    for tr in fig.data:
        tmpl = tr.hovertemplate or ""
        # a "|date format" works only on the date axis's x: on a bar's base or a number it prints NaN:NaN
        assert {m for m in re.findall(r"%\{(\w+)\|", tmpl)} <= {"x"}, tmpl
        cd = tr.customdata
        if cd is not None and len(cd) and isinstance(np.asarray(cd).ravel()[0], str):
            assert not any("nan" in str(v).lower() for v in np.asarray(cd).ravel())
    bars = [tr for tr in fig.data if tr.type == "bar"]
    assert bars and all("%{customdata}" in tr.hovertemplate for tr in bars)
    assert all(re.fullmatch(r"\d\d:\d\d-\d\d:\d\d", v) for tr in bars for v in tr.customdata)
    assert charts.sm_clock(float("nan")) == "?" and charts.sm_clock(3725) == "1:02:05"


def test_close_tags_names_do_not_overprint():
    tags = _tagframe([(100, 104, "anxiety", False), (102, 110, "self-soothing", False), (300, 310, "anxiety", False),
                      (103, 120, "calm", True)])  # fmt: skip
    notes = [a for a in _child(tags).layout.annotations if a.hovertext]
    by_text = {(a.text, a.x): a for a in notes}
    assert len(notes) == 4
    close = [a for a in notes if charts.ms(99) <= a.x <= charts.ms(104)]
    assert len({a.y for a in close}) == 3  # three names within 3 s: three rows of names
    far = next(a for a in notes if a.x == charts.ms(300))
    assert far.y == max(a.y for a in notes)  # alone: the top row again
    assert by_text[("baseline: calm", charts.ms(103))].hovertext == "baseline: calm 01:43-02:00"
    # lanes: no two names of a lane overlap at the estimated width
    starts, texts = [0, 1, 2, 60, 61], ["a long label", "b", "c", "d", "e"]
    lanes = charts.label_lanes(starts, texts, (0, 600))
    assert lanes[:3] == [0, 1, 2] and lanes[3] == 0 and lanes[4] == 1


def test_duplicate_tags_are_told_apart_in_the_picker():
    from services import tagging

    tags = pd.DataFrame({"uid": ["abcdef0011", "abcdef0022", "123456aaaa"], "label": ["fear", "fear", "fear"],
                         "t_start": [10.0, 10.0, 10.0], "t_end": [20.0, 20.0, 20.0], "author": ["c", "c", "c"]})  # fmt: skip
    texts = tagging.pick_texts(tags)
    assert len(set(texts.values())) == 3
    assert texts["123456aaaa"] == "fear 00:10-00:20 (c, #123456)"
    assert all("00:10-00:20" in t for t in texts.values())
